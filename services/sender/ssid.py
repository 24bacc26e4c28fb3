"""RFC 8972 section 3 at the sender: each session's SSID, and the check of every reply.

Each session sends a non-zero STAMP Session Identifier, unique among this
sender's sessions (`--ssid N` fixes it when there is one reflector). A reply
must carry it back: one with another SSID is not counted (logged once per
session); one with SSID 0 comes from an RFC 8762-only reflector, which zeroes
the field, and is accepted (noted once, `ssid_echoed: false`).
"""

import random

SSID_MIN, SSID_MAX = 1, 0xFFFF


class SsidAllocator:
    """Hands out SSIDs unique among the live sessions."""

    def __init__(self, fixed=None, rng=None):
        self.fixed = fixed
        self._rng = rng or random.SystemRandom()
        self._used = set()

    def take(self):
        if self.fixed is not None:
            if self.fixed in self._used:
                raise ValueError(f"SSID {self.fixed} is already in use: --ssid fixes it for "
                                 "one reflector only")
            ssid = self.fixed
        else:
            if len(self._used) >= SSID_MAX:
                raise ValueError("all 65,535 SSIDs are in use")
            # A random start (RFC 8972 points to the algorithms of [NUM-IDS-GEN]
            # 7.1), then the next free one.
            ssid = self._rng.randint(SSID_MIN, SSID_MAX)
            while ssid in self._used:
                ssid = ssid % SSID_MAX + 1
        self._used.add(ssid)
        return ssid

    def release(self, ssid):
        self._used.discard(ssid)


class SsidCheck:
    """What the replies of one session say about its SSID."""

    def __init__(self, ssid):
        self.ssid = ssid
        self.echoed = None          # None: no reply yet; True: echoed; False: zeroed
        self.mismatched = 0         # replies with another non-zero SSID, not counted

    def accept(self, reply_ssid):
        """(counted, note): note is "zeroed" or "mismatch" the first time either is seen."""
        if reply_ssid == self.ssid:
            if self.echoed is None:
                self.echoed = True
            return True, None
        if reply_ssid == 0:
            first = self.echoed is not False
            self.echoed = False
            return True, "zeroed" if first else None
        self.mismatched += 1
        return False, "mismatch" if self.mismatched == 1 else None

    def summary(self):
        out = {"ssid": self.ssid, "ssid_echoed": self.echoed}
        if self.mismatched:
            out["ssid_mismatched"] = self.mismatched
        return out
