"""The record stream from the sender and reflector to the exporter (format 3).

A message is an 8-byte header followed by `count` fixed-size records of one kind,
all little-endian (struct "<"). docs/records.md describes every field, its unit
and its byte order; change both together and bump VERSION on any layout change.

    encode(records) -> bytes      all records of one kind, at most MAX_COUNT
    decode(buf) -> list           raises RecordError(reason) on a malformed message
    decode_raw(buf)               (kind class, plain tuples in wire form), for speed
"""

import struct
from typing import NamedTuple

from . import addr

MAGIC = b"SB"
VERSION = 3
MAX_COUNT = 0xFFFF
# What older formats were, for the one line that says why a message is refused.
OLD_VERSIONS = {1: "IPv4 addresses only, ServiceStats without its last three fields",
                2: "IPv4 addresses only (4 octets)"}

HEADER = struct.Struct("<2sBBHH")  # magic, version, kind, count, reserved (0)

OUTCOME_RECEIVED, OUTCOME_LOST, OUTCOME_LATE, OUTCOME_DUPLICATE = 0, 1, 2, 3
OUTCOMES = ("received", "lost", "late", "duplicate")
TS_BPF, TS_USER = 0, 1
TIMESTAMPING = ("bpf", "user")
ROLE_SENDER, ROLE_REFLECTOR = 1, 2
ROLES = {ROLE_SENDER: "sender", ROLE_REFLECTOR: "reflector"}


class RecordError(ValueError):
    """A message that cannot be decoded; `reason` names the kind of problem."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SenderPacket(NamedTuple):
    """One test packet as the sender saw it, with the session's running counters."""
    reflector: str
    reflector_port: int
    sender: str
    sender_port: int
    outcome: int          # OUTCOME_*
    reordered: bool       # arrived after a packet with a higher sequence number
    timestamping: int     # TS_*
    sender_ttl: int       # IP TTL the reflector received (RFC 8762 4.3)
    seq: int              # sender sequence number
    reflector_seq: int
    t1_ns: int            # ns since the Unix epoch (UTC), signed; 0 = unknown
    t2_ns: int
    t3_ns: int
    t4_ns: int
    sender_ee: int        # raw 16-bit Error Estimate fields (RFC 4656 4.1.2)
    reflector_ee: int
    sent: int             # the session's cumulative counters at this record
    received: int
    lost: int
    late: int
    duplicates: int
    reordered_total: int


class ReflectorPacket(NamedTuple):
    """One packet the reflector reflected."""
    sender: str
    sender_port: int
    reflector: str
    reflector_port: int
    timestamping: int
    ttl: int              # IP TTL of the received test packet
    seq: int
    t1_ns: int            # the sender's timestamp, ns since the Unix epoch (UTC)
    t2_ns: int
    t3_ns: int
    reflected: int        # cumulative packets reflected for this sender session


class SessionStats(NamedTuple):
    """A sender session's cumulative counters, sent periodically and at its end."""
    reflector: str
    reflector_port: int
    sender: str
    sender_port: int
    sent: int
    received: int
    lost: int
    late: int
    duplicates: int
    reordered_total: int
    ended: bool


class ServiceStats(NamedTuple):
    """A service's health, sent every few seconds; counts are cumulative."""
    role: int             # ROLE_*
    timestamping: int
    clock_synchronized: bool
    clock_error_ns: int   # kernel's estimated clock error (adjtimex), ns; -1 = unknown
    dropped_queue: int    # records the ZeroMQ queue refused
    dropped_ringbuf: int  # records the BPF ring buffer lost
    records_sent: int     # records handed to ZeroMQ
    pid: int
    ptp_format: bool = False      # its timestamps are PTP (--timestamp-format ptp)
    tai_offset_s: int = 0         # the TAI-UTC offset it converts with (adjtimex)
    dropped_sessions: int = 0     # records not sent: its session table was full (cumulative)


class SupervisorStats(NamedTuple):
    """One supervised service as the bare-metal supervisor sees it."""
    service: str          # at most 16 bytes of UTF-8
    up: bool
    restarts: int
    pid: int


# Why a reflector did not reflect a test packet (bpf/stamp.h enum stamp_stat has
# a STAT_<REASON> for each), exported as stamp_reflector_packets_not_reflected_total{reason}.
DROP_REASONS = ("not_allowed", "rate_limited", "bad_checksum", "malformed", "too_short",
                "loop_guard", "bad_source")


class DropCount(NamedTuple):
    """Test packets a service did not answer for one reason; cumulative, sent with
    its ServiceStats; `reason` is one of DROP_REASONS."""
    role: int             # ROLE_*
    pid: int
    reason: str           # at most 16 bytes of UTF-8, snake_case
    count: int


# kind number: (class, struct layout, indexes of address fields, of bool fields, of str fields)
# Addresses are 16 octets of either family (services/common/addr.py: IPv4 as ::ffff:a.b.c.d).
_LAYOUTS = {
    1: (SenderPacket, "<16sH16sHBBBBIIqqqqHHQQQQQQ", (0, 2), (5,), ()),
    2: (ReflectorPacket, "<16sH16sHBBIqqqQ", (0, 2), (), ()),
    3: (SessionStats, "<16sH16sHQQQQQQB", (0, 2), (10,), ()),
    4: (ServiceStats, "<BBBqQQQIBiQ", (), (2, 8), ()),
    5: (SupervisorStats, "<16sBQI", (), (1,), (0,)),
    6: (DropCount, "<BI16sQ", (), (), (2,)),
}

KIND_SENDER_PACKET, KIND_REFLECTOR_PACKET, KIND_SESSION_STATS = 1, 2, 3
KIND_SERVICE_STATS, KIND_SUPERVISOR_STATS, KIND_DROP_COUNT = 4, 5, 6


class _Kind:
    """Packing and unpacking of one record kind."""

    def __init__(self, number, cls, fmt, ips, bools, strs):
        self.number, self.cls = number, cls
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.ips, self.bools, self.strs = ips, bools, strs
        self.plain = not (ips or bools or strs)

    def pack_into(self, buf, offset, rec):
        vals = list(rec)
        for i in self.ips:
            vals[i] = addr.pack16(vals[i])
        for i in self.strs:
            vals[i] = vals[i].encode()[:16]
        self.struct.pack_into(buf, offset, *vals)

    def unpack(self, body):
        make = self.cls._make
        if self.plain:
            return [make(t) for t in self.struct.iter_unpack(body)]
        ips, bools, strs = self.ips, self.bools, self.strs
        out = []
        for t in self.struct.iter_unpack(body):
            vals = list(t)
            for i in ips:
                vals[i] = addr.unpack16(vals[i])
            for i in bools:
                vals[i] = vals[i] != 0
            for i in strs:
                vals[i] = vals[i].rstrip(b"\0").decode("utf-8", "replace")
            out.append(make(vals))
        return out


KINDS = {n: _Kind(n, *layout) for n, layout in _LAYOUTS.items()}
_BY_CLASS = {k.cls: k for k in KINDS.values()}


def encode(records):
    """Pack records, all of one kind, into one message. Raises ValueError on bad input."""
    if not records:
        raise ValueError("encode needs at least one record")
    if len(records) > MAX_COUNT:
        raise ValueError(f"at most {MAX_COUNT} records per message, got {len(records)}")
    kind = _BY_CLASS.get(type(records[0]))
    if kind is None:
        raise ValueError(f"not a record kind: {type(records[0]).__name__}")
    buf = bytearray(HEADER.size + kind.size * len(records))
    HEADER.pack_into(buf, 0, MAGIC, VERSION, kind.number, len(records), 0)
    offset = HEADER.size
    for rec in records:
        if type(rec) is not kind.cls:
            raise ValueError(f"mixed kinds in one message: {type(rec).__name__} "
                             f"after {kind.cls.__name__}")
        try:
            kind.pack_into(buf, offset, rec)
        except (struct.error, OSError, TypeError, AttributeError) as e:
            raise ValueError(f"cannot pack {rec!r}: {e}") from None
        offset += kind.size
    return bytes(buf)


def decode_header(buf):
    """Check a message's header and length; return (kind, count) or raise RecordError."""
    if len(buf) < HEADER.size:
        raise RecordError("bad_length", f"{len(buf)} bytes is shorter than the header")
    magic, version, number, count, _ = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise RecordError("bad_magic", repr(magic))
    if version != VERSION:
        if version in OLD_VERSIONS:
            raise RecordError("unknown_version", f"format {version} ({OLD_VERSIONS[version]}) "
                              f"from an older stamp-bpf; this exporter reads format {VERSION}: "
                              "run the same stamp-bpf version on both ends")
        raise RecordError("unknown_version", f"format {version}; this exporter reads "
                                             f"format {VERSION}")
    kind = KINDS.get(number)
    if kind is None:
        raise RecordError("unknown_kind", str(number))
    if len(buf) != HEADER.size + count * kind.size:
        raise RecordError("bad_length", f"{len(buf)} bytes for {count} records of kind "
                                        f"{number} ({kind.size} bytes each)")
    if count == 0:
        raise RecordError("empty", "a message with no records")
    return kind, count


def decode(buf):
    """Unpack one message into a list of records (NamedTuples of one kind)."""
    kind, _ = decode_header(buf)
    return kind.unpack(memoryview(buf)[HEADER.size:])


def decode_raw(buf):
    """(record class, iterator of plain tuples) of one message, without conversions.

    The tuples have the NamedTuple's field order, but addresses are 16 bytes,
    bools are ints and strings NUL-padded bytes. Raises RecordError like decode.
    """
    kind, _ = decode_header(buf)
    return kind.cls, kind.struct.iter_unpack(memoryview(buf)[HEADER.size:])
