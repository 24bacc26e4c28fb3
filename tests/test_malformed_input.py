"""A burst of malformed STAMP-port frames neither crashes the services, nor is reflected,
nor disturbs a session running at the same time.

Frames are made by hand (scapy) and sent with AF_PACKET: to the reflector
from the sender's side, and to the sender's port 862 from the reflector's
side (as if from the reflector). Every request carries a marker in its
Sequence Number, so any reflection of one shows up in the capture of the
sender's interface. The only well-formed test packet in the burst, an
oversized one (a full 1500-octet MTU), must be reflected, whole.
"""

import struct
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from stamp_bpf.lab import packets

import stampnet

pytestmark = pytest.mark.timeout(180)
COUNT = 300          # the session's packets, one every 5 ms
ROUNDS = 10          # the burst is sent this many times during the session
BAD = 0xBAD00000     # marker of malformed requests' Sequence Numbers
BIG = 0xB1600000     # marker of the oversized (valid) request
FAKE = 0xFEED0000    # marker of the fake replies sent to the sender


def body(seq, size=44):
    """A sender test packet (MBZ zero) of `size` octets, or its first `size` octets."""
    b = struct.pack("!IIIH", seq, 0xE0000000, 1, 0x0001) + bytes(30)
    return (b + bytes(max(0, size - 44)))[:size]


def to_reflector(topo):
    """[(what, frame)]: malformed requests to the reflector, and one oversized valid one."""
    s, r = topo.sender, topo.reflector
    eth = Ether(src=s.mac, dst=r.mac)
    ip = dict(src=s.addr, dst=r.addr)
    out = []
    for n in range(14):                                   # shorter than TWAMP Light's 14
        out.append((f"{n}-octet payload", eth / IP(**ip) / UDP(sport=50000, dport=862)
                    / body(BAD + n, n)))
    out += [
        ("UDP length beyond the IP packet",
         eth / IP(**ip, len=20 + 8 + 44) / UDP(sport=50000, dport=862, len=8 + 60) / body(BAD + 20)),
        ("UDP length short of the IP packet",
         eth / IP(**ip) / UDP(sport=50000, dport=862, len=8 + 20) / body(BAD + 21)),
        ("IP length beyond the frame",
         eth / IP(**ip, len=200) / UDP(sport=50000, dport=862, len=8 + 172) / body(BAD + 22)),
        ("UDP length 0", eth / IP(**ip) / UDP(sport=50000, dport=862, len=0) / body(BAD + 23)),
        ("IP options", eth / IP(**ip, options=[IPOption_NOP()] * 4)
         / UDP(sport=50000, dport=862) / body(BAD + 24)),
        ("IP header length 4", eth / IP(**ip, ihl=4) / UDP(sport=50000, dport=862) / body(BAD + 25)),
        ("IP version 6 in an IPv4 frame",
         eth / IP(**ip, version=6) / UDP(sport=50000, dport=862) / body(BAD + 26)),
        ("VLAN-tagged", Ether(src=s.mac, dst=r.mac) / Dot1Q(vlan=100) / IP(**ip)
         / UDP(sport=50000, dport=862) / body(BAD + 27)),
        ("IPv6", Ether(src=s.mac, dst=r.mac) / IPv6(src="fd00::1", dst="fd00::2")
         / UDP(sport=50000, dport=862) / body(BAD + 28)),
        ("TCP to port 862", eth / IP(**ip) / TCP(sport=50000, dport=862) / body(BAD + 29)),
        ("a runt frame", Ether(src=s.mac, dst=r.mac, type=0x0800) / bytes(6)),
        ("to another host's MAC address (the kernel drops it: PACKET_OTHERHOST)",
         Ether(src=s.mac, dst="02:11:22:33:44:55") / IP(**ip) / UDP(sport=50000, dport=862)
         / body(BAD + 32)),
        ("from port 862, in the reflector format (a reflection: Receive Timestamp, Sender TTL 64)",
         eth / IP(**ip) / UDP(sport=862, dport=862)
         / (body(BAD + 30)[:16] + b"\x01" * 8 + bytes(16) + b"\x40" + bytes(3))),
    ]
    for i, frag in enumerate(fragment(IP(**ip, flags=0) / UDP(sport=50000, dport=862)
                                      / body(BAD + 31, 100), fragsize=48)):
        out.append((f"fragment {i}", eth / frag))
    out.append(("oversized, a whole MTU (valid: reflected)",
                eth / IP(**ip) / UDP(sport=50001, dport=862) / body(BIG, 1500 - 28)))
    return [(what, bytes(f)) for what, f in out]


def to_sender(topo):
    """[(what, frame)]: malformed 'replies' to the sender's port 862, from the reflector."""
    s, r = topo.sender, topo.reflector
    eth = Ether(src=r.mac, dst=s.mac)
    ip = dict(src=r.addr, dst=s.addr, ttl=255)
    reply = struct.pack("!IIIHH", FAKE, 0xE0000000, 5, 0x1D80, 0) + b"\x01" * 8 \
        + struct.pack("!I", FAKE) + bytes(16)
    out = [(f"{n}-octet reply", eth / IP(**ip) / UDP(sport=862, dport=862) / reply[:n])
           for n in (0, 4, 14, 28, 43)]
    out += [
        ("a reply for a sequence number never sent", eth / IP(**ip) / UDP(sport=862, dport=862) / reply),
        ("an oversized reply", eth / IP(**ip) / UDP(sport=862, dport=862) / (reply + bytes(1400))),
        ("UDP length beyond the IP packet",
         eth / IP(**ip, len=72) / UDP(sport=862, dport=862, len=100) / reply),
        ("reply with IP options", eth / IP(**ip, options=[IPOption_NOP()] * 4)
         / UDP(sport=862, dport=862) / reply),
        ("VLAN-tagged reply", eth / Dot1Q(vlan=7) / IP(**ip) / UDP(sport=862, dport=862) / reply),
        ("IPv6 reply", Ether(src=r.mac, dst=s.mac) / IPv6(src="fd00::2", dst="fd00::1")
         / UDP(sport=862, dport=862) / reply),
    ]
    for i, frag in enumerate(fragment(IP(**ip, flags=0) / UDP(sport=862, dport=862) / reply,
                                      fragsize=24)):
        out.append((f"reply fragment {i}", eth / frag))
    # A reply to the session's packet 0 with a wrong UDP checksum (RFC 1122 4.1.3.4: discard):
    # counted, it is either a duplicate or, arriving first, a reply with corrupted timestamps.
    corrupt = struct.pack("!I", 0) + reply[4:24] + struct.pack("!I", 0) + reply[28:]
    good = eth / IP(**ip) / UDP(sport=862, dport=862) / corrupt
    wrong = stampnet.udp_checksum(bytes(good))[1] ^ 0x0F0F
    out.append(("a reply to packet 0 with a wrong UDP checksum",
                eth / IP(**ip) / UDP(sport=862, dport=862, chksum=wrong) / corrupt))
    return [(what, bytes(f)) for what, f in out]


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    """Run a session, send the burst ROUNDS times during it; return what happened."""
    lab = stampnet.Lab(tmp_path_factory.mktemp("malformed"))
    try:
        topo = lab.topo
        refl = lab.reflector()
        req_frames, rep_frames = to_reflector(topo), to_sender(topo)
        tx_s, tx_r = stampnet.frame_socket(topo.sender), stampnet.frame_socket(topo.reflector)
        with lab.capture(topo.sender, "burst") as frames:
            sender = lab.sender("-c", COUNT, "-i", "0.005")
            for _ in range(ROUNDS):
                for _what, f in req_frames:
                    tx_s.send(f)
                for _what, f in rep_frames:
                    tx_r.send(f)
                time.sleep(0.08)
            rc = sender.wait_exit(60)
            time.sleep(0.3)
        tx_s.close()
        tx_r.close()
        alive = refl.proc.poll() is None
        refl_rc = refl.stop()
        yield dict(topo=topo, frames=frames, sender=sender, sender_rc=rc, reflector=refl,
                   reflector_alive=alive, reflector_rc=refl_rc, requests=req_frames)
    finally:
        lab.close()


def test_services_survive(burst):
    assert burst["reflector_alive"], \
        f"stamp-reflector died during the burst:\n{burst['reflector'].text()[-2000:]}"
    assert burst["reflector_rc"] == 0, f"stamp-reflector exited {burst['reflector_rc']} on SIGTERM"
    assert burst["sender_rc"] == 0, f"stamp-sender exited {burst['sender_rc']}:\n{burst['sender'].text()[-2000:]}"
    for svc in (burst["sender"], burst["reflector"]):
        assert "Traceback" not in svc.text(), f"a service logged a traceback:\n{svc.text()[-3000:]}"


def test_only_valid_test_packets_are_reflected(burst):
    topo = burst["topo"]
    reflected = []
    for _ts, frame in burst["frames"]:
        u = packets.parse_udp4(frame)
        if u and u.src == topo.reflector.addr and u.sport == 862 and len(u.payload) >= 28:
            # The Session-Sender Sequence Number: the sender's in both modes.
            reflected.append((struct.unpack_from("!I", u.payload, 24)[0], len(u.payload)))
    names = {}
    for what, f in burst["requests"]:
        at = f.find(struct.pack("!I", BAD)[:3])        # the marker, wherever the headers end
        if at >= 0 and at + 4 <= len(f):
            names.setdefault(struct.unpack_from("!I", f, at)[0], what)
    bad = sorted({names.get(seq, hex(seq)) for seq, _ in reflected if seq & 0xFFF00000 == BAD})
    assert not bad, f"malformed requests were reflected: {bad}"
    big = [n for seq, n in reflected if seq == BIG]
    assert big == [1472] * ROUNDS, \
        f"the oversized valid request should come back {ROUNDS} times with 1472 octets: {big}"
    counters = burst["reflector"].summary()["counters"]
    assert counters["reflected"] == COUNT + ROUNDS, (
        f"the reflector reflected {counters['reflected']} packets; the session's {COUNT} and the "
        f"{ROUNDS} oversized requests were the only valid ones")


def test_session_is_not_disturbed(burst):
    s = burst["sender"].summary()["sessions"][0]
    counts = (s["sent"], s["received"], s["lost"], s["late"], s["duplicates"])
    assert counts == (COUNT, COUNT, 0, 0, 0), (
        "the session during the burst was disturbed (a duplicate or a changed count means a "
        f"malformed 'reply', such as the one with a wrong UDP checksum, was taken): {s}")
    rt = s["round_trip"]
    assert 0 < rt["min_ns"] <= rt["avg_ns"] <= rt["max_ns"] < 20_000_000, f"insane round trips: {rt}"
    for d in ("near_end", "far_end"):
        assert 0 < s[d]["min_ns"] and s[d]["max_ns"] < 20_000_000, f"insane {d} delays: {s[d]}"
