"""The TC programs' IPv6 path on crafted frames (BPF_PROG_TEST_RUN).

The real programs, loaded by the services' own datapath code, run on IPv6
frames built by scapy: reflector_ingress reflects (Hop Limit 255, the received
Hop Limit as Session-Sender TTL, addresses and ports swapped, valid UDP
checksum as scapy recomputes it, RFC 8762 reflector format as scapy's STAMP
decoder and tshark's TWAMP-Test dissector read it), reflector_egress writes T3
and emits a record with the
IPv6 addresses, sender_ingress takes the reply. RFC 8972 over IPv6: the SSID,
the Location TLV answered with the IPv6 sub-TLVs (Table 5: 6 and 9), Class
of Service setting the reply's Traffic Class, the stateful map's counts in a
Direct Measurement TLV. Refused over IPv6: UDP checksum 0 and wrong ones
(counted), IPv4-mapped addresses in the IPv6 header (the maps key IPv4 peers
that way), requests to an address that is not the reflector's; and the guard
(bpf/guard.h) over IPv6: IPv6 prefixes in the allow-list, sources no reply may
go to, requests shorter than their reply, malformed lengths, and a token
bucket keyed by the IPv6 sender.
"""

import socket
import struct
import subprocess
import time

import pytest
from scapy.contrib.stamp import STAMPSessionReflectorTestUnauthenticated as ScapyReflected
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from stamp_bpf.common import clock, events, records, tc, wire
from stamp_bpf.lab import progtest
from stamp_bpf.reflector import datapath as reflector_dp
from stamp_bpf.reflector import guard
from stamp_bpf.sender import datapath as sender_dp

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_cpu")]

SENDER, REFLECTOR = "2001:db8::1", "2001:db8::2"
SENDER4, REFLECTOR4 = "198.18.0.1", "198.18.0.2"
OTHER6 = "2001:db8:1::9"     # another interface's address of the reflector's host
NO_LIMIT = guard.rate_limit(0, 1)
SMAC = "02:00:00:00:00:01"
TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT = -1, 2, 7
TAI_OFFSET_S = 37
P6 = 14 + 40 + 8            # UDP payload offset in our IPv6 frames


def frame6(payload, src=SENDER, dst=REFLECTOR, sport=40000, dport=862, hlim=61, tc_=0,
           chksum=None, dmac="00:00:00:00:00:00"):
    # To lo's all-zero MAC: BPF_PROG_TEST_RUN's skb is then PACKET_HOST.
    return bytes(Ether(src=SMAC, dst=dmac) / IPv6(src=src, dst=dst, hlim=hlim, tc=tc_)
                 / UDP(sport=sport, dport=dport, chksum=chksum) / payload)


def request(seq=1, ssid=0, tlvs=b"", size=wire.BASE_LEN):
    return wire.build_sender_packet(seq, (0xE000_0001, 0x8000_0000), 0x0A05, ssid=ssid,
                                    tlvs=tlvs, size=max(size, wire.BASE_LEN))


def udp6_ok(frame):
    """Does the frame's UDP checksum hold, as scapy recomputes it?"""
    p = Ether(frame)
    stored = p[UDP].chksum
    del p[UDP].chksum
    return stored != 0 and Ether(bytes(p))[UDP].chksum == stored


def run(fd, data):
    runner = progtest.TestRunner(data)
    rc, _ = runner.run(fd)
    return progtest.signed(rc), runner.output()


class Reflector:
    def __init__(self, stateful):
        self.dp, fns = reflector_dp.load(862, False, stateful=stateful)
        self.ingress, self.egress = fns[tc.INGRESS].fd, fns[tc.EGRESS].fd
        self.dp.configure(clock.ClockState(True, 1e-3, TAI_OFFSET_S))
        self.dp.set_addresses([REFLECTOR, REFLECTOR4], [OTHER6])
        self.records = []
        self.dp.open_events(self.records.append)

    def reflect(self, data):
        rc, out = run(self.ingress, data)
        assert rc == TC_ACT_REDIRECT, f"reflector_ingress returned {rc}, not TC_ACT_REDIRECT"
        return out


@pytest.fixture(scope="module")
def stateless():
    r = Reflector(False)
    yield r
    r.dp.bpf.cleanup()


@pytest.fixture(scope="module")
def stateful():
    r = Reflector(True)
    yield r
    r.dp.bpf.cleanup()


@pytest.mark.parametrize("size", [44, 200])
def test_an_ipv6_request_comes_back_as_an_rfc8762_reply(stateless, size):
    req = request(seq=9, ssid=0x1234, size=size)[:size]
    sent = frame6(req, hlim=61)
    out = stateless.reflect(sent)
    p = Ether(out)
    assert (p[IPv6].src, p[IPv6].dst, p[UDP].sport, p[UDP].dport) == (REFLECTOR, SENDER, 862, 40000), \
        "The reply goes back to the sender, addresses and ports swapped."
    assert p[IPv6].hlim == 255, "Hop Limit 255 on the reply (RFC 5357 4.2)."
    assert (p.src, p.dst) == ("00:00:00:00:00:00", SMAC), "The MAC addresses are swapped."
    want_len = max(size, wire.BASE_LEN)
    assert p[IPv6].plen == 8 + want_len and p[UDP].len == 8 + want_len, \
        f"Payload Length and UDP length are those of a {want_len}-octet reply: {p[IPv6].plen}, {p[UDP].len}"
    assert udp6_ok(out), "The reply's UDP checksum must hold (scapy recomputes it)."
    r = ScapyReflected(out[P6:])
    assert (r.seq, r.seq_sender, r.ttl_sender, r.ssid) == (9, 9, 61, 0x1234), \
        "Sequence Numbers are the sender's, Session-Sender TTL the received Hop Limit, " \
        "the SSID copied (RFC 8972 section 3)."


def test_reflector_egress_and_sender_ingress_over_ipv6(stateless):
    """The chain: T2 at ingress, T3 and the record at egress, T4 and the record at the sender."""
    s_dp, s_fns = sender_dp.load(862, 862, False)
    try:
        s_dp.configure(clock.ClockState(False, 16.0, TAI_OFFSET_S))
        s_dp.add_session(REFLECTOR, SENDER)
        s_events = []
        s_dp.open_events(s_events.append)
        stateless.records.clear()
        out2 = stateless.reflect(frame6(request(seq=7, size=60), sport=862, hlim=200, tc_=0xB8))
        before = time.clock_gettime_ns(time.CLOCK_TAI)
        rc, out3 = run(stateless.egress, out2)
        assert rc == TC_ACT_UNSPEC, f"reflector_egress returned {rc}"
        assert udp6_ok(out3), "T3 written, the UDP checksum still holds."
        rep = wire.parse_reflector_packet(out3[P6:])
        t3_ns = wire.ts_to_ns(rep.ts, 0, TAI_OFFSET_S)
        assert before - TAI_OFFSET_S * 10**9 - 10**9 < t3_ns, "reflector_egress wrote T3."
        stateless.dp.bpf.ring_buffer_consume()
        assert len(stateless.records) == 1, "reflector_egress emitted one record"
        ev = events.reflector_event(stateless.records[0])
        assert (ev.sender, ev.local, ev.sender_port, ev.local_port, ev.payload_len, ev.sender_ttl,
                ev.seq) == (SENDER, REFLECTOR, 862, 862, 60, 200, 7), f"the reflector's record: {ev}"

        rc, _ = run(s_fns[tc.INGRESS].fd, bytes(6) + out3[6:])
        assert rc == TC_ACT_SHOT, f"sender_ingress returned {rc}, not TC_ACT_SHOT for our reply"
        s_dp.bpf.ring_buffer_consume()
        assert len(s_events) == 1, "sender_ingress emitted one record"
        sev = events.sender_event(s_events[0])
        assert (sev.reflector, sev.local, sev.reflector_port, sev.payload_len, sev.reply_ttl,
                sev.reply_tos) == (REFLECTOR, SENDER, 862, 60, 255, 0xB8), f"the sender's record: {sev}"
        assert sev.pkt == out3[P6:P6 + 44] and sev.tlvs == out3[P6 + 44:]

        # A reply with a zero or a wrong UDP checksum is not measured, and counted.
        taken = s_dp.stats()["replies_taken"]
        bad = s_dp.stats()["bad_checksum"]
        zero = bytearray(bytes(6) + out3[6:])
        zero[14 + 40 + 6:14 + 40 + 8] = b"\0\0"
        wrong = bytearray(bytes(6) + out3[6:])
        wrong[14 + 40 + 6] ^= 0x5A
        for f in (zero, wrong):
            rc, _ = run(s_fns[tc.INGRESS].fd, bytes(f))
            assert rc == TC_ACT_UNSPEC, "A reply with a bad UDP checksum is left to the stack."
        assert s_dp.stats()["replies_taken"] == taken and s_dp.stats()["bad_checksum"] == bad + 2
        # A reply to another address of ours is not the session's (nor one while
        # the session has no source address).
        other = frame6(out3[P6:], src=REFLECTOR, dst="2001:db8::7", sport=862, dport=862,
                       dmac="00:00:00:00:00:00")
        assert run(s_fns[tc.INGRESS].fd, other)[0] == TC_ACT_UNSPEC
        s_dp.add_session(REFLECTOR, "::")
        assert run(s_fns[tc.INGRESS].fd, bytes(6) + out3[6:])[0] == TC_ACT_UNSPEC
        assert s_dp.stats()["replies_taken"] == taken
    finally:
        s_dp.bpf.cleanup()


def test_sender_egress_stamps_ipv6_only_for_its_socket():
    """A packet of another socket (the test run's) passes untouched, IPv6 as IPv4."""
    s_dp, s_fns = sender_dp.load(862, 862, False)
    try:
        s_dp.configure(clock.ClockState(False, 16.0, TAI_OFFSET_S))
        f = frame6(request(seq=3), sport=862)
        assert run(s_fns[tc.EGRESS].fd, f) == (TC_ACT_UNSPEC, f)
    finally:
        s_dp.bpf.cleanup()


@pytest.mark.parametrize("what", ["checksum 0", "wrong checksum"])
def test_bad_ipv6_checksums_are_not_reflected_and_counted(stateless, what):
    good = frame6(request())
    stored = Ether(good)[UDP].chksum
    bad = frame6(request(), chksum=0 if what == "checksum 0" else stored ^ 0x0F0F)
    before = stateless.dp.stats()
    rc, out = run(stateless.ingress, bad)
    after = stateless.dp.stats()
    assert (rc, out) == (TC_ACT_UNSPEC, bad), f"A request with {what} passes on untouched."
    assert after["bad_checksum"] == before["bad_checksum"] + 1 and \
        after["reflected"] == before["reflected"], f"{what}: counted as bad_checksum, not reflected"


@pytest.mark.parametrize("src, dst", [
    ("::ffff:198.18.0.1", REFLECTOR), (SENDER, "::ffff:198.18.0.2"), (SENDER, "2001:db8::99"),
], ids=["mapped source", "mapped destination", "not our address"])
def test_ipv6_requests_that_are_not_ours_pass_untouched(stateless, src, dst):
    """::ffff:198.18.0.2 is how the map holds the reflector's IPv4 address: an IPv6
    header naming it is not a request to that IPv4 address."""
    f = frame6(request(), src=src, dst=dst)
    assert run(stateless.ingress, f) == (TC_ACT_UNSPEC, f)


def test_location_over_ipv6_answers_with_the_ipv6_sub_tlvs(stateless):
    asks = (wire.build_tlv(wire.LOC_SRC_MAC, bytes(8))
            + wire.build_tlv(wire.LOC_DST_IP, bytes(16)) + wire.build_tlv(wire.LOC_SRC_IP, bytes(16)))
    tlvs = wire.build_tlv(wire.TLV_LOCATION, bytes(4) + asks)
    out = stateless.reflect(frame6(request(tlvs=tlvs)))
    assert udp6_ok(out), "The TLVs answered, the UDP checksum holds."
    (loc,) = wire.parse_tlvs(out[P6:], wire.BASE_LEN)
    assert (loc.flags, loc.type) == (0, wire.TLV_LOCATION), f"Location answered: {loc}"
    assert wire.LOCATION.unpack_from(loc.value) == (862, 40000), "ports as received"
    subs = [(t.flags, t.type, t.value) for t in wire.parse_tlvs(loc.value, wire.LOCATION.size)]
    assert subs == [
        (0, wire.LOC_SRC_EUI48, bytes.fromhex(SMAC.replace(":", "")) + bytes(2)),
        (0, wire.LOC_DST_IPV6, socket.inet_pton(socket.AF_INET6, REFLECTOR)),
        (0, wire.LOC_SRC_IPV6, socket.inet_pton(socket.AF_INET6, SENDER))], \
        f"Table 5 over IPv6: the IPv6 Destination and Source address sub-TLVs: {subs}"


def test_class_of_service_over_ipv6_sets_the_reply_traffic_class(stateless):
    """DSCP 46 asked for; the request arrives with DSCP 10 and ECN 1."""
    cos = wire.build_tlv(wire.TLV_CLASS_OF_SERVICE, wire.build_cos(46))
    tclass = (10 << 2) | 1
    out = stateless.reflect(frame6(request(tlvs=cos), tc_=tclass))
    p = Ether(out)
    assert p[IPv6].tc == (46 << 2) | 1, f"The reply's Traffic Class: DSCP 46, ECN kept: {p[IPv6].tc:#x}"
    assert p[IPv6].version == 6 and p[IPv6].fl == 0, "Version and Flow Label are left alone."
    (t,) = wire.parse_tlvs(out[P6:], wire.BASE_LEN)
    dscp1, dscp2, ecn, rp = wire.parse_cos(t.value)
    assert (t.flags, dscp1, dscp2, ecn, rp) == (0, 46, 10, 1, 0), "DSCP and ECN as received"
    assert udp6_ok(out)


def test_the_stateful_reflector_counts_ipv6_and_ipv4_sessions_apart(stateful):
    dm = wire.build_tlv(wire.TLV_DIRECT_MEASUREMENT, bytes(12))
    for i in range(3):
        out = stateful.reflect(frame6(request(seq=100 + i, ssid=7, tlvs=dm), sport=41000))
        (t,) = wire.parse_tlvs(out[P6:], wire.BASE_LEN)
        r = wire.parse_reflector_packet(out[P6:])
        _, rx, tx = struct.unpack("!III", t.value)
        assert (r.seq, r.sender_seq, rx, tx) == (i, 100 + i, i + 1, i + 1), \
            "The reflector's own count per IPv6 session (RFC 8762 4.3.1) and its R_RxC, R_TxC."
        assert udp6_ok(out)
    assert stateful.dp.session_count() >= 1


def refused(refl, data, reason, rc=TC_ACT_UNSPEC):
    before = refl.dp.stats()
    got, out = run(refl.ingress, data)
    after = refl.dp.stats()
    counted = {r: after[r] - before[r] for r in records.DROP_REASONS if after[r] != before[r]}
    assert got == rc, f"reflector_ingress returned {got}, not {rc}, for a {reason} packet."
    assert counted == {reason: 1}, f"A {reason} packet should count once there, counted {counted}."
    if rc == TC_ACT_UNSPEC:
        assert out == data, f"A {reason} packet should pass on untouched."


def test_the_allow_list_takes_ipv6_prefixes(stateless):
    dp = stateless.dp
    try:
        dp.set_guard([guard.prefix("2001:db8::/64"), guard.prefix("198.18.0.0/24")], NO_LIMIT)
        stateless.reflect(frame6(request()))
        refused(stateless, frame6(request(), src="2001:db8:0:1::1"), "not_allowed")
        dp.set_guard([guard.prefix("198.18.0.0/24")], NO_LIMIT)
        refused(stateless, frame6(request()), "not_allowed")    # an IPv4-only list admits no IPv6
    finally:
        dp.set_guard([], NO_LIMIT)


@pytest.mark.parametrize("what,kw", [
    ("its own address", {"src": REFLECTOR}),
    ("another address of the host", {"src": OTHER6}),
    ("a multicast address", {"src": "ff02::1"}),
    ("the loopback address", {"src": "::1"}),
    ("the unspecified address", {"src": "::"}),
    ("port 0", {"sport": 0}),
])
def test_no_ipv6_reply_goes_where_none_may_go(stateless, what, kw):
    refused(stateless, frame6(request(), **kw), "bad_source")


def test_a_multicast_source_mac_gets_no_ipv6_reply(stateless):
    data = bytes(Ether(src="33:33:00:00:00:01", dst="00:00:00:00:00:00")
                 / IPv6(src=SENDER, dst=REFLECTOR) / UDP(sport=40000, dport=862) / request())
    refused(stateless, data, "bad_source")


@pytest.mark.parametrize("size", [14, 43])
def test_a_short_ipv6_request_is_not_reflected(stateless, size):
    refused(stateless, frame6(request()[:size]), "too_short")


def test_malformed_ipv6_lengths_to_the_port_are_counted(stateless):
    refused(stateless, frame6(b"\0" * 10), "malformed")        # under TWAMP Light's 14
    bad = bytearray(frame6(request()))
    bad[14 + 40 + 4:14 + 40 + 6] = (8 + 60).to_bytes(2, "big")  # UDP length past the Payload Length
    refused(stateless, bytes(bad), "malformed")


def test_an_ipv6_sender_has_its_own_token_bucket(stateless):
    dp = stateless.dp
    try:
        dp.set_guard([], guard.rate_limit(1, 3))
        got = [run(stateless.ingress, frame6(request(), src="2001:db8::51"))[0] for _ in range(10)]
        assert got.count(TC_ACT_REDIRECT) == 3 and got.count(TC_ACT_SHOT) == 7, \
            f"A burst of 10 gets the bucket's 3, the rest dropped: {got}"
        assert run(stateless.ingress, frame6(request(), src="2001:db8::52"))[0] == TC_ACT_REDIRECT
        keys = {bytes(k.addr) for k in dp.bpf[b"rate_buckets"].keys()}
        assert socket.inet_pton(socket.AF_INET6, "2001:db8::51") in keys, \
            "An IPv6 sender's bucket is keyed by its address."
    finally:
        dp.set_guard([], NO_LIMIT)


def test_tshark_reads_ipv6_replies_with_valid_checksums(stateless, tmp_path):
    """An independent decoder: Wireshark's TWAMP-Test dissector and its UDP checksum check."""
    from scapy.utils import wrpcap
    replies = [stateless.reflect(frame6(request(seq=20 + i, size=n), hlim=33 + i))
               for i, n in enumerate((44, 80, 300))]
    broken = bytearray(replies[0])
    broken[P6 + 30] ^= 0xFF         # one octet changed: tshark must call this checksum bad
    pcap = tmp_path / "ipv6-replies.pcap"
    wrpcap(str(pcap), [Ether(bytes(r)) for r in replies + [broken]])
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-o", "udp.check_checksum:TRUE", "-d", "udp.port==40000,twamp.test",
         "-T", "fields", "-E", "separator=\t", "-e", "ipv6.src", "-e", "ipv6.hlim",
         "-e", "udp.checksum.status", "-e", "twamp.test.seq_number",
         "-e", "twamp.test.sender_seq_number", "-e", "twamp.test.sender_ttl"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in out]
    assert rows[:3] == [[REFLECTOR, "255", "1", str(20 + i), str(20 + i), str(33 + i)] for i in range(3)], \
        f"tshark reads each IPv6 reply (source, Hop Limit 255, checksum status 1 = good, " \
        f"Sequence Numbers, Session-Sender TTL): {rows}"
    assert rows[3][2] == "0", f"The control frame's checksum reads bad (status 0): {rows[3]}"
