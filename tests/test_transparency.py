"""Traffic that is not ours crosses interfaces with both services attached, untouched.

A stamp-reflector and a stamp-sender (a session every 10 ms) run for the
whole module. Ping and a TCP transfer both ways must work; UDP to other
ports, to port 862 of an address that is not on the reflector's interface,
and from port 862 of another socket than the sender's must arrive with the
very payload that was sent, and never be reflected or stamped.
"""

import os
import socket
import struct

import pytest

import stampnet

pytestmark = pytest.mark.timeout(180)
OTHER_ADDR = "198.18.5.5"        # on the reflector host's lo, not on its interface


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("transparency"))
    topo = lab.topo
    topo.run(topo.reflector, ["ip", "addr", "add", f"{OTHER_ADDR}/32", "dev", "lo"], check=True)
    topo.run(topo.sender, ["ip", "route", "add", f"{OTHER_ADDR}/32", "dev", topo.sender.ifname],
             check=True)
    topo.run(topo.sender, ["ip", "neigh", "replace", OTHER_ADDR, "lladdr", topo.reflector.mac,
                           "dev", topo.sender.ifname, "nud", "permanent"], check=True)
    lab.reflector()
    lab.sending = lab.sender("-i", "0.01")
    yield lab
    lab.close()


def test_ping_both_ways(lab):
    topo = lab.topo
    for src, dst in ((topo.sender, topo.reflector.addr), (topo.reflector, topo.sender.addr)):
        res = topo.run(src, ["ping", "-c", "10", "-i", "0.05", "-W", "1", "-q", dst],
                       capture_output=True, text=True)
        assert res.returncode == 0 and " 0% packet loss" in res.stdout, \
            f"ping {dst} from {src.ns} lost packets with the services attached:\n{res.stdout}{res.stderr}"


def test_tcp_transfer_both_ways(lab):
    """4 MiB to the reflector host over TCP and back, byte for byte."""
    topo = lab.topo
    want, got, back = stampnet.tcp_round_trip(topo.sender, topo.reflector, topo.reflector.addr, 4 << 20)
    assert got == want, "the TCP stream arrived at the reflector host changed or cut"
    assert back == want, \
        "the TCP stream back to the sender host arrived changed or cut"


def stamp_like(seq):
    """A 44-octet payload that looks like a sender's test packet: T1 zero, MBZ zero."""
    return struct.pack("!I", seq) + bytes(40)


def send_and_receive(src_host, src, dst_host, dst, payloads):
    """Send payloads from `src` (addr, port) to `dst`; return what `dst`'s socket got."""
    rx = stampnet.udp_socket(dst_host, dst[1], addr=dst[0])
    tx = stampnet.udp_socket(src_host, src[1], addr=src[0])
    try:
        for p in payloads:
            tx.sendto(p, dst)
        got = [d for d, _ in stampnet.recv_all(rx)]
        back = [d for d, _ in stampnet.recv_all(tx, quiet=0.1)]
    finally:
        rx.close()
        tx.close()
    return got, back


@pytest.mark.parametrize("dport", [861, 863, 8620, 40000])
def test_udp_to_other_ports_of_the_reflector_is_untouched(lab, dport):
    topo = lab.topo
    payloads = [stamp_like(7), os.urandom(44), os.urandom(100), os.urandom(13), os.urandom(1400)]
    got, back = send_and_receive(topo.sender, (topo.sender.addr, 40001), topo.reflector,
                                 (topo.reflector.addr, dport), payloads)
    assert got == payloads, f"UDP to port {dport} did not arrive untouched"
    assert back == [], f"UDP to port {dport} was answered: {back!r}"


def test_udp_to_port_862_of_another_address_is_not_reflected(lab):
    topo = lab.topo
    payloads = [stamp_like(8), stamp_like(9) + bytes(56), os.urandom(44)]
    got, back = send_and_receive(topo.sender, (topo.sender.addr, 40002), topo.reflector,
                                 (OTHER_ADDR, 862), payloads)
    assert got == payloads, "STAMP-port UDP to an address not on the interface was changed"
    assert back == [], "STAMP-port UDP to an address not on the interface was reflected"


def test_port_862_of_another_socket_is_not_stamped(lab):
    """The sender's egress program stamps its own socket's packets only.

    No other UDP socket can bind port 862 beside the sender's (it binds
    without SO_REUSEADDR, so a second sender refuses), so the other socket is
    a packet socket sending UDP frames from port 862; they pass TC egress too.
    """
    from scapy.all import IP, UDP, Ether
    topo = lab.topo
    s, r = topo.sender, topo.reflector
    with pytest.raises(OSError, match="in use"):
        stampnet.udp_socket(s, 862, addr=s.addr).close()
    payloads = [stamp_like(10), stamp_like(11)]
    rx = stampnet.udp_socket(r, 862, addr=OTHER_ADDR)
    tx = stampnet.frame_socket(s)
    try:
        for p in payloads:
            tx.send(bytes(Ether(src=s.mac, dst=r.mac) / IP(src=s.addr, dst=OTHER_ADDR)
                          / UDP(sport=862, dport=862) / p))
        got = [d for d, _ in stampnet.recv_all(rx)]
    finally:
        rx.close()
        tx.close()
    assert got == payloads, "a packet from another socket on port 862 was stamped by the sender"


@pytest.mark.parametrize("sport, dport", [(862, 863), (9999, 861), (862, 40003)])
def test_udp_to_the_sender_host_is_untouched(lab, sport, dport):
    topo = lab.topo
    payloads = [os.urandom(44), bytes(8) + os.urandom(36), os.urandom(300)]
    got, _ = send_and_receive(topo.reflector, (topo.reflector.addr, sport), topo.sender,
                              (topo.sender.addr, dport), payloads)
    assert got == payloads, f"UDP {sport}->{dport} to the sender host did not arrive untouched"


def test_session_was_not_disturbed(lab):
    """Last: stop the sender; its session lost nothing while all of the above ran."""
    svc = lab.sending
    assert svc.stop() == 0, f"stamp-sender did not exit cleanly:\n{svc.text()[-2000:]}"
    s = svc.summary()["sessions"][0]
    assert s["sent"] > 50 and s["lost"] == 0 and s["duplicates"] == 0, \
        f"the STAMP session was disturbed by the other traffic: {s}"
    assert s["received"] + s["late"] >= s["sent"] - 3, f"replies are missing: {s}"
