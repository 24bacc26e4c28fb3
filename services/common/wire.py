"""STAMP test packet formats (RFC 8762) and timestamp encodings, in Python.

The one Python definition of the wire format; bpf/stamp.h is the one C
definition, and tests/test_wire_layout.py checks that they agree.

Times inside stamp-bpf are integers: nanoseconds since the Unix epoch, UTC.
NTP timestamps (RFC 5905) count UTC seconds since 1900 and a 32-bit binary
fraction; truncated PTPv2 timestamps (RFC 8186) count TAI seconds since 1970
and nanoseconds, so converting them needs the TAI-UTC offset.
"""

import math
import struct
from typing import NamedTuple

BASE_LEN = 44               # unauthenticated base packet, both directions
AUTH_LEN = 112              # authenticated base packet, both directions (7 blocks of 16)
HMAC_OFFSET = 96            # the HMAC covers the first six blocks (RFC 8762 section 4.4)
HMAC_LEN = 16               # HMAC-SHA-256 truncated to 128 bits
TWAMP_LIGHT_MIN_LEN = 14    # sequence number, timestamp, error estimate
DEFAULT_PORT = 862          # RFC 8762 section 4.1

NTP_UNIX_OFFSET = 2208988800    # seconds from 1900-01-01 to 1970-01-01
NTP_ERA = 1 << 32
NSEC = 1_000_000_000

EE_S = 0x8000       # clock synchronised
EE_Z = 0x4000       # timestamp in PTP format

FORMAT_NTP = "ntp"
FORMAT_PTP = "ptp"

# RFC 8762 section 4.2.1, Figure 2.
SENDER = struct.Struct("!I II H 30x")
# RFC 8762 section 4.3.1, Figure 5.
REFLECTOR = struct.Struct("!I II H 2x II I II H 2x B 3x")

# RFC 8762 section 4.2.2, Figure 4 (the HMAC is written by services/common/auth.py).
SENDER_AUTH = struct.Struct("!I 12x II H 70x 16s")
# RFC 8762 section 4.3.2, Figure 6.
REFLECTOR_AUTH = struct.Struct("!I 12x II H 6x II 8x I 12x II H 6x B 15x 16s")

# Field offsets and sizes, for the C/Python layout check.
SENDER_FIELDS = {"seq": (0, 4), "ts": (4, 8), "error_estimate": (12, 2), "mbz": (14, 30)}
REFLECTOR_FIELDS = {
    "seq": (0, 4), "ts": (4, 8), "error_estimate": (12, 2), "mbz1": (14, 2),
    "rx_ts": (16, 8), "sender_seq": (24, 4), "sender_ts": (28, 8),
    "sender_error_estimate": (36, 2), "mbz2": (38, 2), "sender_ttl": (40, 1),
    "mbz3": (41, 3),
}

SENDER_AUTH_FIELDS = {"seq": (0, 4), "mbz1": (4, 12), "ts": (16, 8), "error_estimate": (24, 2),
                      "mbz2": (26, 70), "hmac": (96, 16)}
REFLECTOR_AUTH_FIELDS = {
    "seq": (0, 4), "mbz1": (4, 12), "ts": (16, 8), "error_estimate": (24, 2), "mbz2": (26, 6),
    "rx_ts": (32, 8), "mbz3": (40, 8), "sender_seq": (48, 4), "mbz4": (52, 12),
    "sender_ts": (64, 8), "sender_error_estimate": (72, 2), "mbz5": (74, 6),
    "sender_ttl": (80, 1), "mbz6": (81, 15), "hmac": (96, 16),
}


class ReflectorTestPacket(NamedTuple):
    """A decoded Session-Reflector test packet; timestamps as raw (sec, frac) words."""
    seq: int
    ts: tuple
    error_estimate: int
    rx_ts: tuple
    sender_seq: int
    sender_ts: tuple
    sender_error_estimate: int
    sender_ttl: int


def build_sender_packet(seq, ts=(0, 0), error_estimate=0, size=BASE_LEN):
    """A Session-Sender test packet of `size` octets (>= 44), zero padded."""
    if size < BASE_LEN:
        raise ValueError(f"a STAMP test packet has at least {BASE_LEN} octets, not {size}")
    return SENDER.pack(seq, ts[0], ts[1], error_estimate) + bytes(size - BASE_LEN)


def parse_sender_packet(buf):
    """(seq, (sec, frac), error_estimate) of a sender packet of >= 14 octets."""
    seq, sec, frac, ee = struct.unpack_from("!IIIH", buf)
    return seq, (sec, frac), ee


def build_reflector_packet(seq, ts, error_estimate, rx_ts, sender_seq, sender_ts,
                           sender_error_estimate, sender_ttl):
    """A Session-Reflector packet (used by user-space timestamping and tests)."""
    return REFLECTOR.pack(seq, ts[0], ts[1], error_estimate, rx_ts[0], rx_ts[1],
                          sender_seq, sender_ts[0], sender_ts[1],
                          sender_error_estimate, sender_ttl)


def parse_reflector_packet(buf):
    """Decode the first 44 octets of a reflected packet; ValueError if shorter."""
    if len(buf) < BASE_LEN:
        raise ValueError(f"reflected packet has {len(buf)} octets, fewer than {BASE_LEN}")
    (seq, s, f, ee, rs, rf, sseq, ss, sf, see, ttl) = REFLECTOR.unpack_from(buf)
    return ReflectorTestPacket(seq, (s, f), ee, (rs, rf), sseq, (ss, sf), see, ttl)


# --- authenticated mode (RFC 8762 sections 4.2.2, 4.3.2) ----------------------
# The packets below leave their HMAC zero: services/common/auth.py signs them.

def build_sender_auth_packet(seq, ts=(0, 0), error_estimate=0, size=AUTH_LEN):
    """An authenticated Session-Sender test packet of `size` octets (>= 112), unsigned."""
    if size < AUTH_LEN:
        raise ValueError(f"an authenticated STAMP test packet has at least {AUTH_LEN} octets, "
                         f"not {size}")
    return SENDER_AUTH.pack(seq, ts[0], ts[1], error_estimate, bytes(HMAC_LEN)) + \
        bytes(size - AUTH_LEN)


def parse_sender_auth_packet(buf):
    """(seq, (sec, frac), error_estimate) of an authenticated sender packet of >= 112 octets."""
    if len(buf) < AUTH_LEN:
        raise ValueError(f"authenticated packet has {len(buf)} octets, fewer than {AUTH_LEN}")
    seq, sec, frac, ee, _ = SENDER_AUTH.unpack_from(buf)
    return seq, (sec, frac), ee


def build_reflector_auth_packet(seq, ts, error_estimate, rx_ts, sender_seq, sender_ts,
                                sender_error_estimate, sender_ttl):
    """An authenticated Session-Reflector packet of 112 octets, unsigned."""
    return REFLECTOR_AUTH.pack(seq, ts[0], ts[1], error_estimate, rx_ts[0], rx_ts[1],
                               sender_seq, sender_ts[0], sender_ts[1],
                               sender_error_estimate, sender_ttl, bytes(HMAC_LEN))


def parse_reflector_auth_packet(buf):
    """Decode the first 112 octets of an authenticated reflected packet."""
    if len(buf) < AUTH_LEN:
        raise ValueError(f"authenticated packet has {len(buf)} octets, fewer than {AUTH_LEN}")
    (seq, s, f, ee, rs, rf, sseq, ss, sf, see, ttl, _) = REFLECTOR_AUTH.unpack_from(buf)
    return ReflectorTestPacket(seq, (s, f), ee, (rs, rf), sseq, (ss, sf), see, ttl)


def reflector_auth_to_base(buf):
    """The 44-octet unauthenticated layout of an authenticated reflected packet's fields,
    so the sender's reply handling (which reads that layout) is the same in both modes."""
    r = parse_reflector_auth_packet(buf)
    return build_reflector_packet(r.seq, r.ts, r.error_estimate, r.rx_ts, r.sender_seq,
                                  r.sender_ts, r.sender_error_estimate, r.sender_ttl)


def is_auth_reflection(buf):
    """Does an authenticated packet have the Session-Reflector format? A sender's has
    zeros where the reflector puts its Receive Timestamp (32..39) and the TTL (80)."""
    return len(buf) >= AUTH_LEN and any(buf[32:40]) and buf[80] != 0


def is_reflection(buf):
    """Does a packet have the Session-Reflector format? (stamp_is_reflection in stamp.h)

    A Receive Timestamp, a non-zero Session-Sender TTL and zero MBZ octets
    38-39 and 41-43; a sender's packet has zeros in 16..43.
    """
    return (len(buf) >= BASE_LEN and any(buf[16:24]) and buf[40] != 0
            and not any(buf[38:40]) and not any(buf[41:44]))


# --- timestamps -------------------------------------------------------------

def ntp_to_ns(sec, frac):
    """NTP (seconds since 1900, 32-bit fraction) to Unix ns, UTC.

    Era-aware (RFC 5905 section 6): 32-bit seconds below 2^31 are taken to be
    in era 1, which starts in 2036.
    """
    unix = sec - NTP_UNIX_OFFSET + (NTP_ERA if sec < (1 << 31) else 0)
    return unix * NSEC + ((frac * NSEC + (1 << 31)) >> 32)


def ns_to_ntp(ns):
    """Unix ns, UTC, to NTP (sec, frac); the fraction truncates like bpf/stamp.h."""
    sec, sub = divmod(ns, NSEC)
    return (sec + NTP_UNIX_OFFSET) % NTP_ERA, (sub << 32) // NSEC


def ptp_to_ns(sec, nsec, tai_offset_s):
    """Truncated PTPv2 (TAI seconds since 1970, ns) to Unix ns, UTC."""
    return (sec - tai_offset_s) * NSEC + nsec


def ns_to_ptp(ns, tai_offset_s):
    """Unix ns, UTC, to truncated PTPv2 (sec, nsec) in TAI."""
    sec, sub = divmod(ns + tai_offset_s * NSEC, NSEC)
    return sec % NTP_ERA, sub


def ts_to_ns(ts, error_estimate, tai_offset_s):
    """Decode a timestamp in the format its Error Estimate's Z bit names."""
    if error_estimate & EE_Z:
        return ptp_to_ns(ts[0], ts[1], tai_offset_s)
    return ntp_to_ns(ts[0], ts[1])


def encode_ts(ns, ptp, tai_offset_s):
    """Unix ns, UTC, to a timestamp (sec, frac-or-nsec) in PTP or NTP format."""
    return ns_to_ptp(ns, tai_offset_s) if ptp else ns_to_ntp(ns)


def ts_is_zero(ts):
    return ts[0] == 0 and ts[1] == 0


# --- error estimate (RFC 4656 section 4.1.2, RFC 8186 section 2.3) ------------

def encode_error_estimate(error_s, synchronized, ptp):
    """The 16-bit Error Estimate for an error of `error_s` seconds.

    The error is Multiplier * 2^(Scale - 32) s. The smallest Scale whose
    Multiplier fits in 8 bits is used, rounding up so the estimate is never
    smaller than the error; Multiplier is never 0 (RFC 4656 forbids it).
    """
    units = max(error_s, 0.0) * (1 << 32)     # in 2^-32 s
    scale = 0
    while scale < 63 and units > 255 * (1 << scale):
        scale += 1
    mult = math.ceil(units / (1 << scale))
    mult = min(max(mult, 1), 255)
    return (EE_S if synchronized else 0) | (EE_Z if ptp else 0) | (scale << 8) | mult


def decode_error_estimate(ee):
    """(synchronized, ptp, error in seconds) from a 16-bit Error Estimate."""
    scale = (ee >> 8) & 0x3F
    mult = ee & 0xFF
    return bool(ee & EE_S), bool(ee & EE_Z), mult * 2.0 ** (scale - 32)
