"""Authenticated mode (RFC 8762 section 4.4): the key and the HMAC of test packets.

HMAC-SHA-256 (RFC 2104) truncated to 16 octets, over the first six 16-octet
blocks (96 octets) of the authenticated packet, written into octets 96..111.
Both services use it from their user-space datapaths: SHA-256 in a TC program
would need the whole compression function unrolled (64 rounds per block, 8
blocks per HMAC with the key pads) inside the verifier's instruction budget and
with no loops over packet data, and the kernel's crypto API is not callable from
TC programs, so the HMAC is computed here and the receive timestamp is still
taken by the kernel (SO_TIMESTAMPNS, services/common/cmsg.py). docs/auth.md says more.

The key is the content of a file (never a command-line argument: those are
readable by everyone in /proc), one trailing newline removed, so both
`printf %s KEY > f` and `echo KEY > f` give the same key.
"""

import hashlib
import hmac
import os
import stat

from . import wire

# The counter of authenticated mode, beside a datapath's (both user-space datapaths count
# it; the reflector also exports it as a not-reflected reason).
STATS = ("auth_failed",)
MIN_KEY_LEN = 16    # RFC 4868 section 2.1.2 wants a key as long as the HMAC's output (32);
                    # below the truncated HMAC's length (16) we refuse outright.


class AuthKeyError(ValueError):
    """The key file cannot be used; the text is one line saying why and how to fix it."""


def load_key(path):
    """The key in `path`; AuthKeyError when it is missing, empty, too short or world-readable."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            key = f.read()
    except OSError as e:
        raise AuthKeyError(f"--auth-key-file {path}: cannot read the key: {e.strerror}") from None
    if st.st_mode & stat.S_IROTH:
        raise AuthKeyError(f"--auth-key-file {path}: readable by everyone (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); chmod o-r {path} (e.g. 0600, or "
                        "defaultMode 0400 on a Secret volume)")
    if key.endswith(b"\n"):
        key = key[:-1]
    if len(key) < MIN_KEY_LEN:
        raise AuthKeyError(f"--auth-key-file {path}: the key has {len(key)} octets, fewer than "
                        f"{MIN_KEY_LEN}; use e.g. head -c 32 /dev/urandom > {path}")
    return key


class Hmac:
    """Signs and checks authenticated test packets with one key."""

    def __init__(self, key):
        # The keyed inner/outer state is computed once; copy() per packet skips the key pads.
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def digest(self, packet):
        """The 16-octet HMAC of a packet's first 96 octets."""
        h = self._base.copy()
        h.update(memoryview(packet)[:wire.HMAC_OFFSET])
        return h.digest()[:wire.HMAC_LEN]

    def sign(self, packet):
        """Write the HMAC into a bytearray packet of at least 112 octets."""
        packet[wire.HMAC_OFFSET:wire.AUTH_LEN] = self.digest(packet)

    def verify(self, packet):
        """True when the packet has 112 octets or more and its HMAC is right."""
        if len(packet) < wire.AUTH_LEN:
            return False
        return hmac.compare_digest(self.digest(packet),
                                   bytes(packet[wire.HMAC_OFFSET:wire.AUTH_LEN]))
