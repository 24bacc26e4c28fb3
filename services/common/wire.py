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

# RFC 8762 section 4.2.1, Figure 2, with RFC 8972's SSID (section 3, Figure 1).
SENDER = struct.Struct("!I II H H 28x")
# RFC 8762 section 4.3.1, Figure 5, with the SSID (RFC 8972 Figure 2).
REFLECTOR = struct.Struct("!I II H H II I II H 2x B 3x")

# RFC 8762 section 4.2.2, Figure 4, with the SSID (RFC 8972 Figure 3); the HMAC
# is written by services/common/auth.py.
SENDER_AUTH = struct.Struct("!I 12x II H H 68x 16s")
# RFC 8762 section 4.3.2, Figure 6, with the SSID (RFC 8972 Figure 4).
REFLECTOR_AUTH = struct.Struct("!I 12x II H H 4x II 8x I 12x II H 6x B 15x 16s")

# Field offsets and sizes, for the C/Python layout check.
SENDER_FIELDS = {"seq": (0, 4), "ts": (4, 8), "error_estimate": (12, 2), "ssid": (14, 2),
                 "mbz": (16, 28)}
REFLECTOR_FIELDS = {
    "seq": (0, 4), "ts": (4, 8), "error_estimate": (12, 2), "ssid": (14, 2),
    "rx_ts": (16, 8), "sender_seq": (24, 4), "sender_ts": (28, 8),
    "sender_error_estimate": (36, 2), "mbz2": (38, 2), "sender_ttl": (40, 1),
    "mbz3": (41, 3),
}

SENDER_AUTH_FIELDS = {"seq": (0, 4), "mbz1": (4, 12), "ts": (16, 8), "error_estimate": (24, 2),
                      "ssid": (26, 2), "mbz2": (28, 68), "hmac": (96, 16)}
REFLECTOR_AUTH_FIELDS = {
    "seq": (0, 4), "mbz1": (4, 12), "ts": (16, 8), "error_estimate": (24, 2), "ssid": (26, 2),
    "mbz2": (28, 4),
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
    ssid: int = 0


def build_sender_packet(seq, ts=(0, 0), error_estimate=0, size=BASE_LEN, ssid=0, tlvs=b""):
    """A Session-Sender test packet: the base with `ssid`, then `tlvs`, zero padded to `size`."""
    if size < BASE_LEN:
        raise ValueError(f"a STAMP test packet has at least {BASE_LEN} octets, not {size}")
    body = SENDER.pack(seq, ts[0], ts[1], error_estimate, ssid) + tlvs
    return body + bytes(max(0, size - len(body)))


def parse_sender_packet(buf):
    """(seq, (sec, frac), error_estimate) of a sender packet of >= 14 octets."""
    seq, sec, frac, ee = struct.unpack_from("!IIIH", buf)
    return seq, (sec, frac), ee


def build_reflector_packet(seq, ts, error_estimate, rx_ts, sender_seq, sender_ts,
                           sender_error_estimate, sender_ttl, ssid=0):
    """A Session-Reflector packet (used by user-space timestamping and tests)."""
    return REFLECTOR.pack(seq, ts[0], ts[1], error_estimate, ssid, rx_ts[0], rx_ts[1],
                          sender_seq, sender_ts[0], sender_ts[1],
                          sender_error_estimate, sender_ttl)


def parse_reflector_packet(buf):
    """Decode the first 44 octets of a reflected packet; ValueError if shorter."""
    if len(buf) < BASE_LEN:
        raise ValueError(f"reflected packet has {len(buf)} octets, fewer than {BASE_LEN}")
    (seq, s, f, ee, ssid, rs, rf, sseq, ss, sf, see, ttl) = REFLECTOR.unpack_from(buf)
    return ReflectorTestPacket(seq, (s, f), ee, (rs, rf), sseq, (ss, sf), see, ttl, ssid)


# --- authenticated mode (RFC 8762 sections 4.2.2, 4.3.2) ----------------------
# The packets below leave their HMAC zero: services/common/auth.py signs them.

def build_sender_auth_packet(seq, ts=(0, 0), error_estimate=0, size=AUTH_LEN, ssid=0):
    """An authenticated Session-Sender test packet of `size` octets (>= 112), unsigned."""
    if size < AUTH_LEN:
        raise ValueError(f"an authenticated STAMP test packet has at least {AUTH_LEN} octets, "
                         f"not {size}")
    return SENDER_AUTH.pack(seq, ts[0], ts[1], error_estimate, ssid, bytes(HMAC_LEN)) + \
        bytes(size - AUTH_LEN)


def parse_sender_auth_packet(buf):
    """(seq, (sec, frac), error_estimate) of an authenticated sender packet of >= 112 octets."""
    if len(buf) < AUTH_LEN:
        raise ValueError(f"authenticated packet has {len(buf)} octets, fewer than {AUTH_LEN}")
    seq, sec, frac, ee, _ssid, _ = SENDER_AUTH.unpack_from(buf)
    return seq, (sec, frac), ee


def sender_auth_ssid(buf):
    """The SSID of an authenticated sender packet of >= 112 octets (RFC 8972 Figure 3)."""
    return struct.unpack_from("!H", buf, SENDER_AUTH_FIELDS["ssid"][0])[0]


def build_reflector_auth_packet(seq, ts, error_estimate, rx_ts, sender_seq, sender_ts,
                                sender_error_estimate, sender_ttl, ssid=0):
    """An authenticated Session-Reflector packet of 112 octets, unsigned."""
    return REFLECTOR_AUTH.pack(seq, ts[0], ts[1], error_estimate, ssid, rx_ts[0], rx_ts[1],
                               sender_seq, sender_ts[0], sender_ts[1],
                               sender_error_estimate, sender_ttl, bytes(HMAC_LEN))


def parse_reflector_auth_packet(buf):
    """Decode the first 112 octets of an authenticated reflected packet."""
    if len(buf) < AUTH_LEN:
        raise ValueError(f"authenticated packet has {len(buf)} octets, fewer than {AUTH_LEN}")
    (seq, s, f, ee, ssid, rs, rf, sseq, ss, sf, see, ttl, _) = REFLECTOR_AUTH.unpack_from(buf)
    return ReflectorTestPacket(seq, (s, f), ee, (rs, rf), sseq, (ss, sf), see, ttl, ssid)


def reflector_auth_to_base(buf):
    """The 44-octet unauthenticated layout of an authenticated reflected packet's fields,
    so the sender's reply handling (which reads that layout) is the same in both modes."""
    r = parse_reflector_auth_packet(buf)
    return build_reflector_packet(r.seq, r.ts, r.error_estimate, r.rx_ts, r.sender_seq,
                                  r.sender_ts, r.sender_error_estimate, r.sender_ttl, r.ssid)


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


# --- TLVs (RFC 8972 section 4; bpf/tlv.h is the C twin) ----------------------

TLV = struct.Struct("!BBH")             # Figure 5: Flags, Type, Length of the Value
TLV_FIELDS = {"flags": (0, 1), "type": (1, 1), "len": (2, 2)}
TLV_U, TLV_M, TLV_I = 0x80, 0x40, 0x20  # Figure 6: bit 0 is the most significant

# Table 2
TLV_EXTRA_PADDING = 1
TLV_LOCATION = 2
TLV_TIMESTAMP_INFO = 3
TLV_CLASS_OF_SERVICE = 4
TLV_DIRECT_MEASUREMENT = 5
TLV_HMAC = 8
# Table 5: Location sub-TLVs (a sender asks with 1, 4, 7; a reflector answers 2, and
# 5, 8 over IPv4 or 6, 9 over IPv6)
LOC_SRC_MAC, LOC_SRC_EUI48 = 1, 2
LOC_DST_IP, LOC_DST_IPV4, LOC_DST_IPV6 = 4, 5, 6
LOC_SRC_IP, LOC_SRC_IPV4, LOC_SRC_IPV6 = 7, 8, 9
LOC_MAC_LEN, LOC_IP_LEN = 8, 16
# Table 7 and Table 9
SYNC_SRC_NTP, SYNC_SRC_PTP, SYNC_SRC_FREE_RUNNING = 1, 2, 5
TS_METHOD_HW_ASSIST, TS_METHOD_SW_LOCAL, TS_METHOD_CONTROL_PLANE = 1, 2, 3

# The reflector answers this many TLVs, and this many sub-TLVs of a Location
# TLV; those past them come back as they were sent (bpf/tlv.h says why).
TLV_WALK_MAX = 16
LOC_SUB_MAX = 4
COS_LEN = 4

LOCATION = struct.Struct("!HH")         # Section 4.2: Destination Port, Source Port
LOCATION_FIELDS = {"dst_port": (0, 2), "src_port": (2, 2)}
TIMESTAMP_INFO = struct.Struct("!BBBB")  # Figure 11
TIMESTAMP_INFO_FIELDS = {"sync_src_in": (0, 1), "ts_in": (1, 1), "sync_src_out": (2, 1),
                         "ts_out": (3, 1)}
COS = struct.Struct("!HH")              # Figure 12: DSCP1 DSCP2 ECN RP, Reserved
COS_FIELDS = {"bits": (0, 2), "reserved": (2, 2)}
DIRECT = struct.Struct("!III")          # Figure 13: S_TxC, R_RxC, R_TxC
DIRECT_FIELDS = {"sender_tx": (0, 4), "reflector_rx": (4, 4), "reflector_tx": (8, 4)}


class Tlv(NamedTuple):
    """One TLV as found in a packet: its payload offset, header and Value."""
    offset: int
    flags: int
    type: int
    value: bytes


def build_tlv(tlv_type, value=b"", flags=TLV_U):
    """A TLV as a Session-Sender sends it (U=1, M=0, I=0: section 4)."""
    return TLV.pack(flags, tlv_type, len(value)) + value


def build_cos(dscp1):
    """A Class of Service Value asking the reply to be sent with DSCP `dscp1`."""
    return COS.pack((dscp1 & 0x3F) << 10, 0)


def parse_cos(value):
    """(dscp1, dscp2, ecn, rp) of a Class of Service Value."""
    bits, _ = COS.unpack_from(value)
    return bits >> 10, (bits >> 4) & 0x3F, (bits >> 2) & 0x3, bits & 0x3


def parse_tlvs(buf, start=BASE_LEN):
    """The TLVs of a STAMP packet from `start`, in order; stops at one that does not fit."""
    out, off = [], start
    while off + TLV.size <= len(buf):
        flags, tlv_type, length = TLV.unpack_from(buf, off)
        end = off + TLV.size + length
        if end > len(buf):
            out.append(Tlv(off, flags, tlv_type, bytes(buf[off + TLV.size:])))
            break
        out.append(Tlv(off, flags, tlv_type, bytes(buf[off + TLV.size:end])))
        off = end
    return out


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
