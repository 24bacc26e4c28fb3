"""RFC 8972 replies on the wire: a running stamp-reflector, stateless and --stateful,
read by scapy's scapy.contrib.stamp and by tshark.

Requests carrying an SSID and TLVs are sent from plain UDP sockets in the
sender namespace (veth with TX checksum offload off, as the lab sets it);
the sender's interface is captured and every reply is decoded by scapy
(SSID, TLV flags and values) and by tshark's TWAMP-Test dissector (which
knows the SSID's octets as MBZ and the TLVs as padding), and its checksums
recomputed. scapy names the TLV flags from the low bit ("UMIRRRRR"); RFC
8972 Figure 6 puts U in the high bit, so flags are compared as raw octets.
"""

import socket
import struct
import subprocess

import pytest
from scapy.contrib.stamp import STAMPSessionReflectorTestUnauthenticated as ScapyReflected

from stamp_bpf.common import clock, wire
from stamp_bpf.lab import packets

import stampnet

pytestmark = pytest.mark.timeout(240)
U, M = wire.TLV_U, wire.TLV_M
tlv = wire.build_tlv


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("rfc8972"))
    yield lab
    lab.close()


@pytest.fixture(scope="module", params=["stateless", "stateful"])
def mode(request, lab):
    if stampnet.STATEFUL and request.param == "stateless":
        pytest.skip("STAMP_TEST_REFLECTOR_ARGS makes every reflector stateful")
    svc = lab.reflector(*(["--stateful"] if request.param == "stateful" else []))
    yield request.param
    svc.stop()


def request(seq, ssid, tlvs=b""):
    return wire.build_sender_packet(seq, (0xE000_0001, 0x8000_0000), 0x0A05, ssid=ssid, tlvs=tlvs)


def exchange(lab, sends, name, sport):
    """Send [(payload, tos)] from UDP port `sport`; return {sender seq: (request Udp4,
    reply Udp4, reply frame)} from the sender's capture."""
    topo = lab.topo
    sock = stampnet.udp_socket(topo.sender, sport)
    try:
        with lab.capture(topo.sender, name) as frames:
            for payload, tos in sends:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
                sock.sendto(payload, (topo.reflector.addr, 862))
            stampnet.recv_all(sock)
    finally:
        sock.close()
    reqs, out = {}, {}
    for frame, u in stampnet.udp_frames(frames):
        if u.dst == topo.reflector.addr:
            reqs[struct.unpack_from("!I", u.payload)[0]] = (frame, u)
        elif u.src == topo.reflector.addr:
            out[struct.unpack_from("!I", u.payload, 24)[0]] = (frame, u)
    assert sorted(out) == sorted(reqs) and len(out) == len(sends), \
        f"requests {sorted(reqs)} got replies {sorted(out)}"
    return {seq: (reqs[seq][1], out[seq][1], out[seq][0]) for seq in out}


def check_frame(req, rep, frame):
    assert len(rep.payload) == len(req.payload), \
        f"a {len(req.payload)}-octet request came back with {len(rep.payload)} octets"
    assert stampnet.ip_header_ok(frame), "the reply's IPv4 header checksum is wrong"
    stored, correct = stampnet.udp_checksum(frame)
    assert stored == correct, f"UDP checksum {stored:#06x} on the wire, should be {correct:#06x}"


def flags_types(p):
    return [(int(t.flags), t.type) for t in p.tlv_objects]


def tshark(pcap, src):
    """{sender seq: (mbz1 = SSID, padding octets)} of replies from `src`, per tshark."""
    argv = ["tshark", "-r", pcap, "-d", "udp.port==862,twamp.test", "-Y",
            f"ip.src=={src} && udp.srcport==862", "-T", "fields", "-E", "separator=\t",
            "-e", "twamp.test.sender_seq_number", "-e", "twamp.test.mbz1",
            "-e", "twamp.test.padding"]
    rows = {}
    for line in subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines():
        seq, mbz1, pad = (line.split("\t") + ["", ""])[:3]
        rows[int(seq)] = (int(mbz1, 0), bytes.fromhex(pad.replace(":", "")))
    return rows


def test_ssid_echoed_tlvs_flagged_and_filled(lab, mode):
    topo = lab.topo
    synced = clock.read().synchronized
    n_long = wire.TLV_WALK_MAX + 3
    cases = {
        # seq: (ssid, tlvs, tos)
        1: (0, b"", 0),
        2: (1, tlv(wire.TLV_EXTRA_PADDING, bytes(20)), 0),
        3: (0xBEEF, tlv(wire.TLV_LOCATION, bytes(4) + tlv(wire.LOC_SRC_MAC, bytes(8), flags=0)
                        + tlv(wire.LOC_DST_IP, bytes(16), flags=0)
                        + tlv(wire.LOC_SRC_IP, bytes(16), flags=0)), 0),
        4: (0xFFFF, tlv(wire.TLV_CLASS_OF_SERVICE, wire.build_cos(46)), 0x29),
        5: (7, tlv(wire.TLV_TIMESTAMP_INFO, bytes(4)) + tlv(243, b"exp") + tlv(251), 0),
        6: (8, tlv(wire.TLV_EXTRA_PADDING, b"a") + tlv(wire.TLV_DIRECT_MEASUREMENT, bytes(8))
            + tlv(wire.TLV_EXTRA_PADDING, b"b"), 0),
        7: (9, b"".join(tlv(wire.TLV_EXTRA_PADDING, b"p") for _ in range(n_long)), 0),
        8: (10, tlv(wire.TLV_DIRECT_MEASUREMENT, struct.pack("!III", 3, 0, 0)), 0),
    }
    sends = [(request(seq, ssid, tlvs), tos) for seq, (ssid, tlvs, tos) in cases.items()]
    got = exchange(lab, sends, f"tlv-{mode}", 40500)
    decoded = {seq: ScapyReflected(rep.payload) for seq, (_, rep, _) in got.items()}
    for seq, (req, rep, frame) in got.items():
        check_frame(req, rep, frame)
        assert decoded[seq].ssid == cases[seq][0], \
            f"request {seq} with SSID {cases[seq][0]:#06x} came back with {decoded[seq].ssid:#06x}"

    assert flags_types(decoded[2]) == [(0, 1)], "Extra Padding not handled"
    loc = decoded[3].tlv_objects[0]
    assert (int(loc.flags), loc.type) == (0, wire.TLV_LOCATION)
    assert wire.LOCATION.unpack(bytes(loc.value)[:4]) == (862, 40500), \
        "Location ports are not the ones the request arrived with"
    subs = [(t.flags, t.type, t.value) for t in wire.parse_tlvs(bytes(loc.value), 4)]
    assert subs == [
        (0, wire.LOC_SRC_EUI48, bytes.fromhex(topo.sender.mac.replace(":", "")) + bytes(2)),
        (0, wire.LOC_DST_IPV4, socket.inet_aton(topo.reflector.addr) + bytes(12)),
        (0, wire.LOC_SRC_IPV4, socket.inet_aton(topo.sender.addr) + bytes(12))], \
        f"Location sub-TLVs are not the MAC and addresses the request arrived with: {subs}"

    cos = decoded[4].tlv_objects[0]
    assert int(cos.flags) == 0 and wire.parse_cos(bytes(cos.value)) == (46, 0x29 >> 2, 0x29 & 3, 0), \
        f"Class of Service (DSCP1, DSCP2, ECN, RP) = {wire.parse_cos(bytes(cos.value))}"
    req4, rep4, frame4 = got[4]
    assert frame4[15] == (46 << 2) | (0x29 & 3), \
        f"the reply left with TOS {frame4[15]:#04x}, not DSCP 46 as the sender asked"

    want_src = wire.SYNC_SRC_NTP if synced else wire.SYNC_SRC_FREE_RUNNING
    ti = decoded[5].tlv_objects[0]
    assert (int(ti.flags), bytes(ti.value)) == (0, bytes([want_src, wire.TS_METHOD_SW_LOCAL] * 2)), \
        f"Timestamp Information {bytes(ti.value).hex()} (clock synchronised: {synced})"
    assert flags_types(decoded[5])[1:] == [(U, 243), (U, 251)], "experimental types not flagged U"

    assert flags_types(decoded[6]) == [(0, 1), (M, 5), (U, 1)], (
        f"Direct Measurement of length 8 must be M=1 and end the walk: {flags_types(decoded[6])}")
    assert [f for f, _ in flags_types(decoded[7])] == [0] * wire.TLV_WALK_MAX + [U] * 3, \
        "TLVs past the walk's bound must come back as sent"
    dm = decoded[8].tlv_objects[0]
    if mode == "stateful":
        s_tx, r_rx, r_tx = struct.unpack("!III", bytes(dm.value))
        assert int(dm.flags) == 0 and s_tx == 3 and r_rx == r_tx == 1, \
            f"Direct Measurement of a new session's first packet: {(s_tx, r_rx, r_tx)}"
    else:
        assert int(dm.flags) == U, "a stateless reflector must flag Direct Measurement U"

    seqs = {seq: decoded[seq].seq for seq in decoded}
    if mode == "stateless":
        assert seqs == {seq: seq for seq in seqs}, f"stateless Sequence Numbers {seqs}"
    else:
        # One socket, but each SSID is a session of its own: every reply is its first.
        assert set(seqs.values()) == {0}, f"stateful Sequence Numbers per SSID {seqs}"

    rows = tshark(str(lab.workdir / f"tlv-{mode}.pcap"), topo.reflector.addr)
    for seq, (ssid, tlvs, _) in cases.items():
        assert rows[seq][0] == ssid, f"tshark reads SSID (mbz1) {rows[seq][0]:#06x} of reply {seq}"
        # tshark counts the 3 MBZ octets after Session-Sender TTL as padding too.
        assert rows[seq][1][:3] == bytes(3) and len(rows[seq][1]) == 3 + len(tlvs), \
            f"tshark reads {len(rows[seq][1])} octets after the Session-Sender TTL"


def test_stateful_sequence_numbers_on_the_wire(lab, mode):
    sends = [(request(500 + i, 0x4242), 0) for i in range(5)]
    got = exchange(lab, sends, f"seq-{mode}", 40600)
    seqs = [ScapyReflected(got[500 + i][1].payload).seq for i in range(5)]
    want = list(range(5)) if mode == "stateful" else [500 + i for i in range(5)]
    assert seqs == want, f"{mode} reflector's Sequence Numbers {seqs}, want {want}"
    for req, rep, frame in got.values():
        check_frame(req, rep, frame)
        assert packets.parse_udp4(frame).ttl == 255


def test_stateful_sessions_bound_the_map_and_the_summary_counts_evictions(tmp_path_factory):
    """--stateful --stateful-sessions 4: ten senders are all reflected; the summary says the
    map holds at most 4, 10 were created and the rest evicted."""
    lab = stampnet.Lab(tmp_path_factory.mktemp("maxsess"))
    try:
        svc = lab.reflector("--stateful", "--stateful-sessions", "4", "--session-timeout", "60")
        topo = lab.topo
        answered = 0
        for i in range(10):
            sock = stampnet.udp_socket(topo.sender, 40700 + i)
            try:
                sock.sendto(request(i, 1), (topo.reflector.addr, 862))
                answered += len(stampnet.recv_all(sock, quiet=0.2))
            finally:
                sock.close()
        assert svc.stop() == 0, f"stamp-reflector failed:\n{svc.text()[-2000:]}"
    finally:
        lab.close()
    assert answered == 10, f"{answered} of 10 senders were answered with room for 4 sessions"
    ks = svc.summary()["kernel_sessions"]
    assert ks["max"] == 4 and ks["live"] <= 4, f"the session map grew past --stateful-sessions: {ks}"
    assert ks["created"] == 10 and ks["evicted"] == 10 - ks["live"] and ks["evicted"] >= 6, \
        f"kernel_sessions in the summary: {ks}"
