"""The lab itself: namespaces, link emulator and capture do what the end-to-end tests rely on.

Captures on the sender's and the reflector's interfaces are the truth: the
emulator's delays, drops and reorders must show up there, not only in its log.
"""

import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

import pytest

from stamp_bpf.lab import capture, netns
from stamp_bpf.lab.netns import Topology

pytestmark = pytest.mark.timeout(180)
MS = 1_000_000
# The emulator adds ~0.1 ms to each leg on an idle machine; under heavy load (other
# test suites on 2 cores) up to ~0.7 ms was seen, so upper bounds allow 1 ms.

# A stateless STAMP-like reflector: the reply carries the request's seq at bytes 0 and 24
# (Sequence Number and Session-Sender Sequence Number of RFC 8762 Figure 5).
ECHO = """
import socket, sys
six = len(sys.argv) > 2
s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("::" if six else "0.0.0.0", 862))
open(sys.argv[1], "w").close()
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data[:4] + bytes(20) + data[:4] + bytes(16), peer)
"""

# argv: count interval_s first_seq [src dst]; sends STAMP-like packets (seq + 40 zero bytes) from
# port 862 to the reflector's port 862, prints the seqs echoed back within 1 s of the last.
SEND = """
import socket, struct, sys, time
count, interval, first = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
src, dst = sys.argv[4:6] if len(sys.argv) > 4 else ("198.18.0.1", "198.18.0.2")
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 862))
s.setblocking(False)
got, t0 = [], time.monotonic()
def drain():
    while True:
        try:
            got.append(struct.unpack("!I", s.recv(65535)[:4])[0])
        except BlockingIOError:
            return
for i in range(count):
    s.sendto(struct.pack("!I", first + i) + bytes(40), (dst, 862))
    drain()
    pause = t0 + (i + 1) * interval - time.monotonic()
    if pause > 0:
        time.sleep(pause)
end = time.monotonic() + 1
while time.monotonic() < end and len(got) < count:
    drain()
    time.sleep(0.005)
print(" ".join(map(str, got)))
"""


def start_echo(topo, ipv6=False):
    ready = os.path.join(topo.workdir, "echo.ready")
    proc = topo.popen(topo.reflector, [sys.executable, "-c", ECHO, ready] + (["6"] if ipv6 else []))
    netns.wait_ready(proc, ready, 10, "the UDP echo server")
    return proc


def send_seqs(topo, count, interval, first=0, ipv6=False):
    """Send `count` STAMP-like packets at `interval` s; return the seqs echoed back."""
    ends = [topo.sender.addr6, topo.reflector.addr6] if ipv6 else []
    res = topo.run(topo.sender, [sys.executable, "-c", SEND, count, interval, first, *ends],
                   capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"The UDP sender failed: {res.stderr}"
    return [int(x) for x in res.stdout.split()]


def one_way(sender_pkts, reflector_pkts, sender_addr=None):
    """{seq: forward ns} and {seq: backward ns} from the two captures, lost legs left out."""
    truth = capture.stamp_delays(sender_pkts, reflector_pkts, sender_addr)
    return ({k.seq: d.fwd_ns for k, d in truth.items() if d.fwd_ns is not None},
            {k.seq: d.back_ns for k, d in truth.items() if d.back_ns is not None})


def captured(topo, fn):
    """Run fn() with captures on both ends; return its result and the STAMP packets seen."""
    paths = [os.path.join(topo.workdir, f"{h}.pcap") for h in ("sender", "reflector")]
    with capture.start(topo, topo.sender, paths[0]), capture.start(topo, topo.reflector, paths[1]):
        result = fn()
    return (result, *(capture.stamp_packets(capture.read_pcap(p)) for p in paths))


def emulator_log(topo):
    topo.stop_emulator()
    with open(topo.emulator_log) as f:
        return [json.loads(line) for line in f]


def test_ipv6_frames_are_delayed_dropped_and_captured_like_ipv4():
    with Topology("emulated", ipv6=True, emulator_args=[
            "--fwd-delay", "3ms", "--back-delay", "7ms", "--drop", "fwd:4", "--drop", "back:9"]) as topo:
        start_echo(topo, ipv6=True)
        got, s_pkts, r_pkts = captured(topo, lambda: send_seqs(topo, 20, 0.01, ipv6=True))
        log = emulator_log(topo)
    assert sorted(got) == [i for i in range(20) if i not in (4, 9)], \
        f"Every IPv6 echo but the dropped 4 (forward) and 9 (back) should come back: {got}."
    fwd, back = one_way(s_pkts, r_pkts, topo.sender.addr6)
    assert sorted(fwd) == [i for i in range(20) if i != 4] and 9 not in back and len(back) == 18, \
        f"The captures must show the IPv6 drops where they happened: fwd {sorted(fwd)}, back {sorted(back)}."
    assert min(fwd.values()) >= 3 * MS and min(back.values()) >= 7 * MS, \
        "No IPv6 packet may beat its direction's delay."
    drops = sorted((e["dir"], e["seq"]) for e in log if e["event"] == "drop")
    assert drops == [("back", 9), ("fwd", 4)], f"The emulator logs exactly its IPv6 drops: {drops}."
    assert {e["src"] for e in log if e["event"] == "forward"} == {"2001:2::1", "2001:2::2"}, \
        "The emulator's log names IPv6 sources as they are."


def test_emulated_delays_show_in_captures_on_both_sides():
    with Topology("emulated", emulator_args=["--fwd-delay", "3ms", "--back-delay", "7ms"]) as topo:
        start_echo(topo)
        got, s_pkts, r_pkts = captured(topo, lambda: send_seqs(topo, 50, 0.01))
        log = emulator_log(topo)
    assert sorted(got) == list(range(50)), f"Every echo should come back, got {got}."
    fwd, back = one_way(s_pkts, r_pkts)
    assert len(fwd) == len(back) == 50, "Both captures should hold all 50 packets each way."
    assert min(fwd.values()) >= 3 * MS, \
        f"No forward packet may beat the 3 ms delay: {min(fwd.values())} ns."
    assert min(back.values()) >= 7 * MS, \
        f"No backward packet may beat the 7 ms delay: {min(back.values())} ns."
    fwd_med, back_med = statistics.median(fwd.values()), statistics.median(back.values())
    assert fwd_med < 4 * MS, \
        f"The forward delay should be about 3 ms, its median is {fwd_med / MS:.3f} ms."
    assert back_med < 8 * MS, \
        f"The backward delay should be about 7 ms, its median is {back_med / MS:.3f} ms."
    forwarded = [e for e in log if e["event"] == "forward"]
    assert len(forwarded) == 100 and log[-1]["event"] == "summary", \
        "The emulator log should list 100 forwarded STAMP frames and end with its summary."
    assert log[-1]["socket_drops_fwd"] == log[-1]["socket_drops_back"] == 0, \
        f"The emulator's sockets should not drop frames: {log[-1]}."


def test_chosen_seqs_are_dropped_and_nothing_else():
    args = ["--drop", "fwd:3,5", "--drop", "back:7", "--fwd-delay", "1ms"]
    with Topology("emulated", emulator_args=args) as topo:
        start_echo(topo)
        got, s_pkts, r_pkts = captured(topo, lambda: send_seqs(topo, 10, 0.005))
        log = emulator_log(topo)
    assert sorted(got) == [0, 1, 2, 4, 6, 8, 9], \
        f"Echoes of 3, 5 (lost forward) and 7 (lost backward) should be missing: {got}."
    reached = sorted(p.seq for p in r_pkts if p.dst == netns.REFLECTOR_ADDR)
    assert reached == [0, 1, 2, 4, 6, 7, 8, 9], \
        f"The reflector's capture should miss exactly 3 and 5: {reached}."
    drops = sorted((e["dir"], e["seq"]) for e in log if e["event"] == "drop")
    assert drops == [("back", 7), ("fwd", 3), ("fwd", 5)], \
        f"The log should record the three drops: {drops}."
    truth = {k.seq: d for k, d in capture.stamp_delays(s_pkts, r_pkts).items()}
    assert sorted(truth) == list(range(10)), "stamp_delays should list every packet sent."
    assert truth[3] == truth[5] == (None, None), "A packet lost forward has neither delay."
    assert truth[7].fwd_ns > MS and truth[7].back_ns is None, \
        "A reply lost backward has only a forward delay."


def test_drop_probability_is_seeded_and_agrees_with_the_captures():
    args = ["--drop-prob", "fwd:0.3", "--seed", "42"]
    runs = []
    with Topology("emulated", emulator_args=args) as topo:
        start_echo(topo)
        for _ in range(2):              # the second run restarts the emulator, same seed
            _, _, r_pkts = captured(topo, lambda: send_seqs(topo, 40, 0.002))
            log = emulator_log(topo)
            dropped = sorted(e["seq"] for e in log if e["event"] == "drop")
            reached = {p.seq for p in r_pkts if p.dst == netns.REFLECTOR_ADDR}
            assert sorted(set(range(40)) - reached) == dropped, \
                f"The seqs missing at the reflector should be the ones logged as dropped: {dropped}."
            runs.append(dropped)
            topo.start_emulator(args)
    assert 3 <= len(runs[0]) <= 25, f"About 30% of 40 packets should be dropped, not {len(runs[0])}."
    assert runs[0] == runs[1], f"The same seed should drop the same packets: {runs}."


def test_delay_seq_makes_one_packet_late_and_reorder_swaps_two():
    args = ["--delay-seq", "back:4=300ms", "--reorder", "fwd:2"]
    with Topology("emulated", emulator_args=args) as topo:
        start_echo(topo)
        got, s_pkts, r_pkts = captured(topo, lambda: send_seqs(topo, 8, 0.01))
    at_reflector = [p.seq for p in r_pkts if p.dst == netns.REFLECTOR_ADDR]
    assert at_reflector == [0, 1, 3, 2, 4, 5, 6, 7], \
        f"2 should reach the reflector just after 3: {at_reflector}."
    back_order = [p.seq for p in s_pkts if p.dst == netns.SENDER_ADDR]
    assert back_order[-1] == 4, f"The reply to 4 should come back last: {back_order}."
    _, back = one_way(s_pkts, r_pkts)
    assert 300 * MS <= back[4] < 400 * MS, \
        f"Reply 4 should take 300 ms more, took {back[4] / MS:.1f} ms."
    assert max(v for k, v in back.items() if k != 4) < 50 * MS, "Only reply 4 should be held back."


def test_jitter_spreads_delays_without_reordering():
    args = ["--fwd-delay", "2ms", "--jitter", "1ms", "--seed", "3"]
    with Topology("emulated", emulator_args=args) as topo:
        start_echo(topo)
        _, s_pkts, r_pkts = captured(topo, lambda: send_seqs(topo, 200, 0.001))
    at_reflector = [p.seq for p in r_pkts if p.dst == netns.REFLECTOR_ADDR]
    assert at_reflector == sorted(at_reflector) and len(at_reflector) == 200, \
        "Jitter must never reorder: the reflector should see 0..199 in order."
    fwd, _ = one_way(s_pkts, r_pkts)
    spread = max(fwd.values()) - min(fwd.values())
    assert min(fwd.values()) >= 1 * MS and spread >= 1 * MS, \
        f"A +-1 ms jitter on 2 ms should spread delays by over 1 ms, spread {spread / MS:.3f} ms."


def test_relay_keeps_up_with_2000_packets_per_second():
    with Topology("emulated", emulator_args=["--fwd-delay", "1ms", "--back-delay", "1ms"]) as topo:
        start_echo(topo)
        got = send_seqs(topo, 2000, 0.0005)
        log = emulator_log(topo)
    summary = log[-1]
    assert len(got) == 2000, f"All 2000 echoes should come back at 2000/s, {len(got)} did: {summary}."
    assert summary["stamp_fwd"] == summary["stamp_back"] == 2000, f"Emulator counters: {summary}."
    arrivals = [e["rx_ns"] for e in log if e.get("dir") == "fwd"]
    rate = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1e9)
    assert rate > 1500, f"The test should offer about 2000 packets/s each way, it offered {rate:.0f}/s."
    late = [e for e in log if e.get("event") == "forward" and e["tx_ns"] - e["rx_ns"] > 20 * MS]
    assert len(late) < 20, f"The relay should keep pace, yet {len(late)} frames waited over 20 ms."


def test_arp_icmp_tcp_and_malformed_frames_pass():
    with Topology("emulated", static_neigh=False,
                  emulator_args=["--fwd-delay", "3ms", "--back-delay", "7ms"]) as topo:
        ready = os.path.join(topo.workdir, "tcp.ready")
        server = topo.popen(topo.reflector, [sys.executable, "-c", (
            "import socket, sys\n"
            "s = socket.create_server(('198.18.0.2', 5000))\n"
            "open(sys.argv[1], 'w').close()\n"
            "c, _ = s.accept()\n"
            "while data := c.recv(65536):\n"
            "    c.sendall(data)\n"), ready])
        netns.wait_ready(server, ready, 10, "the TCP echo server")
        path = os.path.join(topo.workdir, "reflector.pcap")
        with capture.start(topo, topo.reflector, path):
            ping = topo.run(topo.sender, ["ping", "-c", "1", "-W", "2", topo.reflector.addr],
                            capture_output=True, text=True)
            tcp = topo.run(topo.sender, [sys.executable, "-c", (
                "import socket\n"
                "payload = bytes(range(256)) * 400\n"
                "c = socket.create_connection(('198.18.0.2', 5000), timeout=10)\n"
                "c.sendall(payload); c.shutdown(socket.SHUT_WR)\n"
                "back = b''\n"
                "while data := c.recv(65536):\n"
                "    back += data\n"
                "assert back == payload, len(back)\n")], capture_output=True, text=True)
            # IPv4/UDP whose header length (60 bytes) runs past the end of the frame
            bad_frame = (b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00" + b"\x4f" + bytes(8) + b"\x11"
                         + bytes(10) + b"\x03\x5e\x03\x5e" + bytes(12))
            bad = topo.run(topo.sender, [sys.executable, "-c", (
                "import socket, sys\n"
                "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
                "s.bind((sys.argv[1], 0))\n"
                "s.send(bytes.fromhex(sys.argv[2]))\n"), topo.sender.ifname, bad_frame.hex()],
                capture_output=True, text=True)
            time.sleep(0.05)
        frames = capture.read_pcap(path)
        log = emulator_log(topo)
    assert ping.returncode == 0, f"Ping over the emulated link should succeed: {ping.stdout}{ping.stderr}"
    rtt = float(ping.stdout.split("time=")[1].split()[0])
    assert rtt >= 20, f"The first ping waits 3+7 ms for ARP, then 3+7 ms, so >= 20 ms, not {rtt} ms."
    assert any(f[12:14] == b"\x08\x06" for _, f in frames), "The reflector should have seen an ARP frame."
    assert tcp.returncode == 0, f"100 KiB over TCP should echo back intact: {tcp.stderr}"
    assert any(f[12:14] == b"\x08\x00" and f[23] == 6 for _, f in frames), "The capture should hold TCP."
    assert bad.returncode == 0 and any(f == bad_frame for _, f in frames), \
        "A truncated frame should pass the relay untouched."
    assert log[-1]["event"] == "summary" and not [e for e in log if e["event"] != "summary"], \
        f"No STAMP frame was sent, so the emulator log should only hold its summary: {log}."


def test_capture_is_what_tshark_reads_with_valid_checksums():
    with Topology("direct") as topo:
        start_echo(topo)
        got, s_pkts, _ = captured(topo, lambda: send_seqs(topo, 5, 0.01))
        path = os.path.join(topo.workdir, "sender.pcap")
        frames = capture.read_pcap(path)
        res = subprocess.run(["tshark", "-r", path, "-T", "fields", "-e", "frame.time_epoch",
                              "-e", "frame.len", "-e", "ip.ttl", "-e", "udp.checksum.status",
                              "-o", "udp.check_checksum:TRUE"],
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"tshark should read the capture: {res.stderr}"
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    assert len(rows) == len(frames) == 10, f"tshark and read_pcap should both see 10 frames: {rows}."
    for (ts_ns, frame), (epoch, length, _ttl, _status) in zip(frames, rows):
        sec, nsec = epoch.split(".")
        assert int(sec) * 10**9 + int(nsec.ljust(9, "0")) == ts_ns, \
            f"tshark reads {epoch}, read_pcap {ts_ns}: the timestamps should be identical."
        assert int(length) == len(frame), "tshark and read_pcap should agree on frame lengths."
    statuses = {row[3] for row in rows}
    assert statuses == {"1"}, f"Every UDP checksum should be complete and good (tshark status 1): {statuses}."
    assert [p.ttl for p in s_pkts] == [int(r[2]) for r in rows], "TTLs should match tshark's."
    assert [(p.sport, p.dport, p.seq) for p in s_pkts[:2]] == [(862, 862, 0), (862, 862, 0)], \
        "The first request and its echo should be seq 0 between ports 862."


def test_direct_shape_extra_addresses_and_names():
    with Topology("direct", extra_addrs=300) as topo:
        names = [topo.sender.ifname, topo.reflector.ifname]
        extra = topo.reflector.extra_addrs
        ping = topo.run(topo.sender, ["ping", "-c", "1", "-W", "2", extra[-1]], capture_output=True)
        offload = topo.run(topo.reflector, ["ethtool", "-k", topo.reflector.ifname],
                           capture_output=True, text=True).stdout
        lo = [json.loads(topo.run(h, ["ip", "-j", "link", "show", "lo"], capture_output=True,
                                  text=True).stdout)[0]["flags"] for h in topo.hosts]
    assert all(len(n) <= 15 and n.startswith(topo.prefix) for n in names), f"Bad interface names: {names}."
    assert len(set(extra)) == 300 and extra[0] == "198.19.0.1", f"Unexpected extra addresses: {extra[:3]}."
    assert not any(a.endswith((".0", ".255")) for a in extra), "Extra addresses should skip .0 and .255."
    assert ping.returncode == 0, f"The sender should reach the reflector's extra address {extra[-1]}."
    assert "tx-checksumming: off" in offload, "TX checksum offload should be off on every veth end."
    assert all("UP" in flags for flags in lo), f"lo should be up in every namespace: {lo}."


def test_teardown_leaves_nothing_behind_even_when_the_body_raises():
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n"
    with pytest.raises(ZeroDivisionError):
        with Topology("emulated", stop_timeout=0.5) as topo:
            procs = [topo.popen(topo.sender, ["sleep", "600"]),
                     topo.popen(topo.reflector, [sys.executable, "-c", stubborn])]
            # a child that ignores SIGTERM, in the caller's namespace: only its group reaches it
            child_pid = os.path.join(topo.workdir, "child.pid")
            procs.append(topo.popen(None, ["sh", "-c", f"(trap '' TERM; exec sleep 600) & "
                                                       f"echo $! > {child_pid}; wait"]))
            # a process the topology never started, left running in a namespace
            subprocess.Popen(["ip", "netns", "exec", topo.reflector.ns, "sleep", "600"],
                             start_new_session=True)
            time.sleep(0.3)
            stray = subprocess.run(["ip", "netns", "pids", topo.reflector.ns],
                                   capture_output=True, text=True).stdout.split()
            stray.append(open(child_pid).read().strip())
            emulator = topo.emulator
            1 / 0
    assert netns.list_namespaces(topo.prefix) == [], "Every namespace of the topology should be gone."
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert topo.prefix not in links, "No interface of the topology should be left in the root namespace."
    assert all(p.returncode is not None for p in procs + [emulator]), "Every started process should be reaped."
    alive = [pid for pid in stray if os.path.exists(f"/proc/{pid}") and
             "Z" not in open(f"/proc/{pid}/stat").read().split()[2]]
    assert alive == [], f"Processes left in a namespace or in a stopped process group should be killed: {alive}."
    assert not os.path.exists(topo.workdir), "The temporary work folder should be removed."


def test_a_failing_build_leaves_nothing_behind():
    topo = Topology("emulated", emulator_args=["--drop", "sideways:1"])
    with pytest.raises(RuntimeError, match="sideways:1"):
        with topo:
            pass
    assert netns.list_namespaces(topo.prefix) == [], \
        "An emulator that refuses its flags should leave no namespace behind."
    with pytest.raises(ValueError):
        Topology("direct", emulator_args=["--fwd-delay", "1ms"])


def test_cleanup_removes_what_a_crashed_run_left():
    topo = Topology("emulated").__enter__()     # as if the run died before __exit__
    try:
        removed = netns.cleanup(topo.prefix)
        assert sorted(removed) == sorted(h.ns for h in topo.hosts), f"cleanup removed {removed}."
        assert netns.list_namespaces(topo.prefix) == [], "No namespace should be left after cleanup."
    finally:
        topo.close()
    with pytest.raises(ValueError):
        netns.cleanup("s")


def test_emulator_rejects_bad_flags_with_one_clear_line():
    for flag, value in (("--drop", "up:3"), ("--fwd-delay", "3 parsecs"), ("--drop-prob", "fwd:2")):
        res = subprocess.run([sys.executable, "-m", "stamp_bpf.lab.emulator", "a", "b", flag, value],
                             capture_output=True, text=True, timeout=30)
        last = res.stderr.strip().splitlines()[-1]
        assert res.returncode == 2 and value in last and "Traceback" not in res.stderr, \
            f"{flag} {value} should be refused in one line naming the value, got: {res.stderr}"


def udp_frame(payload, sport=862, dport=862, ttl=64, frag=0, pad=0):
    """An Ethernet/IPv4/UDP frame as a NIC would carry it (checksums left zero)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, frag, ttl, 17, 0,
                     socket.inet_aton("198.18.0.1"), socket.inet_aton("198.18.0.2"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp + bytes(pad)


def test_parse_udp4_takes_what_the_headers_say_and_nothing_else():
    from stamp_bpf.lab import packets
    u = packets.parse_udp4(udp_frame(struct.pack("!I", 7) + b"xy", ttl=3, pad=12))
    assert u == packets.Udp("198.18.0.1", "198.18.0.2", 862, 862, 3, struct.pack("!I", 7) + b"xy"), \
        f"Ethernet padding must not become payload: {u}"
    assert packets.stamp_seq(u, 862) == 7 and packets.stamp_seq(u, 863) is None, \
        "The STAMP seq is read only for the STAMP port."
    tagged = udp_frame(bytes(44))[:12] + b"\x81\x00\x00\x05" + udp_frame(bytes(44))[12:]
    for name, frame in (("a later fragment", udp_frame(bytes(44), frag=0x0010)),
                        ("a VLAN-tagged frame", tagged),
                        ("a frame cut inside the UDP header", udp_frame(bytes(44))[:40]),
                        ("ARP", b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28))):
        assert packets.parse_udp4(frame) is None, f"{name} should not parse as IPv4/UDP."


def udp6_frame(payload, sport=862, dport=862, hlim=64, nh=17, pad=0, check=0x1234):
    """An Ethernet/IPv6/UDP frame (UDP checksum as given, not computed)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), check) + payload
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(udp), nh, hlim,
                     socket.inet_pton(socket.AF_INET6, "2001:2::1"),
                     socket.inet_pton(socket.AF_INET6, "2001:2::2"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip + udp + bytes(pad)


def test_parse_udp6_takes_udp_right_after_the_ipv6_header_and_nothing_else():
    from stamp_bpf.lab import packets
    u = packets.parse_udp(udp6_frame(struct.pack("!I", 9) + b"z", hlim=5, pad=7))
    assert u == packets.Udp("2001:2::1", "2001:2::2", 862, 862, 5, struct.pack("!I", 9) + b"z",
                            0x1234), f"An IPv6/UDP frame decodes with its Hop Limit: {u}"
    assert packets.stamp_seq(u, 862) == 9
    assert packets.parse_udp(udp_frame(bytes(4))).src == "198.18.0.1", \
        "parse_udp reads IPv4 as well."
    for name, frame in (("a hop-by-hop header first", udp6_frame(bytes(44), nh=0)),
                        ("a fragment header first", udp6_frame(bytes(44), nh=44)),
                        ("TCP", udp6_frame(bytes(44), nh=6)),
                        ("a frame cut inside the UDP header", udp6_frame(bytes(44))[:60])):
        assert packets.parse_udp6(frame) is None and packets.parse_udp(frame) is None, \
            f"{name} should not parse as IPv6/UDP."


def test_read_pcap_reads_both_resolutions_and_byte_orders(tmp_path):
    frames = [(1_700_000_000_123_456_789, udp_frame(bytes(44))), (1_700_000_001_000_000_001, b"\x00" * 60)]
    ns_path = tmp_path / "ns.pcap"
    with open(ns_path, "wb") as f:
        capture.write_header(f)
        for ts, frame in frames:
            capture.write_record(f, ts, frame)
        f.write(struct.pack("<IIII", 1, 2, 100, 100) + b"cut short")   # a crash mid-record
    assert capture.read_pcap(ns_path) == frames, "A ns pcap should read back exactly, minus the cut record."
    us_path = tmp_path / "us-big-endian.pcap"
    with open(us_path, "wb") as f:
        f.write(struct.pack(">IHHiIII", capture.PCAP_MAGIC_US, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            f.write(struct.pack(">IIII", ts // 10**9, ts % 10**9 // 1000, len(frame), len(frame)) + frame)
    assert capture.read_pcap(us_path) == [(ts // 1000 * 1000, fr) for ts, fr in frames], \
        "A big-endian microsecond pcap should read back to the microsecond."
    (tmp_path / "junk").write_bytes(b"not a pcap at all, really not")
    with pytest.raises(ValueError, match="not a classic pcap"):
        capture.read_pcap(tmp_path / "junk")
