"""IPv6 with both services attached: what is ours is reflected right, the rest untouched.

    [sender ns 198.18.0.1, 2001:2::1, fe80::...] --veth-- [reflector ns 198.18.0.2, 2001:2::2]
      stamp-sender (IPv4 session, every 10 ms)              stamp-reflector
      capture                                               neighbour discovery live (no
                                                            static entries)

Foreign and malformed IPv6 (extension headers, fragments, short and oversized
payloads, bad lengths, a truncated frame, checksum 0 or wrong, other ports,
multicast, ICMPv6) must never be reflected nor disturb the running session;
ping6 and TCP over IPv6 keep working, so neighbour discovery does. A valid
IPv6 test packet, to a global or a link-local address, comes back as an RFC
8762 reflector packet (decoded by scapy), Hop Limit 255, the received Hop
Limit as Session-Sender TTL, with a valid UDP checksum.
"""

import os
import socket
import struct
import time

import pytest
from scapy.contrib.stamp import STAMPSessionReflectorTestUnauthenticated as ScapyReflected
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, fragment6)
from scapy.layers.l2 import Ether

from stamp_bpf.lab import packets

import stampnet

pytestmark = pytest.mark.timeout(240)
BAD = 0xBAD60000     # Sequence Number marker of requests that must not be reflected
GOOD = 0x600D0000    # ... of valid IPv6 requests


def body(seq, size=44):
    """A Session-Sender test packet of `size` octets (T1 set, MBZ zero)."""
    b = struct.pack("!IIIH", seq, 0xE0000000, 1, 0x0001) + bytes(30)
    return (b + bytes(max(0, size - 44)))[:size]


def udp6_checksum(frame):
    """(stored, correct) UDP checksum of an Ethernet/IPv6/UDP frame (RFC 8200 8.1)."""
    ulen = struct.unpack_from("!H", frame, 54 + 4)[0]
    seg = bytearray(frame[54:54 + ulen])
    stored = struct.unpack_from("!H", seg, 6)[0]
    seg[6:8] = b"\0\0"
    pseudo = frame[22:54] + struct.pack("!IxxxB", ulen, 17)
    return stored, packets.rfc1071(pseudo + bytes(seg)) or 0xFFFF


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("ipv6"), ipv6=True, static_neigh=False)
    lab.refl = lab.reflector()
    lab.sending = lab.sender("-i", "0.01")
    yield lab
    lab.close()


def test_ping6_to_global_and_link_local_addresses_both_ways(lab):
    topo = lab.topo
    for src, dst in ((topo.sender, topo.reflector), (topo.reflector, topo.sender)):
        for target in (dst.addr6, f"{dst.ll6}%{src.ifname}"):
            res = topo.run(src, ["ping", "-6", "-c", "10", "-i", "0.05", "-W", "1", "-q", target],
                           capture_output=True, text=True)
            assert res.returncode == 0 and " 0% packet loss" in res.stdout, \
                f"ping -6 {target} from {src.ns} lost packets with both services attached " \
                f"(neighbour discovery must pass untouched):\n{res.stdout}{res.stderr}"


def test_tcp_over_ipv6_both_ways(lab):
    """2 MiB to the reflector host over TCP/IPv6 and back, byte for byte."""
    topo = lab.topo
    want, got, back = stampnet.tcp_round_trip(topo.sender, topo.reflector, topo.reflector.addr6,
                                              2 << 20, socket.AF_INET6)
    assert got == want and back == want, \
        "A TCP stream over IPv6 arrived changed or cut with both services attached."


@pytest.mark.parametrize("dport", [861, 863, 40000])
def test_ipv6_udp_to_other_ports_is_untouched(lab, dport):
    topo = lab.topo
    rx = stampnet.socket_in(topo.reflector, socket.AF_INET6)
    rx.bind((topo.reflector.addr6, dport))
    tx = stampnet.socket_in(topo.sender, socket.AF_INET6)
    tx.bind((topo.sender.addr6, 40004))
    payloads = [body(7), os.urandom(44), os.urandom(1200)]
    try:
        for p in payloads:
            tx.sendto(p, (topo.reflector.addr6, dport))
        got = [d for d, _ in stampnet.recv_all(rx)]
        back = [d for d, _ in stampnet.recv_all(tx, quiet=0.1)]
    finally:
        rx.close()
        tx.close()
    assert got == payloads and back == [], \
        f"IPv6 UDP to port {dport} must arrive untouched and unanswered: got {len(got)}, back {back!r}"


def foreign_frames(topo):
    """[(what, frame)] of IPv6 frames to port 862 of the reflector that must not be reflected."""
    s, r = topo.sender, topo.reflector
    eth = Ether(src=s.mac, dst=r.mac)
    ip = dict(src=s.addr6, dst=r.addr6, hlim=64)
    udp = dict(sport=50000, dport=862)
    out = [(f"{n}-octet payload", eth / IPv6(**ip) / UDP(**udp) / body(BAD + n, n))
           for n in (0, 4, 13, 14, 43)]    # 14-43: TWAMP Light, but its reply would be larger
    out += [
        ("a hop-by-hop options header", eth / IPv6(**ip) / IPv6ExtHdrHopByHop() / UDP(**udp)
         / body(BAD + 20)),
        ("a routing header", eth / IPv6(**ip) / IPv6ExtHdrRouting(addresses=[]) / UDP(**udp)
         / body(BAD + 21)),
        ("a destination options header", eth / IPv6(**ip) / IPv6ExtHdrDestOpt() / UDP(**udp)
         / body(BAD + 22)),
        ("an atomic fragment (fragment header, offset 0, M=0)",
         eth / IPv6(**ip) / IPv6ExtHdrFragment(id=7) / UDP(**udp) / body(BAD + 23)),
        ("UDP checksum 0 (forbidden over IPv6)", eth / IPv6(**ip) / UDP(**udp, chksum=0)
         / body(BAD + 24)),
        ("UDP length beyond the payload length",
         eth / IPv6(**ip, plen=8 + 44) / UDP(**udp, len=8 + 60) / body(BAD + 25)),
        ("UDP length short of the payload length",
         eth / IPv6(**ip) / UDP(**udp, len=8 + 20) / body(BAD + 26)),
        ("payload length beyond the frame",
         eth / IPv6(**ip, plen=300) / UDP(**udp, len=300) / body(BAD + 27)),
        ("UDP length 0 (a jumbogram's, without the jumbo option)",
         eth / IPv6(**ip) / UDP(**udp, len=0) / body(BAD + 28)),
        ("version 4 in an IPv6 frame", eth / IPv6(**ip, version=4) / UDP(**udp) / body(BAD + 29)),
        ("to all nodes (multicast)", Ether(src=s.mac, dst="33:33:00:00:00:01")
         / IPv6(src=s.addr6, dst="ff02::1") / UDP(**udp) / body(BAD + 30)),
        ("to another host's MAC address", Ether(src=s.mac, dst="02:11:22:33:44:55")
         / IPv6(**ip) / UDP(**udp) / body(BAD + 31)),
        ("to an address that is not the reflector's", eth / IPv6(src=s.addr6, dst="2001:2::99")
         / UDP(**udp) / body(BAD + 32)),
        ("from port 862 in the reflector format (a reflection)",
         eth / IPv6(**ip) / UDP(sport=862, dport=862)
         / (body(BAD + 33)[:16] + b"\x01" * 8 + bytes(16) + b"\x40" + bytes(3))),
        ("ICMPv6 echo request", eth / IPv6(**ip) / ICMPv6EchoRequest(data=body(BAD + 34))),
    ]
    wrong = eth / IPv6(**ip) / UDP(**udp) / body(BAD + 35)
    stored = udp6_checksum(bytes(wrong))[1]
    out.append(("a wrong UDP checksum", eth / IPv6(**ip) / UDP(**udp, chksum=stored ^ 0x0F0F)
                / body(BAD + 35)))
    for i, frag in enumerate(fragment6(IPv6(**ip) / IPv6ExtHdrFragment(id=9) / UDP(**udp)
                                       / body(BAD + 36, 200), 120)):
        out.append((f"fragment {i}", eth / frag))
    frames = [(what, bytes(f)) for what, f in out]
    frames.append(("a truncated frame (cut inside the STAMP base)",
                   bytes(eth / IPv6(**ip) / UDP(**udp) / body(BAD + 37))[:14 + 40 + 8 + 20]))
    return frames


def test_foreign_and_malformed_ipv6_is_never_reflected(lab):
    topo = lab.topo
    frames = foreign_frames(topo)
    tx = stampnet.frame_socket(topo.sender)
    try:
        with lab.capture(topo.sender, "foreign6") as captured:
            for _ in range(5):
                for _what, f in frames:
                    tx.send(f)
                time.sleep(0.05)
    finally:
        tx.close()
    reflected = sorted({struct.unpack_from("!I", u.payload)[0] for _ts, fr in captured
                        if (u := packets.parse_udp6(fr)) and u.sport == 862
                        and u.dst == topo.sender.addr6 and len(u.payload) >= 4})
    names = {}
    for what, f in frames:
        at = f.find(struct.pack("!I", BAD)[:3])
        if at >= 0 and at + 4 <= len(f):
            names.setdefault(struct.unpack_from("!I", f, at)[0], what)
    bad = [names.get(seq, hex(seq)) for seq in reflected if seq & 0xFFFF0000 == BAD]
    assert not bad, f"Foreign or malformed IPv6 frames were reflected: {bad}"
    assert lab.refl.proc.poll() is None and lab.sending.proc.poll() is None, \
        "A service died of foreign IPv6 input."


def ifindex(host):
    """The index of `host`'s interface, looked up in its own namespace."""
    with stampnet.netns(host.ns):
        return socket.if_nametoindex(host.ifname)


def exchange6(lab, dest, payloads, hlim, name):
    """Send payloads from UDP port 862 of the sender to `dest` with Hop Limit `hlim`;
    return the reflector's replies captured on the sender's interface, as (Udp, frame)."""
    topo = lab.topo
    sock = stampnet.socket_in(topo.sender, socket.AF_INET6)
    sock.bind(("::", 8620))
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hlim)
    try:
        with lab.capture(topo.sender, name) as frames:
            for p in payloads:
                sock.sendto(p, dest)
            stampnet.recv_all(sock)
    finally:
        sock.close()
    return [(u, fr) for _ts, fr in frames
            if (u := packets.parse_udp6(fr)) and u.sport == 862 and u.dport == 8620]


@pytest.mark.parametrize("where", ["global", "link-local"])
def test_valid_ipv6_requests_come_back_as_rfc8762_replies(lab, where):
    topo = lab.topo
    r = topo.reflector
    dest = ((r.addr6, 862, 0, 0) if where == "global"
            else (r.ll6, 862, 0, ifindex(topo.sender)))
    sizes = (44, 200)       # shorter requests get no reply: docs/security.md, too_short
    replies = exchange6(lab, dest, [body(GOOD + i, n) for i, n in enumerate(sizes)], 61, where)
    assert len(replies) == len(sizes), f"{len(replies)} of {len(sizes)} IPv6 requests came back."
    for (u, frame), size in zip(sorted(replies, key=lambda x: x[0].payload[:4]), sizes):
        assert u.src == dest[0] and u.ttl == 255, \
            f"A reply comes from the address asked ({dest[0]}) with Hop Limit 255: {u.src} {u.ttl}"
        stored, correct = udp6_checksum(frame)
        assert stored == correct, f"The reply's UDP checksum is {stored:#x}, it must be {correct:#x}."
        pkt = ScapyReflected(u.payload)
        assert pkt.ttl_sender == 61, \
            f"Session-Sender TTL is the received Hop Limit 61, not {pkt.ttl_sender}."
        assert pkt.seq == pkt.seq_sender and pkt.seq & 0xFFFF0000 == GOOD
        assert len(u.payload) == size, "Replies keep the request's size (RFC 8762 4.6)."


def test_the_reflector_follows_ipv6_addresses_added_and_removed(lab):
    """An address added to the interface is reflected for within the reflector's
    1 s address sync; once removed, requests to it are no longer answered."""
    topo = lab.topo
    r = topo.reflector
    extra = "2001:2::99"
    topo.run(r, ["ip", "-6", "addr", "add", f"{extra}/64", "dev", r.ifname, "nodad"], check=True)
    try:
        deadline = time.monotonic() + 10
        while not [e for e in lab.refl.events("addresses") if extra in e.get("added", [])]:
            assert time.monotonic() < deadline, "The reflector did not pick up the new IPv6 address."
            time.sleep(0.2)
        replies = exchange6(lab, (extra, 862, 0, 0), [body(GOOD + 40)], 64, "added6")
        assert [u.src for u, _ in replies] == [extra], "A request to the added address is reflected."
    finally:
        topo.run(r, ["ip", "-6", "addr", "del", f"{extra}/64", "dev", r.ifname], check=True)
    deadline = time.monotonic() + 10
    while not [e for e in lab.refl.events("addresses") if extra in e.get("removed", [])]:
        assert time.monotonic() < deadline, "The reflector did not drop the removed IPv6 address."
        time.sleep(0.2)


def test_the_ipv4_session_was_not_disturbed(lab):
    """The IPv4 session measured on while all of the above ran (stops the sender)."""
    svc = lab.sending
    assert svc.stop() == 0, f"stamp-sender did not exit cleanly:\n{svc.text()[-2000:]}"
    s = svc.summary()["sessions"][0]
    assert s["sent"] > 50 and s["lost"] == 0 and s["duplicates"] == 0, \
        f"The IPv4 session was disturbed by the IPv6 traffic: {s}"


def test_ipv6_checksums_0_and_wrong_were_counted(lab):
    """Last: the reflector counted the IPv6 requests it refused for their checksum
    (5 rounds of checksum 0 and of a wrong one in the foreign burst)."""
    assert lab.refl.stop() == 0
    counters = lab.refl.summary()["counters"]
    assert counters["bad_checksum"] >= 10, \
        f"IPv6 UDP checksum 0 or wrong must be counted as bad_checksum: {counters}"
