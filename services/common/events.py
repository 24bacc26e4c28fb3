"""Ring buffer records from the BPF programs, decoded in Python.

The Python twin of struct stamp_sender_event and struct stamp_reflector_event
in bpf/stamp.h (network byte order throughout); tests/test_wire_layout.py
checks both against the compiled header.
"""

import socket
import struct
from typing import NamedTuple

EVENT_TLV_LEN = 96         # STAMP_EVENT_TLV_LEN
SENDER_EVENT = struct.Struct(f"!4s4sHHHBB II 44s {EVENT_TLV_LEN}s")
REFLECTOR_EVENT = struct.Struct("!4s4sHHHBx I II II II HH")

SENDER_EVENT_FIELDS = {
    "reflector_addr": (0, 4), "local_addr": (4, 4), "reflector_port": (8, 2),
    "local_port": (10, 2), "payload_len": (12, 2), "reply_ttl": (14, 1), "reply_tos": (15, 1),
    "t4": (16, 8), "pkt": (24, 44), "tlvs": (68, EVENT_TLV_LEN),
}
REFLECTOR_EVENT_FIELDS = {
    "sender_addr": (0, 4), "local_addr": (4, 4), "sender_port": (8, 2), "local_port": (10, 2),
    "payload_len": (12, 2), "sender_ttl": (14, 1), "pad": (15, 1), "seq": (16, 4),
    "t1": (20, 8), "t2": (28, 8), "t3": (36, 8), "sender_error_estimate": (44, 2),
    "error_estimate": (46, 2),
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
    return SenderEvent(socket.inet_ntoa(ra), socket.inet_ntoa(la), rp, lp, plen, ttl,
                       (s4, f4), pkt, tlvs[:max(0, plen - 44)], tos)


def reflector_event(buf):
    (sa, la, sp, lp, plen, ttl, seq, s1, f1, s2, f2, s3, f3, see, ee) = \
        REFLECTOR_EVENT.unpack_from(buf)
    return ReflectorEvent(socket.inet_ntoa(sa), socket.inet_ntoa(la), sp, lp, plen, ttl, seq,
                          (s1, f1), (s2, f2), (s3, f3), see, ee)
