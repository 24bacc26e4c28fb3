"""Reflected packets on the wire, decoded by scapy and tshark, follow RFC 8762 section 4.3.

Requests are sent from plain UDP sockets in the sender namespace (no
stamp-sender runs there, so the replies reach those sockets); the sender's
interface is captured and the replies are decoded by scapy's
scapy.contrib.stamp and by tshark's TWAMP-Test dissector, not by our code.
"""

import os
import signal
import socket
import struct
import subprocess
import threading
import time
from decimal import Decimal

import pytest
from scapy.contrib.stamp import STAMPSessionReflectorTestUnauthenticated as ScapyReflected
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from stamp_bpf.common import clock, wire
from stamp_bpf.lab import packets

import stampnet

pytestmark = pytest.mark.timeout(180)
NTP_ERA0 = 2208988800
REQ_TS = (0xE000_0001, 0x8000_0000)      # the sender's Timestamp we put in requests
REQ_EE = 0x0A05                          # S=0 Z=0 scale 10 multiplier 5
SLACK_NS = 2_000                         # capture vs BPF timestamp rounding


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("reflect"), extra_addrs=1)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def ntp_reflector(lab):
    return lab.reflector()


def request(seq, size=44, ts=REQ_TS, ee=REQ_EE, tail=b""):
    """A Session-Sender packet of `size` octets: MBZ zero, then `tail` from octet 44."""
    head = struct.pack("!IIIH", seq, ts[0], ts[1], ee)
    body = head + bytes(max(0, min(size, 44) - len(head))) + tail
    return body[:size] if size < 44 else body + bytes(size - len(body))


def exchange(lab, sends, name, ttl=64):
    """Send [(payload, dest, ttl)] from UDP port 862 of the sender; return the frames
    captured on the sender's interface and the datagrams its socket got back."""
    topo = lab.topo
    sock = stampnet.udp_socket(topo.sender, 862)
    try:
        with lab.capture(topo.sender, name) as frames:
            for payload, dest, t in sends:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, t or ttl)
                sock.sendto(payload, dest)
            got = stampnet.recv_all(sock)
    finally:
        sock.close()
    return frames, got


def split(frames, reflector, port=862):
    """({seq: (ts_ns, Udp)} requests to the reflector, {sender seq: (ts_ns, Udp4, frame)} replies)."""
    reqs, reps = {}, {}
    for ts, frame in frames:
        u = packets.parse_udp4(frame)
        if u is None or len(u.payload) < 4:
            continue
        if u.dst == reflector and u.dport == port:
            reqs[struct.unpack_from("!I", u.payload)[0]] = (ts, u)
        elif u.src == reflector and u.sport == port and len(u.payload) >= 28:
            reps[struct.unpack_from("!I", u.payload, 24)[0]] = (ts, u, frame)
    return reqs, reps


def tshark_replies(pcap, src, port=862):
    """{sender seq: {field: int}} of the replies from `src`, as tshark decodes them."""
    fields = ["seq_number", "sender_seq_number", "error_estimate", "error_estimate.s",
              "error_estimate.z", "error_estimate.multiplier", "mbz1", "mbz2",
              "sender_error_estimate", "sender_ttl"]
    argv = ["tshark", "-r", pcap, "-d", f"udp.port=={port},twamp.test",
            "-Y", f"ip.src=={src} && udp.srcport=={port}", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in fields:
        argv += ["-e", f"twamp.test.{f}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        vals = line.split("\t")
        assert len(vals) == len(fields) and all(vals), f"tshark could not decode a reply: {line!r}"
        row = {f: int(v == "True" if v in ("True", "False") else int(v, 0)) for f, v in zip(fields, vals)}
        rows[row["sender_seq_number"]] = row
    return rows


def ntp_ns(dec):
    """Unix ns of scapy's NTP timestamp (a Decimal of seconds since 1900)."""
    return int((dec - NTP_ERA0) * 1_000_000_000)


def check_reply(req_ts, req, rep_ts, rep, expect_ttl, ptp=False):
    """Check one reply decoded by scapy against its request; return the decoded packet."""
    p = ScapyReflected(rep.payload)
    seq = struct.unpack_from("!I", req.payload)[0]
    synced = clock.read().synchronized
    if not stampnet.STATEFUL:
        assert p.seq == seq, f"the reflected Sequence Number {p.seq} is not the sender's {seq} (stateless)"
    assert p.seq_sender == seq, f"Session-Sender Sequence Number {p.seq_sender} is not {seq}"
    assert p.ttl_sender == expect_ttl, \
        f"Session-Sender TTL is {p.ttl_sender}, but the request arrived with TTL {expect_ttl}"
    assert rep.ttl == 255, f"the reply left the reflector with IP TTL {rep.ttl}, not 255 (RFC 5357 4.2)"
    assert (p.err_estimate_sender.S, p.err_estimate_sender.Z, p.err_estimate_sender.scale,
            p.err_estimate_sender.multiplier) == (0, 0, 10, 5), \
        "the Session-Sender Error Estimate was not copied"
    assert p.ts_sender == Decimal(REQ_TS[0]) + Decimal(REQ_TS[1]) / (1 << 32), \
        "the Session-Sender Timestamp was not copied"
    assert p.ssid == 0 and p.mbz1 == 0 and p.mbz2 == 0, \
        f"MBZ octets are not zero: {rep.payload[14:16].hex()} {rep.payload[38:40].hex()} {rep.payload[41:44].hex()}"
    ee = p.err_estimate
    assert ee.multiplier != 0, "the reflector's Error Estimate has multiplier 0 (RFC 4656 forbids it)"
    assert ee.S == int(synced), f"S={ee.S} but adjtimex says synchronised={synced}"
    assert ee.Z == int(ptp), f"Z={ee.Z} for a reflector whose timestamps are {'PTP' if ptp else 'NTP'}"
    raw = wire.parse_reflector_packet(rep.payload)
    if ptp:
        tai = clock.read().tai_offset_s
        t2 = (raw.rx_ts[0] - tai) * 1_000_000_000 + raw.rx_ts[1]
        t3 = (raw.ts[0] - tai) * 1_000_000_000 + raw.ts[1]
        assert raw.rx_ts[1] < 1_000_000_000 and raw.ts[1] < 1_000_000_000, \
            "a PTP timestamp's second word holds more than 10^9 nanoseconds"
    else:
        t2, t3 = ntp_ns(p.ts_rx), ntp_ns(p.ts)
    assert req_ts - SLACK_NS <= t2 <= t3 <= rep_ts + SLACK_NS, (
        f"Receive Timestamp {t2} and Timestamp {t3} are not between the request's capture "
        f"{req_ts} and the reply's {rep_ts} (all Unix ns on this host's clock)")
    return p


def test_reflected_fields_are_rfc8762_with_sender_ttl_and_ttl_255(lab, ntp_reflector):
    topo = lab.topo
    dest = (topo.reflector.addr, 862)
    ttls = [1, 7, 64, 200, 255]
    sends = [(request(100 + i), dest, t) for i, t in enumerate(ttls)]
    frames, got = exchange(lab, sends, "ttl")
    reqs, reps = split(frames, topo.reflector.addr)
    assert sorted(reps) == [100 + i for i in range(len(ttls))], \
        f"expected one reply per request, got replies for {sorted(reps)}"
    assert len(got) == len(ttls), "the sending socket did not get every reply"
    for i, ttl in enumerate(ttls):
        req_ts, req = reqs[100 + i]
        rep_ts, rep, frame = reps[100 + i]
        assert len(rep.payload) == 44, f"a 44-octet request came back with {len(rep.payload)}"
        check_reply(req_ts, req, rep_ts, rep, ttl)
    decoded = tshark_replies(str(lab.workdir / "ttl.pcap"), topo.reflector.addr)
    for i, ttl in enumerate(ttls):
        row = decoded[100 + i]
        assert row["sender_ttl"] == ttl, f"tshark reads {row}"
        assert stampnet.STATEFUL or row["seq_number"] == 100 + i, f"tshark reads {row}"
        assert row["sender_error_estimate"] == REQ_EE and row["mbz1"] == 0 and row["mbz2"] == 0, \
            f"tshark reads {row}"
        assert row["error_estimate.multiplier"] != 0 and row["error_estimate.z"] == 0, \
            f"tshark reads {row}"


def test_sizes_follow_section_4_6(lab, ntp_reflector):
    """44 -> 44, 100 -> 100 with octets 44.. unchanged; 14..43 (TWAMP Light) get no reply,
    since 44 octets back would be larger than the request (docs/security.md)."""
    topo = lab.topo
    dest = (topo.reflector.addr, 862)
    tail = bytes((7 * i + 3) & 0xFF for i in range(56))
    sizes = {200: 44, 201: 100, 202: 14, 203: 15, 204: 27, 205: 43}
    sends = [(request(seq, size, tail=tail if size > 44 else b""), dest, 0)
             for seq, size in sizes.items()]
    frames, _ = exchange(lab, sends, "sizes")
    reqs, reps = split(frames, topo.reflector.addr)
    answered = sorted(seq for seq, size in sizes.items() if size >= 44)
    assert sorted(reps) == answered, f"replies for {sorted(reps)}, requests {sorted(sizes)}"
    for seq, size in sizes.items():
        if size < 44:
            continue
        req_ts, req = reqs[seq]
        rep_ts, rep, frame = reps[seq]
        assert len(req.payload) == size
        want = size
        assert len(rep.payload) == want, f"a {size}-octet request came back with {len(rep.payload)} octets, not {want}"
        assert struct.unpack_from("!H", frame, 16)[0] == 20 + 8 + want, \
            "the reply's IPv4 Total Length does not match its payload"
        check_reply(req_ts, req, rep_ts, rep, 64)
        if size > 44:
            assert rep.payload[44:] == req.payload[44:], "octets past the 44-octet base were changed"


def test_not_reflected_to_other_addresses_or_ports(lab, ntp_reflector):
    topo = lab.topo
    stray = "198.18.0.77"           # on the subnet, not on the reflector's interface
    topo.run(topo.sender, ["ip", "neigh", "replace", stray, "lladdr", topo.reflector.mac,
                           "dev", topo.sender.ifname, "nud", "permanent"], check=True)
    extra = topo.reflector.extra_addrs[0]
    sends = [(request(300), (stray, 862), 0),
             (request(301), (topo.reflector.addr, 863), 0),
             (request(302), (topo.reflector.addr, 861), 0),
             (request(303), (extra, 862), 0)]      # a secondary address: reflected
    frames, _ = exchange(lab, sends, "stray")
    back = [u for _t, f in frames if (u := packets.parse_udp4(f)) and u.dst == topo.sender.addr]
    assert [struct.unpack_from("!I", u.payload, 24)[0] for u in back] == [303], (
        "only the request to the interface's (secondary) address may be reflected; UDP that came "
        f"back: {[(u.src, u.sport, u.payload[:4].hex()) for u in back]}")
    assert back[0].src == extra, f"the reply came from {back[0].src}, not {extra}"


def test_reply_ethernet_source_is_the_reflector_interface(lab, ntp_reflector):
    """A reply leaves with the reflector interface's own MAC address as its source, also
    when the request came to the broadcast address (a swapped ff:ff:ff:ff:ff:ff source
    is an invalid frame that switches drop or learn wrongly)."""
    topo = lab.topo
    s, r = topo.sender, topo.reflector
    sock = stampnet.udp_socket(s, 40020)
    tx = stampnet.frame_socket(s)
    try:
        with lab.capture(s, "mac") as frames:
            sock.sendto(request(700), (r.addr, 862))
            tx.send(bytes(Ether(src=s.mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=s.addr, dst=r.addr)
                          / UDP(sport=40020, dport=862) / request(701)))
            got = stampnet.recv_all(sock)
    finally:
        sock.close()
        tx.close()
    replies = {struct.unpack_from("!I", u.payload, 24)[0]: f for f, u in stampnet.udp_frames(frames)
               if u.src == r.addr}
    assert 700 in replies, f"no reply to the unicast request: {sorted(replies)} ({len(got)} on the socket)"
    for seq, f in replies.items():
        assert (f[6:12].hex(":"), f[0:6].hex(":")) == (r.mac, s.mac), (
            f"the reply to request {seq} went from MAC {f[6:12].hex(':')} to {f[0:6].hex(':')}, "
            f"not from the reflector's {r.mac} to the sender's {s.mac}")


def test_addresses_added_and_removed_while_running(lab, ntp_reflector):
    """An address added to the interface is reflected for within seconds, and a removed
    one no longer is (the reflector follows the interface, as pod IPs come and go)."""
    topo = lab.topo
    s, r = topo.sender, topo.reflector
    addr = "198.18.0.50"
    topo.run(s, ["ip", "neigh", "replace", addr, "lladdr", r.mac, "dev", s.ifname, "nud",
                 "permanent"], check=True)
    sock = stampnet.udp_socket(s, 40030)

    def answered(seq):
        sock.sendto(request(seq), (addr, 862))
        return len(stampnet.recv_all(sock, quiet=0.2)) == 1

    def within(seconds, want):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if answered(800) == want:
                return True
        return False

    try:
        assert not answered(800), f"{addr} is not on the interface yet, but was reflected for"
        topo.run(r, ["ip", "addr", "add", f"{addr}/24", "dev", r.ifname], check=True)
        assert within(5, True), f"{addr} added to {r.ifname} was not reflected for within 5 s"
        topo.run(r, ["ip", "addr", "del", f"{addr}/24", "dev", r.ifname], check=True)
        assert within(5, False), f"{addr} removed from {r.ifname} was still reflected for after 5 s"
    finally:
        sock.close()
        topo.run(r, ["ip", "addr", "del", f"{addr}/24", "dev", r.ifname], capture_output=True)


def test_reflects_while_user_space_is_frozen(lab, ntp_reflector):
    """SIGSTOP the reflector process: the kernel keeps reflecting every request, also once
    the ring buffer of records (64 pages) is full and nothing reads it."""
    topo = lab.topo
    n = 8000                       # more records than the ring buffer holds (~5,400)
    sock = stampnet.udp_socket(topo.sender, 40040)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    os.killpg(ntp_reflector.proc.pid, signal.SIGSTOP)
    try:
        with lab.capture(topo.sender, "frozen") as frames:
            # Never faster than 6,000/s: under the reflector's default per-sender
            # rate limit (12,000/s, services/reflector/guard.py), which would
            # otherwise rightly drop part of a burst from one sender.
            last = 0.0
            for seq in range(n):
                while time.perf_counter() - last < 1 / 6000:
                    pass
                last = time.perf_counter()
                sock.sendto(request(900000 + seq), (topo.reflector.addr, 862))
                if seq % 64 == 63:
                    time.sleep(0.001)       # stay under the capture's and socket's buffers
            stampnet.recv_all(sock, quiet=0.5)
    finally:
        os.killpg(ntp_reflector.proc.pid, signal.SIGCONT)
        sock.close()
    reqs, reps = split(frames, topo.reflector.addr)
    assert len(reqs) == n, f"captured {len(reqs)} of {n} requests"
    assert len(reps) == n, f"{len(reps)} of {n} requests were reflected while user space was stopped"
    time.sleep(0.5)
    assert ntp_reflector.proc.poll() is None, "the reflector died after SIGCONT"


def test_many_senders_at_once(lab, ntp_reflector):
    """Two threads (so two CPUs can reflect at once), 20 sockets, 400 requests in a burst:
    every socket gets exactly its own replies, each with T2 and T3 taken (T3 >= T2)."""
    topo = lab.topo
    socks = [stampnet.udp_socket(topo.sender, 41000 + i) for i in range(20)]
    dest = (topo.reflector.addr, 862)

    def blast(mine):
        for seq in range(20):
            for k, sock in mine:
                sock.sendto(request(k * 1000 + seq), dest)

    try:
        threads = [threading.Thread(target=blast, args=(list(enumerate(socks))[j::2],))
                   for j in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for k, sock in enumerate(socks):
            got = stampnet.recv_all(sock, quiet=0.5 if k == 0 else 0.05)
            seqs = sorted(wire.parse_reflector_packet(d).sender_seq for d, _ in got)
            assert seqs == [k * 1000 + i for i in range(20)], \
                f"socket {k} got replies for {seqs}, not its own 20"
            for d, _ in got:
                p = wire.parse_reflector_packet(d)
                t2, t3 = wire.ntp_to_ns(*p.rx_ts), wire.ntp_to_ns(*p.ts)
                assert p.rx_ts != (0, 0) and p.ts != (0, 0) and t3 >= t2, \
                    f"reply {p.sender_seq}: T2 {p.rx_ts} and T3 {p.ts} were not both taken in order"
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("sport", [40862, 862], ids=["ephemeral-port", "port-862"])
def test_twamp_light_packet_with_random_padding_is_reflected(lab, ntp_reflector, sport):
    """RFC 5357 4.1.2: a TWAMP-Test sender's Packet Padding SHOULD be pseudo-random, and
    RFC 8762 4.6 has a STAMP reflector answer TWAMP-Light senders, from any port."""
    topo = lab.topo
    rnd = bytes((37 * i + 11) & 0xFF or 1 for i in range(46))     # never all-zero
    payload = struct.pack("!IIIH", 500, *REQ_TS, REQ_EE) + rnd      # 60 octets
    sock = stampnet.udp_socket(topo.sender, sport)
    try:
        with lab.capture(topo.sender, f"twamp{sport}") as frames:
            sock.sendto(payload, (topo.reflector.addr, 862))
            got = stampnet.recv_all(sock)
    finally:
        sock.close()
    reqs, reps = split(frames, topo.reflector.addr)
    assert 500 in reps and len(got) == 1, (
        f"a 60-octet TWAMP-Light request from port {sport} with pseudo-random padding was not "
        "reflected (the loop guard takes any request from the STAMP port with non-zero octets "
        "16..23 for a reflected packet)")
    rep = reps[500][1]
    assert len(rep.payload) == 60 and rep.payload[44:] == payload[44:], \
        "the padding past the base packet did not come back unchanged"


def test_ptp_reflector_on_another_port_sets_z_and_writes_tai(tmp_path_factory):
    """-p 8620 --timestamp-format ptp: replies on 8620 only, Z=1, T2/T3 in TAI."""
    lab = stampnet.Lab(tmp_path_factory.mktemp("ptp"))
    try:
        lab.reflector("--timestamp-format", "ptp", "-p", "8620")
        topo = lab.topo
        sends = [(request(400 + i), (topo.reflector.addr, 8620), 0) for i in range(3)]
        sends.append((request(410), (topo.reflector.addr, 862), 0))
        frames, _ = exchange(lab, sends, "ptp")
        reqs, reps = split(frames, topo.reflector.addr, port=8620)
        assert sorted(reps) == [400, 401, 402], f"replies on port 8620 for {sorted(reps)}"
        for seq in reps:
            check_reply(reqs[seq][0], reqs[seq][1], reps[seq][0], reps[seq][1], 64, ptp=True)
        assert split(frames, topo.reflector.addr)[1] == {}, \
            "a reflector on port 8620 reflected a request to port 862"
        decoded = tshark_replies(str(lab.workdir / "ptp.pcap"), topo.reflector.addr, port=8620)
        assert {row["error_estimate.z"] for row in decoded.values()} == {1}, \
            f"tshark reads Z other than 1 from a PTP reflector: {decoded}"
    finally:
        lab.close()
