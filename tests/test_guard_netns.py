"""Whom the reflector answers, on the wire: real BPF, real namespaces, TX offload off.

One reflector with --allow-file and a rate limit serves the module; the sender
host has three addresses, 198.18.0.1 and .11 inside the allowed prefixes and
.21 outside. The counts are read from the reflector's DropCount records on its
ZeroMQ stream, as its exporter reads them.

  [sender 198.18.0.1, .11, .21] <-veth-> [reflector 198.18.0.2, iptables INPUT DROP 862]
"""

import os
import signal
import socket
import threading
import time

import pytest

from stamp_bpf.common import records, wire
from stamp_bpf.common.recordpipe import RecordPuller
from stamp_bpf.lab import packets
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

import stampnet

pytestmark = [pytest.mark.timeout(300)]

INSIDE, INSIDE2, OUTSIDE = "198.18.0.11", "198.18.0.12", "198.18.0.21"
FIRST_LIST = "# the lab\n198.18.0.0/28\n"
MAX_RATE, BURST = 200, 20
SUBNET_BROADCAST = "198.18.0.255"      # the lab's 198.18.0.0/24


class Drops:
    """The reflector's latest DropCount per reason, from its record stream."""

    def __init__(self, endpoint):
        self.puller = RecordPuller(endpoint)
        self.counts = dict.fromkeys(records.DROP_REASONS, 0)

    def poll(self):
        while (msg := self.puller.recv(0)) is not None:
            for rec in records.decode(msg):
                if isinstance(rec, records.DropCount):
                    self.counts[rec.reason] = rec.count
        return dict(self.counts)

    def wait(self, reason, value, timeout=15):
        deadline = time.monotonic() + timeout
        while self.poll()[reason] != value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{reason} stayed {self.counts[reason]}, expected {value}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("guard"))
    drops = Drops(lab.zmq)
    s, r = lab.topo.sender, lab.topo.reflector
    for addr in (INSIDE, INSIDE2, OUTSIDE):
        lab.topo.run(s, ["ip", "addr", "add", f"{addr}/24", "dev", s.ifname], check=True)
    # The host firewall drops every datagram to port 862 that reaches the stack.
    lab.topo.run(r, ["iptables", "-A", "INPUT", "-p", "udp", "--dport", "862", "-j", "DROP"],
                 check=True)
    allow = lab.workdir / "allowed-sources"
    allow.write_text(FIRST_LIST)
    lab.allow = allow
    lab.drops = drops
    lab.refl = lab.reflector("--allow-file", allow, "--max-rate", MAX_RATE, "--burst", BURST)
    yield lab
    drops.puller.close()
    lab.close()


def sock_from(lab, addr):
    s = stampnet.udp_socket(lab.topo.sender, addr=addr)
    # Room for every reply of a test (about 800 at up to 1 KiB of truesize each):
    # a receiving thread starved of the GIL by the sending loop must not lose any
    # to a full buffer, or the count would blame the rate limit.
    s.setsockopt(socket.SOL_SOCKET, packets.SO_RCVBUFFORCE, 4 << 20)
    return s


def ping(lab, addr, n=20, size=wire.BASE_LEN):
    """Send n test packets from addr; the replies that came back."""
    s = sock_from(lab, addr)
    try:
        for seq in range(n):
            s.sendto(wire.build_sender_packet(seq, size=size), (lab.topo.reflector.addr, 862))
            time.sleep(0.002)
        return stampnet.recv_all(s)
    finally:
        s.close()


def rewrite(path, text):
    tmp = f"{path}.new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def test_outside_the_list_nothing_comes_back_and_is_counted_inside_everything(lab):
    base = lab.drops.poll()["not_allowed"]
    assert len(ping(lab, INSIDE)) == 20, "A sender inside the prefixes gets every reply."
    assert ping(lab, OUTSIDE) == [], "A sender outside the prefixes gets nothing back."
    lab.drops.wait("not_allowed", base + 20)


def test_refused_packets_go_to_the_stack_where_the_firewall_applies(lab):
    def dropped_by_iptables():
        out = lab.topo.run(lab.topo.reflector, ["iptables", "-L", "INPUT", "-v", "-x", "-n"],
                           capture_output=True, text=True, check=True).stdout
        return int(next(line for line in out.splitlines() if "dpt:862" in line).split()[0])
    before = dropped_by_iptables()
    assert len(ping(lab, INSIDE, n=5)) == 5, (
        "An allowed sender is answered despite iptables DROP on INPUT: TC ingress runs "
        "before netfilter.")
    assert dropped_by_iptables() == before, "Reflected packets never reach netfilter."
    ping(lab, OUTSIDE, n=5)
    assert dropped_by_iptables() == before + 5, \
        "Refused packets pass on to the stack untouched, where the firewall drops them."


def test_a_new_list_applies_without_restart_and_the_session_goes_on(lab):
    refl = lab.refl
    sender = lab.start(lab.topo.sender, "stamp-sender", lab.topo.sender.ifname,
                       lab.topo.reflector.addr, "--interval", "0.02", "--count", "300",
                       ready="sending")
    time.sleep(1.5)
    reloads = len(refl.events("allow_list_reloaded"))
    rewrite(lab.allow, "198.18.0.1/32\n198.18.0.16/28\n")
    os.kill(refl.proc.pid, signal.SIGHUP)
    ev = stampnet_wait(refl, "allow_list_reloaded", reloads + 1)
    assert ev["why"] == "SIGHUP" and set(ev["added"]) == {"198.18.0.1/32", "198.18.0.16/28"}
    assert len(ping(lab, OUTSIDE)) == 20, "The newly allowed prefix is answered at once."
    assert ping(lab, INSIDE) == [], "The removed prefix is refused at once."
    # A change of the file alone is taken too (Kubernetes sends no signal).
    rewrite(lab.allow, "198.18.0.1/32\n" + FIRST_LIST)
    ev = stampnet_wait(refl, "allow_list_reloaded", reloads + 2)
    assert ev["why"] == "file_changed"
    assert len(ping(lab, INSIDE)) == 20 and ping(lab, OUTSIDE) == []
    assert sender.wait_exit(60) == 0
    summary = sender.summary()
    counts = summary["sessions"][0]
    assert counts["received"] == 300 and counts["lost"] == 0, (
        f"The session from 198.18.0.1, in every list, loses nothing over two reloads: {counts}")
    assert refl.proc.poll() is None and len(refl.events("reflecting")) == 1, \
        "The reflector was not restarted."
    rewrite(lab.allow, FIRST_LIST)
    stampnet_wait(refl, "allow_list_reloaded", reloads + 3)


def stampnet_wait(svc, name, count, timeout=10):
    deadline = time.monotonic() + timeout
    while len(found := svc.events(name)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count}th {name} event:\n{svc.text()[-2000:]}")
        time.sleep(0.1)
    return found[count - 1]


def test_ten_times_the_limit_gets_the_limit_and_a_normal_sender_loses_nothing(lab):
    flood, calm = sock_from(lab, INSIDE), sock_from(lab, INSIDE2)
    got = {"flood": 0, "calm": 0}
    stop = threading.Event()

    def receive(sock, key):
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sock.recv(2048)
                got[key] += 1
            except (TimeoutError, socket.timeout):
                pass
    threads = [threading.Thread(target=receive, args=a) for a in ((flood, "flood"),
                                                                   (calm, "calm"))]
    for t in threads:
        t.start()
    time.sleep(1.0)              # the previous tests' tokens come back
    base = lab.drops.poll()["rate_limited"]
    dest = (lab.topo.reflector.addr, 862)
    rate, seconds = 10 * MAX_RATE, 4.0
    sent = {"flood": 0, "calm": 0}
    start = time.perf_counter()
    while (now := time.perf_counter() - start) < seconds:
        if sent["flood"] < now * rate:
            flood.sendto(wire.build_sender_packet(sent["flood"]), dest)
            sent["flood"] += 1
            if sent["flood"] % 40 == 0:          # 50 packets/s, a quarter of the limit
                calm.sendto(wire.build_sender_packet(sent["calm"]), dest)
                sent["calm"] += 1
    elapsed = time.perf_counter() - start
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    flood.close()
    calm.close()
    expected = MAX_RATE * elapsed + BURST
    print(f"flood: {sent['flood']} sent in {elapsed:.2f} s, {got['flood']} back "
          f"(limit gives {expected:.0f}); calm: {sent['calm']} sent, {got['calm']} back")
    assert sent["flood"] >= 0.9 * rate * seconds, "The flood ran at ten times the limit."
    assert abs(got["flood"] - expected) <= 0.1 * expected, (
        f"A sender at 10x the limit gets the limit within 10%: {got['flood']} replies, "
        f"expected {expected:.0f}.")
    assert got["calm"] == sent["calm"], "A sender at a normal rate loses nothing."
    lab.drops.wait("rate_limited", base + sent["flood"] - got["flood"])


def test_never_reflected_on_the_wire(lab):
    s, r = lab.topo.sender, lab.topo.reflector
    base = lab.drops.poll()
    cases = [("own address", r.addr, 40000), ("multicast", "224.0.0.5", 40000),
             ("port 0", "198.18.0.1", 0), ("its subnet broadcast", SUBNET_BROADCAST, 40000),
             ("the limited broadcast", "255.255.255.255", 40000),
             ("the unspecified address", "0.0.0.0", 40000), ("class E", "240.0.0.1", 40000)]
    with lab.capture(s, "never") as frames:
        raw = stampnet.frame_socket(s)
        try:
            for _, src, sport in cases:
                raw.send(bytes(Ether(src=s.mac, dst=r.mac) / IP(src=src, dst=r.addr)
                               / UDP(sport=sport, dport=862) / wire.build_sender_packet(1)))
            short = sock_from(lab, INSIDE)
            short.sendto(wire.build_sender_packet(1)[:20], (r.addr, 862))
            assert stampnet.recv_all(short) == [], \
                "A 20-octet request gets no 44-octet reply (larger than itself)."
            short.close()
        finally:
            raw.close()
    replies = [u for _, u in stampnet.udp_frames(frames) if u.sport == 862]
    assert replies == [], f"None of {[c[0] for c in cases]} is answered: {replies}"
    lab.drops.wait("bad_source", base["bad_source"] + len(cases))
    lab.drops.wait("too_short", base["too_short"] + 1)


def test_the_subnet_broadcast_is_known_without_brd(lab):
    """`ip addr add A/24` without `brd +` leaves no IFA_BROADCAST; the kernel still
    routes the prefix's last address as broadcast, so the guard must know it."""
    out = lab.topo.run(lab.topo.reflector, ["ip", "-4", "-o", "addr", "show", "dev",
                                            lab.topo.reflector.ifname],
                       capture_output=True, text=True, check=True).stdout
    assert " brd " not in out, f"the lab's address should have no brd here: {out}"
    code = ("from stamp_bpf.common import netif; "
            f"print(netif.other_ipv4_addresses({lab.topo.reflector.ifname!r}))")
    got = lab.topo.run(lab.topo.reflector, [os.path.join(os.path.dirname(os.sys.executable),
                                                         "python"), "-c", code],
                       capture_output=True, text=True, check=True).stdout
    assert SUBNET_BROADCAST in got, f"the subnet broadcast is not among {got}"
