"""Fuzzing the four TC programs with BPF_PROG_TEST_RUN: generated frames, an independent oracle.

USAGE: python -m stamp_bpf.lab.fuzz [-n FRAMES] [--seed N] [--out DIR]

Frames are mutations of valid STAMP test packets and replies (lengths,
headers, RFC 8972 TLV lists, checksums, VLAN tags, IPv4 options, fragments,
addresses, truncation and padding; no IPv6: the programs do not take it yet).
Each request is run through reflector_ingress and, when reflected, the result
through reflector_egress; each reply through sender_ingress; every frame of
both kinds through sender_egress and reflector_egress on their own, which
must leave a frame that is not theirs as it was. The oracle below is plain
Python and reads the bytes itself (no code shared with bpf/ or the programs'
user space): a request may be reflected only if it is a well-formed STAMP
test packet of 44 octets or more (a shorter TWAMP-Light one would get a
larger reply) to us with valid checksums (the IPv4 header's too), a reply
taken only if it is a well-formed reflected packet from a session's
reflector to us. Every frame a program sends out must have valid IP and UDP
checksums and the size of its request, and must be the answer RFC 8762 and
RFC 8972 ask for: the request's Sequence Number, Timestamp, Error Estimate,
SSID and TTL copied, MBZ zero, and each TLV answered as section 4 says
(type and length kept; U for a type not supported, M for a wrong length,
and the walk ends there; Extra Padding and unsupported TLVs unchanged;
Class of Service with DSCP2 and ECN as received and the reply sent with
DSCP1). The programs' own counters must equal what the runs returned.

A frame that breaks an invariant is written to DIR as <program>-<n>.bin
(the frame as fed) and named in the failure, for a regression test.
"""

import argparse
import os
import random
import struct
import sys
import time
from typing import NamedTuple

from . import progtest
from .progtest import TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT

SENDER_ADDR, REFLECTOR_ADDR = "198.18.0.1", "198.18.0.2"
PORT = 862
# BPF_PROG_TEST_RUN runs the skb on lo, whose MAC address is all zeros: a frame to it
# is PACKET_HOST; broadcast, multicast and other addresses are not.
OUR_MAC, PEER_MAC = bytes(6), bytes.fromhex("020000000001")
S_IP, R_IP = bytes(map(int, SENDER_ADDR.split("."))), bytes(map(int, REFLECTOR_ADDR.split(".")))
BASE = 44
MIN_PAYLOAD = 14
KEEP_PER_CLASS = 5      # failing frames written out per (program, class)

# RFC 8972 section 4, written out here rather than imported (the oracle shares no
# code with the programs' user space): Figure 6's flags, Table 2's types.
TLV_U, TLV_M, TLV_I = 0x80, 0x40, 0x20
TLV_PADDING, TLV_LOCATION, TLV_TS_INFO, TLV_COS, TLV_DIRECT = 1, 2, 3, 4, 5
# The reflector answers the first 16 TLVs and leaves later ones as they came
# (docs/rfc8972.md "Bounds"; a verifier limit, not the RFC's).
TLV_ANSWERED = 16


def csum(data):
    """The Internet checksum (RFC 1071) of `data`, as a header stores it."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# --- building ------------------------------------------------------------------

def tlvs(rng, room):
    """RFC 8972 TLVs (flags, type, 16-bit length, value) filling about `room` octets:
    the supported types with their right lengths half the time, so the answers are
    checked too; other types, and some lengths and flags wrong on purpose."""
    out = b""
    while len(out) + 4 <= room:
        kind = rng.choice((TLV_PADDING, TLV_LOCATION, TLV_TS_INFO, TLV_COS, TLV_DIRECT,
                           None, None, None, None, None))
        if kind is None:
            kind, n = rng.getrandbits(8), rng.choice((0, 4, 8, 12, rng.randrange(0, 64)))
        else:
            n = {TLV_PADDING: rng.randrange(0, 40), TLV_LOCATION: 4 + 12 * rng.randrange(0, 4),
                 TLV_TS_INFO: 4, TLV_COS: 4, TLV_DIRECT: 12}[kind]
        value = bytes(rng.getrandbits(8) for _ in range(min(n, room - len(out) - 4)))
        length = n if rng.random() < 0.8 else rng.getrandbits(16)
        out += struct.pack("!BBH", rng.choice((0x80, 0x80, 0, 0x40, rng.getrandbits(8))),
                           kind, length) + value
    return out


SEQ_FLOOR = 0x10000000     # generated Sequence Numbers are above it, a live session's below


def _seq(rng):
    """A Sequence Number no live session reaches (a live run's sessions count from 0)."""
    return (SEQ_FLOOR | rng.getrandbits(32)) & 0xFFFFFFFF


def sender_payload(rng, size):
    seq = _seq(rng)
    ssid = rng.choice((0, rng.randrange(1, 1 << 16)))    # RFC 8972 section 3
    base = struct.pack("!III HH", seq, 0xE0000000 | rng.getrandbits(28), rng.getrandbits(32),
                       0x0001, ssid) + bytes(28)
    extra = tlvs(rng, size - BASE) if size > BASE and rng.random() < 0.7 else \
        bytes(max(0, size - BASE))
    return (base + extra)[:size].ljust(size, b"\0")


def reflector_payload(rng, size):
    seq = _seq(rng)
    base = struct.pack("!IIIHH II I II HH B3x", seq, 0xE0000000, 5, 0x0001, 0,
                       0xE0000000, 7, seq, 0xE0000000, 3, 0x0001, 0, rng.randrange(1, 256))
    extra = tlvs(rng, size - BASE) if size > BASE and rng.random() < 0.5 else \
        bytes(max(0, size - BASE))
    return (base + extra)[:size].ljust(size, b"\0")


def build(src, dst, sport, dport, payload, ttl=64, options=b"", dmac=OUR_MAC, smac=PEER_MAC,
          udp_csum=True, tos=0):
    """An Ethernet/IPv4/UDP frame with right lengths and checksums."""
    ihl = 5 + len(options) // 4
    udp_len = 8 + len(payload)
    tot = ihl * 4 + udp_len
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, tot, 0x1234, 0x4000, ttl, 17, 0,
                               src, dst) + options)
    struct.pack_into("!H", ip, 10, csum(ip))
    udp = bytearray(struct.pack("!HHHH", sport, dport, udp_len, 0) + payload)
    if udp_csum:
        c = csum(src + dst + struct.pack("!BBH", 0, 17, udp_len) + udp)
        struct.pack_into("!H", udp, 6, c or 0xFFFF)
    return bytearray(dmac + smac + b"\x08\x00") + ip + udp


def fix_checksums(f):
    """Recompute the IPv4 and UDP checksums of an untagged frame, as far as its
    headers allow (a mutated length is kept, and is what the sums cover)."""
    if len(f) < 34 or f[12:14] != b"\x08\x00":
        return f
    ihl = (f[14] & 0x0F) * 4
    if ihl < 20 or len(f) < 14 + ihl + 8:
        return f
    f[24:26] = b"\0\0"
    struct.pack_into("!H", f, 24, csum(f[14:14 + ihl]))
    u = 14 + ihl
    ulen = struct.unpack_from("!H", f, u + 4)[0]
    if ulen < 8 or u + ulen > len(f):
        return f
    f[u + 6:u + 8] = b"\0\0"
    c = csum(f[26:34] + struct.pack("!BBH", 0, 17, ulen) + f[u:u + ulen])
    struct.pack_into("!H", f, u + 6, c or 0xFFFF)
    return f


# --- mutating ------------------------------------------------------------------

def _set16(f, off, v):
    if off + 2 <= len(f):
        struct.pack_into("!H", f, off, v & 0xFFFF)


def mutate(rng, f):
    """One mutation of a frame, in place or new; returns (name, frame)."""
    kind = rng.randrange(16)
    if kind == 0:                                    # flip bits anywhere
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(f))
            f[i] ^= 1 << rng.randrange(8)
        return "bitflip", f
    if kind == 1:                                    # a header byte, checksums made right again
        i = rng.randrange(min(len(f), 14 + 20 + 8 + BASE))
        f[i] = rng.getrandbits(8)
        return "byte_fixed", fix_checksums(f)
    if kind == 2:       # BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header
        return "truncate", f[:rng.randrange(14, len(f))] if len(f) > 14 else f
    if kind == 3:
        return "pad", f + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    if kind == 4:                                    # IP total length
        _set16(f, 16, rng.choice((0, 20, 27, 28, 28 + 13, len(f) - 14 + rng.randrange(-8, 9),
                                  rng.getrandbits(16))))
        return "ip_len", fix_checksums(f) if rng.random() < 0.7 else f
    if kind == 5:                                    # UDP length
        ihl = (f[14] & 0x0F) * 4 if len(f) > 14 else 20
        _set16(f, 14 + ihl + 4, rng.choice((0, 7, 8, 8 + 13, 8 + 14, len(f) - 14 - ihl + rng.randrange(-8, 9),
                                            rng.getrandbits(16))))
        return "udp_len", fix_checksums(f) if rng.random() < 0.7 else f
    if kind == 6:                                    # UDP checksum: zero, or wrong
        if len(f) >= 42:
            _set16(f, 40, 0 if rng.random() < 0.5 else rng.getrandbits(16))
        return "udp_csum", f
    if kind == 7:                                    # IP checksum wrong
        if len(f) >= 26:
            _set16(f, 24, struct.unpack_from("!H", f, 24)[0] ^ (1 << rng.randrange(16)))
        return "ip_csum", f
    if kind == 8:                                    # VLAN tag(s)
        tags = b"".join(struct.pack("!HH", 0x8100 if i == 0 else rng.choice((0x8100, 0x88A8)),
                                    rng.getrandbits(12)) for i in range(rng.randrange(1, 3)))
        return "vlan", f[:12] + tags + f[12:]
    if kind == 9:                                    # IPv4 options (IHL 6..15)
        n = rng.randrange(1, 11) * 4
        opts = bytes(rng.choice((0, 1, 7, 68, 130, rng.getrandbits(8))) for _ in range(n))
        ihl = (f[14] & 0x0F) * 4 if len(f) > 14 else 20
        out = f[:14 + ihl] + opts + f[14 + ihl:]
        if len(out) > 14:
            out[14] = 0x40 | min(15, ihl // 4 + n // 4)
        _set16(out, 16, len(out) - 14)
        return "ip_options", fix_checksums(out) if rng.random() < 0.8 else out
    if kind == 10:                                   # fragments
        if len(f) >= 22:
            _set16(f, 20, rng.choice((0x2000, 0x0001, 0x2005, 0x8000, rng.getrandbits(16))))
        return "fragment", fix_checksums(f)
    if kind == 11:                                   # version, IHL, protocol, ethertype
        field = rng.randrange(4)
        if field == 0 and len(f) > 14:
            f[14] = (rng.choice((0, 4, 6, 15)) << 4) | (f[14] & 0x0F)
        elif field == 1 and len(f) > 14:
            f[14] = (f[14] & 0xF0) | rng.randrange(16)
        elif field == 2 and len(f) > 23:
            f[23] = rng.choice((6, 1, 0, 255, 136))
        else:
            _set16(f, 12, rng.choice((0x86DD, 0x0806, 0x8100, 0x0000, 0x0801)))
        return "header_field", fix_checksums(f)
    if kind == 12:                                   # addresses
        which = rng.randrange(5)
        addr = rng.choice((b"\xff\xff\xff\xff", b"\xe0\x00\x00\x01", b"\0\0\0\0", S_IP, R_IP,
                           bytes(rng.getrandbits(8) for _ in range(4)), b"\xc6\x12\x00\xff"))
        if which == 0 and len(f) >= 30:
            f[26:30] = addr
        elif which == 1 and len(f) >= 34:
            f[30:34] = addr
        elif which == 2:
            f[0:6] = rng.choice((b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01", PEER_MAC,
                                 bytes.fromhex("02aabbccddee")))
        elif len(f) >= 38:
            _set16(f, 34 if which == 3 else 36, rng.choice((0, 862, 863, 53, rng.getrandbits(16))))
        return "address", fix_checksums(f)
    if kind == 13:                                   # payload octets (MBZ, timestamps, TTL)
        if len(f) > 42:
            for _ in range(rng.randrange(1, 6)):
                f[rng.randrange(42, len(f))] = rng.getrandbits(8)
        return "payload", fix_checksums(f)
    if kind == 14:                                   # the reflection format (loop guard)
        if len(f) >= 42 + BASE:
            f[42 + 16:42 + 24] = bytes(rng.getrandbits(8) | 1 for _ in range(8))
            f[42 + 40] = rng.randrange(1, 256)
        return "reflection_format", fix_checksums(f)
    return "none", f                                 # the valid packet itself


def request(rng):
    size = rng.choice((MIN_PAYLOAD, 20, 43, BASE, BASE, 60, 112, 200, rng.randrange(0, 1400)))
    return build(S_IP, R_IP, rng.choice((PORT, PORT, 50000, rng.randrange(1, 65536))), PORT,
                 sender_payload(rng, size), ttl=rng.randrange(1, 256),
                 tos=rng.choice((0, 0, rng.getrandbits(8))))


def reply(rng):
    size = rng.choice((BASE, BASE, 60, 112, rng.randrange(0, 600)))
    return build(R_IP, S_IP, PORT, PORT, reflector_payload(rng, size), ttl=rng.randrange(1, 256))


def generate(rng, make):
    f = make(rng)
    names = []
    for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
        name, f = mutate(rng, bytearray(f))
        names.append(name)
    return "+".join(names) or "none", bytes(f)


def for_link(frame, macs):
    """A generated frame for a real link: the test-run MACs replaced by the link's
    {OUR_MAC: receiver's MAC, PEER_MAC: sender's MAC} (mutated MACs stay)."""
    f = bytearray(frame)
    if len(f) >= 12:
        f[0:6] = macs.get(bytes(f[0:6]), f[0:6])
        f[6:12] = macs.get(bytes(f[6:12]), f[6:12])
    return bytes(f)


def seq_of(frame):
    """The Sequence Number of a generated untagged IPv4/UDP frame, or None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    at = 14 + (frame[14] & 0x0F) * 4 + 8
    return struct.unpack_from("!I", frame, at)[0] if at + 4 <= len(frame) else None


# --- the oracle ----------------------------------------------------------------

class Udp(NamedTuple):
    src: bytes
    dst: bytes
    sport: int
    dport: int
    ttl: int
    payload: bytes
    ip_len: int
    tos: int


def parse_udp(f):
    """(Udp, None) for an untagged Ethernet/IPv4 frame to our MAC address whose IPv4
    header (options allowed) and UDP datagram are whole and consistent and whose
    checksums are valid (a zero UDP checksum means none, RFC 768); else (None, why)."""
    if len(f) < 14 + 20 + 8 or f[12:14] != b"\x08\x00":
        return None, "not_ipv4_udp"
    if f[0:6] != OUR_MAC:
        return None, "not_our_mac"
    ver, ihl = f[14] >> 4, (f[14] & 0x0F) * 4
    if ver != 4 or ihl < 20 or len(f) < 14 + ihl + 8:
        return None, "not_ipv4_udp"
    tot = struct.unpack_from("!H", f, 16)[0]
    if tot < ihl + 8 or 14 + tot > len(f):
        return None, "lengths"
    if struct.unpack_from("!H", f, 20)[0] & 0x3FFF or f[23] != 17:     # a fragment, not UDP
        return None, "not_ipv4_udp"
    if csum(f[14:14 + ihl]) != 0:
        return None, "ip_checksum"
    u = 14 + ihl
    sport, dport, ulen, ucs = struct.unpack_from("!HHHH", f, u)
    if ulen != tot - ihl:
        return None, "lengths"
    src, dst = bytes(f[26:30]), bytes(f[30:34])
    if ucs and csum(src + dst + struct.pack("!BBH", 0, 17, ulen) + f[u:u + ulen]) != 0:
        return None, "udp_checksum"
    return Udp(src, dst, sport, dport, f[22], bytes(f[u + 8:u + ulen]), tot, f[15]), None


def well_formed_udp(f):
    return parse_udp(f)[0]


def _unicast(addr):
    return addr != b"\0\0\0\0" and addr != b"\xff\xff\xff\xff" and not 224 <= addr[0] <= 239


def _reflection(p):
    """RFC 8762 Figure 5 as a reply has it: a Receive Timestamp, a Sender TTL and
    zero MBZ octets 38-39 and 41-43 (a sender's packet has zeros in 16..43)."""
    return len(p) >= BASE and any(p[16:24]) and p[40] != 0 and not any(p[38:40]) \
        and not any(p[41:44])


def request_problem(f):
    """Why a reflector on REFLECTOR_ADDR:PORT must not answer this frame, or None."""
    u, why = parse_udp(f)
    if u is None:
        return why
    if u.dst != R_IP or u.dport != PORT:
        return "not_to_us"
    if not _unicast(u.src) or u.src == R_IP or u.sport == 0:
        return "source"             # never a reflection to broadcast, multicast, ourselves, port 0
    if len(u.payload) < MIN_PAYLOAD:
        return "short"
    if len(u.payload) < BASE:
        # TWAMP Light's 14..43 octets: the 44-octet reply would be larger than its
        # request (an amplifier), so docs/security.md never reflects one (too_short).
        return "too_short"
    if u.sport == PORT and _reflection(u.payload):
        return "loop"               # a reflection: answering it could loop
    return None


def reply_problem(f):
    """Why the sender (sessions to REFLECTOR_ADDR, ports PORT) must not take this frame
    as a reply, or None."""
    u, why = parse_udp(f)
    if u is None:
        return why
    if u.src != R_IP or u.sport != PORT or u.dport != PORT:
        return "not_from_session"
    if u.dst != S_IP:
        return "not_to_us"
    if len(u.payload) < BASE or not _reflection(u.payload):
        return "not_a_reflection"
    return None


def sent_problems(request_frame, out, stateful=False):
    """[(class, text)] of what is wrong with a frame sent out in answer to a valid request
    (`stateful`: by a stateful reflector, whose Sequence Numbers are its own)."""
    req, u = well_formed_udp(request_frame), well_formed_udp(bytes(OUR_MAC) + bytes(out[6:]))
    if u is None:
        return [("sent_checksums", "the reflected frame is not a well-formed IPv4/UDP frame "
                                   "with valid checksums")]
    problems = []
    sent_sum = struct.unpack_from("!H", out, 14 + (out[14] & 0x0F) * 4 + 6)[0]
    req_sum = struct.unpack_from("!H", request_frame, 14 + (request_frame[14] & 0x0F) * 4 + 6)[0]
    if not sent_sum and req_sum:
        problems.append(("sent_checksums", "the reflected frame lost its UDP checksum"))
    if u.ip_len != req.ip_len:
        problems.append(("sent_size", f"the reflected IP packet has {u.ip_len} octets, its "
                                      f"request {req.ip_len}"))
    if (u.src, u.dst, u.sport, u.dport) != (req.dst, req.src, req.dport, req.sport):
        problems.append(("sent_address", "the reflected frame is not addressed back to the "
                                         "request's sender"))
    if len(u.payload) == len(req.payload):
        problems += base_problems(req, u.payload, stateful)
        problems += tlv_problems(req, u.payload, out[15], stateful)
    return problems


def base_problems(req, out, stateful=False):
    """[(class, text)]: the reflected base packet (RFC 8762 Figure 5, the SSID of
    RFC 8972 Figure 2) against its request `req` (a Udp)."""
    p, problems = req.payload, []

    def differs(at, n, src):
        return len(p) >= src + n and out[at:at + n] != p[src:src + n]
    if not stateful and differs(0, 4, 0):
        problems.append(("sent_fields", "the Sequence Number is not the request's (stateless)"))
    if differs(24, 4, 0) or differs(28, 8, 4) or differs(36, 2, 12):
        problems.append(("sent_fields", "the Session-Sender Sequence Number, Timestamp or "
                                        "Error Estimate is not the request's"))
    if differs(14, 2, 14):
        problems.append(("sent_ssid", "the SSID is not the request's (RFC 8972 section 3)"))
    if out[40] != req.ttl:
        problems.append(("sent_fields", f"Session-Sender TTL {out[40]}, the request came "
                                        f"with {req.ttl}"))
    if any(out[38:40]) or any(out[41:44]):
        problems.append(("sent_fields", "MBZ octets 38-39 or 41-43 are not zero"))
    if not any(out[4:12]) or not any(out[16:24]):
        problems.append(("sent_fields", "the Timestamp or Receive Timestamp is zero"))
    return problems


def _tlv_list(p):
    """The request's octets past the base: do they start as RFC 8972 says a sender's
    TLVs must (flags U=1 and nothing else, a type other than 0 Reserved)?"""
    return len(p) >= BASE + 4 and p[BASE] == TLV_U and p[BASE + 1] != 0


def tlv_problems(req, out, out_tos, stateful=False):
    """[(class, text)]: the octets past the base, as RFC 8972 section 4 has a
    Session-Reflector answer them. Octets the reflector does not take for TLVs come
    back as they came (RFC 8762 4.6: padding); what it did take (anything changed,
    and every list that starts as a sender's must) is checked TLV by TLV."""
    p = req.payload
    if len(p) <= BASE or (out[BASE:] == p[BASE:] and not _tlv_list(p)):
        return []
    problems, dscp1s = [], set()

    def bad(text):
        problems.append(("sent_tlv", text))
    off, n = BASE, 0
    while off < len(p) and n < TLV_ANSWERED:
        n += 1
        if len(p) - off < 4:
            # No room for a header: M on the octet where its flags would be.
            if not out[off] & TLV_M or out[off + 1:] != p[off + 1:]:
                bad(f"the {len(p) - off} octets left at {off} (too few for a TLV) are "
                    "not flagged M, or changed")
            return problems
        flags, typ, length = out[off], p[off + 1], struct.unpack_from("!H", p, off + 2)[0]
        where = f"TLV {n} (type {typ}, length {length}) at {off}"
        if out[off + 1:off + 4] != p[off + 1:off + 4]:
            bad(f"{where}: the type or length changed")
            return problems
        if flags & ~(TLV_U | TLV_M):
            bad(f"{where}: flags {flags:#04x} (I and the reserved bits are sent as 0)")
        val, end = off + 4, off + 4 + length
        wrong_len = (end > len(p)
                     or (typ in (TLV_LOCATION, TLV_TS_INFO) and length < 4)
                     or (typ == TLV_COS and length != 4) or (typ == TLV_DIRECT and length != 12))
        if wrong_len:
            if not flags & TLV_M or out[val:] != p[val:]:
                bad(f"{where}: a wrong length, not flagged M, or the rest of the packet "
                    "changed (the walk ends there)")
            return problems
        kept = out[val:end] == p[val:end]
        if typ == TLV_PADDING:
            if flags or not kept:
                bad(f"{where}: Extra Padding comes back unflagged and unchanged")
        elif typ == TLV_COS:
            problems += [("sent_tlv", f"{where}: {t}") for t in _cos_problems(
                flags, p[val:end], out[val:end], req.tos)]
            dscp1s.add(p[val] >> 2)
        elif typ == TLV_DIRECT and stateful:
            if flags or out[val:val + 4] != p[val:val + 4]:
                bad(f"{where}: a stateful reflector answers Direct Measurement, S_TxC kept")
        elif typ in (TLV_LOCATION, TLV_TS_INFO):
            if flags & TLV_U:
                bad(f"{where}: a supported type flagged U")
            if flags & TLV_M:       # a Location sub-TLV of a wrong length: the walk ends
                if out[end:] != p[end:]:
                    bad(f"{where}: flagged M, but the octets after it changed")
                return problems
        elif flags != TLV_U or not kept:
            # Not supported here (Direct Measurement: no session when stateless).
            bad(f"{where}: an unsupported type comes back flagged U (only) and unchanged")
        off = end
    if out[off:] != p[off:]:
        bad(f"octets past the first {TLV_ANSWERED} TLVs, from {off}, changed")
    if dscp1s and out_tos >> 2 not in dscp1s:
        # RP 0: the reply uses the DSCP1 asked for (of one of them, if several ask).
        problems.append(("sent_dscp", f"the reply left with DSCP {out_tos >> 2}, not the "
                                      f"DSCP1 {sorted(dscp1s)} a Class of Service TLV asked for"))
    return problems


def _cos_problems(flags, sent, got, req_tos):
    """RFC 8972 section 4.4, Figure 12: DSCP1 kept, DSCP2 and ECN as the request
    arrived, RP 0 (no policy refused DSCP1), Reserved 0."""
    if flags:
        return [f"Class of Service flagged {flags:#04x}"]
    bits = struct.unpack_from("!H", got)[0]
    dscp1, dscp2, ecn, rp = bits >> 10, (bits >> 4) & 0x3F, (bits >> 2) & 3, bits & 3
    problems = []
    if dscp1 != sent[0] >> 2:
        problems.append("DSCP1 changed")
    if (dscp2, ecn) != (req_tos >> 2, req_tos & 3):
        problems.append(f"DSCP2/ECN {dscp2}/{ecn}, the request came with "
                        f"{req_tos >> 2}/{req_tos & 3}")
    if rp or any(got[2:4]):
        problems.append("RP or Reserved not 0")
    return problems


# --- running -------------------------------------------------------------------

class Finding(NamedTuple):
    program: str
    cls: str            # what kind of broken invariant (the oracle's reason, or sent_*)
    what: str
    mutation: str
    path: str


class Fuzzer:
    """The four programs, loaded as the services load them, and the invariants' state."""

    def __init__(self, out_dir, ptp=False):
        from ..common import clock
        from ..reflector import datapath as rdp, guard
        from ..sender import datapath as sdp
        from ..common import tc
        self.out_dir = out_dir
        state = clock.ClockState(False, 16.0, 37)
        self.s_dp, s_fns = sdp.load(PORT, PORT, ptp)
        self.r_dp, r_fns = rdp.load(PORT, ptp)
        for dp in (self.s_dp, self.r_dp):
            dp.configure(state)
        self.r_dp.set_addresses([REFLECTOR_ADDR])
        # Everyone answered at any rate: a million frames come from one address, and the
        # oracle judges what may be answered, not the rate limit (tests/test_guard_*).
        self.r_dp.set_guard([], guard.rate_limit(0, 1))
        self.s_dp.add_session(REFLECTOR_ADDR, SENDER_ADDR)
        self.fd = {"reflector_ingress": r_fns[tc.INGRESS].fd, "reflector_egress": r_fns[tc.EGRESS].fd,
                   "sender_ingress": s_fns[tc.INGRESS].fd, "sender_egress": s_fns[tc.EGRESS].fd}
        self.s_events, self.r_events = [0], [0]
        self.s_dp.open_events(lambda _raw: self._count(self.s_events))
        self.r_dp.open_events(lambda _raw: self._count(self.r_events))
        self.counts = dict.fromkeys(("frames", "runs", "reflected", "taken", "valid_requests",
                                     "valid_replies", "valid_reflected", "valid_taken",
                                     "refused_by_kernel"), 0)
        self.findings = []      # the first KEEP_PER_CLASS of each (program, class)
        self.by_class = {}      # (program, class) -> how many frames broke it

    @staticmethod
    def _count(box):
        box[0] += 1

    def close(self):
        for dp in (self.s_dp, self.r_dp):
            dp.bpf.cleanup()

    def _run(self, prog, frame, mutation):
        runner = progtest.TestRunner(frame)
        try:
            rc, _ = runner.run(self.fd[prog])
        except OSError as e:
            if e.errno == 22 and len(frame) < (14 + 40 if frame[12:14] == b"\x86\xdd" else 14 + 20):
                # The kernel's test harness (bpf_prog_test_run_skb) refuses an IPv4 or
                # IPv6 frame too short for its IP header before any program runs.
                self.counts["refused_by_kernel"] += 1
            else:
                self._found(prog, "test_run", f"BPF_PROG_TEST_RUN failed: {e}", mutation, frame)
            return None, b""
        self.counts["runs"] += 1
        return progtest.signed(rc), runner.output()

    def _found(self, prog, cls, what, mutation, frame):
        self.by_class[prog, cls] = self.by_class.get((prog, cls), 0) + 1
        if self.by_class[prog, cls] > KEEP_PER_CLASS:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, f"{prog}-{cls}-{self.by_class[prog, cls]}.bin")
        with open(path, "wb") as fh:
            fh.write(frame)
        self.findings.append(Finding(prog, cls, what, mutation, path))

    def request(self, mutation, f):
        problem = request_problem(f)
        self.counts["valid_requests"] += problem is None
        rc, out = self._run("reflector_ingress", f, mutation)
        if rc == TC_ACT_REDIRECT:
            self.counts["reflected"] += 1
            rc2, sent = self._run("reflector_egress", out, mutation)
            if problem is not None:
                self._found("reflector_ingress", problem,
                            f"reflected a frame that is not a valid request ({problem})", mutation, f)
            else:
                self.counts["valid_reflected"] += 1
                if rc2 != TC_ACT_UNSPEC:
                    self._found("reflector_egress", "return", f"returned {rc2} for a reflection",
                                mutation, f)
                for cls, text in sent_problems(f, sent):
                    self._found("reflector_egress", cls, text, mutation, f)
        elif rc not in (TC_ACT_UNSPEC, None):
            self._found("reflector_ingress", "return", f"returned {rc}", mutation, f)
        self._untouched("reflector_egress", mutation, f)
        self._untouched("sender_egress", mutation, f)
        rc, _ = self._run("sender_ingress", f, mutation)      # a request is never a reply
        if rc == TC_ACT_SHOT:
            self.counts["taken"] += 1
            problem = reply_problem(f)
            if problem is not None:
                self._found("sender_ingress", problem,
                            f"took a request frame that is not a valid reply ({problem})",
                            mutation, f)

    def reply(self, mutation, f):
        problem = reply_problem(f)
        self.counts["valid_replies"] += problem is None
        rc, _ = self._run("sender_ingress", f, mutation)
        if rc == TC_ACT_SHOT:
            self.counts["taken"] += 1
            self.counts["valid_taken"] += problem is None
            if problem is not None:
                self._found("sender_ingress", problem,
                            f"took a frame that is not a valid reply ({problem})", mutation, f)
        elif rc not in (TC_ACT_UNSPEC, None):
            self._found("sender_ingress", "return", f"returned {rc}", mutation, f)
        self._untouched("sender_egress", mutation, f)
        self._untouched("reflector_egress", mutation, f)
        # A reply (or what mutation made of it) is reflected only if it became a valid request.
        rc, out = self._run("reflector_ingress", f, mutation)
        if rc == TC_ACT_REDIRECT:
            self.counts["reflected"] += 1
            self._run("reflector_egress", out, mutation)        # consumes the hand-off
            problem = request_problem(f)
            if problem is not None:
                self._found("reflector_ingress", problem,
                            f"reflected a reply frame that is not a valid request ({problem})",
                            mutation, f)

    def _untouched(self, prog, mutation, f):
        """A program with nothing armed for this frame must pass it as it is."""
        rc, out = self._run(prog, f, mutation)
        if rc is not None and (rc != TC_ACT_UNSPEC or out != f):
            self._found(prog, "untouched", f"changed or stopped a frame that is not its own "
                                           f"(returned {rc})", mutation, f)

    def drain(self):
        self.s_dp.bpf.ring_buffer_consume()
        self.r_dp.bpf.ring_buffer_consume()

    def check_counters(self):
        """The programs' counters against what their runs returned."""
        self.drain()
        r, s = self.r_dp.stats(), self.s_dp.stats()
        problems = []
        if r["reflected"] != self.counts["reflected"]:
            problems.append(f"reflector counted {r['reflected']} reflected, runs reflected "
                            f"{self.counts['reflected']}")
        if s["replies_taken"] != self.counts["taken"]:
            problems.append(f"sender counted {s['replies_taken']} replies taken, runs took "
                            f"{self.counts['taken']}")
        lost = r["ringbuf_lost"] + s["ringbuf_lost"]
        if self.r_events[0] + r["ringbuf_lost"] != self.counts["reflected"]:
            problems.append(f"reflector records {self.r_events[0]} + lost {r['ringbuf_lost']} "
                            f"!= reflected {self.counts['reflected']}")
        if self.s_events[0] + s["ringbuf_lost"] != self.counts["taken"]:
            problems.append(f"sender records {self.s_events[0]} + lost {s['ringbuf_lost']} "
                            f"!= taken {self.counts['taken']}")
        return problems, lost


def run(frames, seed, out_dir, log=print):
    """Feed `frames` generated frames (half requests, half replies); returns
    (counts, findings, counter problems, seconds)."""
    rng = random.Random(seed)
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})     # reflector_ingress hands over to egress per CPU
    fz = Fuzzer(out_dir)
    t0 = time.monotonic()
    try:
        for i in range(frames):
            if i % 2:
                fz.reply(*generate(rng, reply))
            else:
                fz.request(*generate(rng, request))
            fz.counts["frames"] += 1
            if i % 1000 == 999:
                fz.drain()
        problems, _ = fz.check_counters()
    finally:
        fz.close()
        os.sched_setaffinity(0, old)
    return fz.counts, fz.findings, fz.by_class, problems, time.monotonic() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--frames", type=int, default=100_000, help="frames to generate; default 100000")
    p.add_argument("--seed", type=int, default=None, help="random seed; default: a new one, printed")
    p.add_argument("--out", default="/tmp/stamp-fuzz", help="folder for failing frames")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}", flush=True)
    counts, findings, by_class, problems, secs = run(a.frames, seed, a.out)
    print(f"{counts['frames']} frames, {counts['runs']} program runs in {secs:.1f} s "
          f"({counts['frames'] / secs:,.0f} frames/s): {counts}")
    for (prog, cls), n in sorted(by_class.items()):
        example = next(f for f in findings if (f.program, f.cls) == (prog, cls))
        print(f"{prog} {cls}: {n} frames, e.g. {example.what} [{example.mutation}] -> {example.path}")
    for pr in problems:
        print("counters:", pr)
    return 1 if findings or problems else 0


if __name__ == "__main__":
    sys.exit(main())
