"""Ring buffer records from the BPF programs, decoded in Python.

The Python twin of struct stamp_sender_event and struct stamp_reflector_event
in bpf/stamp.h (network byte order throughout); tests/test_wire_layout.py
checks both against the compiled header.
"""

import struct
from typing import NamedTuple

from . import addr

EVENT_TLV_LEN = 96         # STAMP_EVENT_TLV_LEN
# Addresses are 16 octets, either family (struct stamp_addr: IPv4 ones IPv4-mapped).
SENDER_EVENT = struct.Struct(f"!16s16sHHHBB II 44s {EVENT_TLV_LEN}s")
REFLECTOR_EVENT = struct.Struct("!16s16sHHHBx I II II II HH")

SENDER_EVENT_FIELDS = {
    "reflector_addr": (0, 16), "local_addr": (16, 16), "reflector_port": (32, 2),
    "local_port": (34, 2), "payload_len": (36, 2), "reply_ttl": (38, 1), "reply_tos": (39, 1),
    "t4": (40, 8), "pkt": (48, 44), "tlvs": (92, EVENT_TLV_LEN),
}
REFLECTOR_EVENT_FIELDS = {
    "sender_addr": (0, 16), "local_addr": (16, 16), "sender_port": (32, 2), "local_port": (34, 2),
    "payload_len": (36, 2), "sender_ttl": (38, 1), "pad": (39, 1), "seq": (40, 4),
    "t1": (44, 8), "t2": (52, 8), "t3": (60, 8), "sender_error_estimate": (68, 2),
    "error_estimate": (70, 2),
}


class SenderEvent(NamedTuple):
    """A reply taken by sender_ingress.c; `pkt` is its first 44 octets."""
    reflector: str
    local: str
    reflector_port: int
    local_port: int
    payload_len: int
    reply_ttl: int
    t4: tuple
    pkt: bytes
    tlvs: bytes = b""       # the octets after the 44-octet base (at most EVENT_TLV_LEN)
    reply_tos: int = 0      # DSCP and ECN of the reply as it arrived


class ReflectorEvent(NamedTuple):
    """A packet reflected by reflector_ingress.c/reflector_egress.c."""
    sender: str
    local: str
    sender_port: int
    local_port: int
    payload_len: int
    sender_ttl: int
    seq: int
    t1: tuple
    t2: tuple
    t3: tuple
    sender_error_estimate: int
    error_estimate: int


def sender_event(buf):
    (ra, la, rp, lp, plen, ttl, tos, s4, f4, pkt, tlvs) = SENDER_EVENT.unpack_from(buf)
    return SenderEvent(addr.unpack16(ra), addr.unpack16(la), rp, lp, plen, ttl,
                       (s4, f4), pkt, tlvs[:max(0, plen - 44)], tos)


def reflector_event(buf):
    (sa, la, sp, lp, plen, ttl, seq, s1, f1, s2, f2, s3, f3, see, ee) = \
        REFLECTOR_EVENT.unpack_from(buf)
    return ReflectorEvent(addr.unpack16(sa), addr.unpack16(la), sp, lp, plen, ttl, seq,
                          (s1, f1), (s2, f2), (s3, f3), see, ee)
