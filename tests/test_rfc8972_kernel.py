"""RFC 8972 in the reflector's kernel program, run on crafted frames (BPF_PROG_TEST_RUN).

The real reflector_ingress, loaded by the reflector's own datapath code
(stateless and --stateful), reflects requests built by wire.py; each reply
is decoded by scapy's scapy.contrib.stamp (an independent decoder) and by
wire.py, and its checksums are recomputed by our RFC 1071 helper and by
scapy. Covered: the SSID (RFC 8972 section 3), the TLV flags and values of
section 4 for each supported type, unsupported and malformed ones and a list
longer than the walk's bound, the reply's size and DSCP, and the stateful
session map (RFC 8762 4.3.1): own Sequence Numbers, the LRU bound under
100,000 senders, eviction and idle expiry.

Note: scapy's STAMPTestTLV names the flags "UMIRRRRR" from the low bit, so
its `U` is 0x01; RFC 8972 Figure 6 puts U in the high bit (0x80). The flags
are read here as the raw octet.
"""

import socket
import struct
import time

import pytest
from scapy.contrib.stamp import STAMPSessionReflectorTestUnauthenticated as ScapyReflected
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from stamp_bpf.common import clock, tc, wire
from stamp_bpf.lab import packets, progtest
from stamp_bpf.lab.progtest import TC_ACT_UNSPEC, TC_ACT_REDIRECT
from stamp_bpf.reflector import datapath as reflector_dp

import stampnet

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_cpu")]

SENDER, REFLECTOR = "198.18.0.1", "198.18.0.2"
SMAC = "02:00:00:00:00:01"
U, M = wire.TLV_U, wire.TLV_M
tlv = wire.build_tlv


def frame(payload, sport=40000, src=SENDER, tos=0, udp_chksum=None):
    # To lo's all-zero MAC: BPF_PROG_TEST_RUN's skb is then PACKET_HOST.
    return bytes(Ether(src=SMAC, dst="00:00:00:00:00:00")
                 / IP(src=src, dst=REFLECTOR, tos=tos, ttl=64, flags="DF")
                 / UDP(sport=sport, dport=862, chksum=udp_chksum) / payload)


def request(seq=1, ssid=0, tlvs=b"", size=0):
    return wire.build_sender_packet(seq, (0xE000_0001, 0x8000_0000), 0x0A05, ssid=ssid,
                                    tlvs=tlvs, size=max(size, wire.BASE_LEN))


class Loaded:
    def __init__(self, stateful, max_sessions=reflector_dp.DEFAULT_MAX_SESSIONS):
        self.dp, fns = reflector_dp.load(862, False, stateful=stateful, max_sessions=max_sessions)
        self.fd = fns[tc.INGRESS].fd
        self.configure(False)
        self.dp.set_addresses([REFLECTOR])

    def configure(self, synchronized, sync_source="ntp", timeout_s=300.0):
        self.dp.set_session_policy(sync_source, timeout_s)
        self.dp.configure(clock.ClockState(synchronized, 1e-3, 37))

    def reflect(self, data):
        """The frame reflector_ingress sends back; fails unless it reflected."""
        runner = progtest.TestRunner(data)
        rc, _ = runner.run(self.fd)
        assert progtest.signed(rc) == TC_ACT_REDIRECT, \
            f"reflector_ingress returned {progtest.signed(rc)}, not TC_ACT_REDIRECT"
        return runner.output()


@pytest.fixture(scope="module")
def stateless():
    r = Loaded(False)
    yield r
    r.dp.bpf.cleanup()


@pytest.fixture(scope="module")
def stateful():
    r = Loaded(True)
    yield r
    r.dp.bpf.cleanup()


@pytest.fixture(params=["stateless", "stateful"])
def refl(request, stateless, stateful):
    return stateless if request.param == "stateless" else stateful


def checked(req, out):
    """The reply as scapy decodes it, after checking size and checksums."""
    assert len(out) == len(req), f"a {len(req)}-octet frame came back with {len(out)} octets"
    assert stampnet.ip_header_ok(out), "the reply's IPv4 header checksum is wrong"
    stored, correct = stampnet.udp_checksum(out)
    assert stored == correct, f"the reply's UDP checksum is {stored:#06x}, should be {correct:#06x}"
    p = Ether(out)
    ck = p[UDP].chksum
    del p[UDP].chksum
    del p[IP].chksum
    assert Ether(bytes(p))[UDP].chksum == ck, "scapy disagrees with the reply's UDP checksum"
    return ScapyReflected(out[42:])


def scapy_tlvs(p):
    """[(flags octet, type, value)] of a reply as scapy decodes it."""
    return [(int(t.flags), t.type, bytes(t.value)) for t in p.tlv_objects]


# -- SSID (section 3) ---------------------------------------------------------------

@pytest.mark.parametrize("ssid", [0, 1, 0x1234, 0xFFFF])
def test_ssid_is_copied_into_the_reply(refl, ssid):
    req = frame(request(seq=7, ssid=ssid))
    p = checked(req, refl.reflect(req))
    assert p.ssid == ssid, f"a request with SSID {ssid:#06x} came back with SSID {p.ssid:#06x}"
    assert p.seq_sender == 7 and p.mbz1 == 0 and p.mbz2 == 0


# -- TLV flags (section 4) ------------------------------------------------------------

def test_each_supported_type_is_handled_and_unsupported_ones_flagged_u(stateful):
    tlvs = (tlv(wire.TLV_EXTRA_PADDING, bytes(12)) + tlv(wire.TLV_LOCATION, bytes(4))
            + tlv(wire.TLV_TIMESTAMP_INFO, bytes(4)) + tlv(wire.TLV_CLASS_OF_SERVICE, bytes(4))
            + tlv(wire.TLV_DIRECT_MEASUREMENT, bytes(12)) + tlv(240, b"abc") + tlv(245)
            + tlv(251, bytes(8)) + tlv(wire.TLV_HMAC, bytes(16)) + tlv(6, bytes(4)))
    req = frame(request(tlvs=tlvs))
    got = scapy_tlvs(checked(req, stateful.reflect(req)))
    assert [(f, t) for f, t, _ in got] == [
        (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (U, 240), (U, 245), (U, 251), (U, 8), (U, 6)], (
        "flags per TLV (0: handled, 0x80: U, unrecognized): " + str([(hex(f), t) for f, t, _ in got]))
    assert got[5][2] == b"abc" and got[8][2] == bytes(16), "an unsupported TLV's Value was changed"


def test_direct_measurement_without_state_is_flagged_u(stateless):
    req = frame(request(tlvs=tlv(wire.TLV_DIRECT_MEASUREMENT, struct.pack("!III", 5, 0, 0))))
    got = scapy_tlvs(checked(req, stateless.reflect(req)))
    assert got == [(U, 5, struct.pack("!III", 5, 0, 0))], (
        f"a stateless reflector has no session counts: Direct Measurement must come back with "
        f"U=1 and as sent, got {got}")


@pytest.mark.parametrize("bad, why", [
    (tlv(wire.TLV_CLASS_OF_SERVICE, bytes(3)), "Class of Service of length 3 (must be 4)"),
    (tlv(wire.TLV_DIRECT_MEASUREMENT, bytes(8)), "Direct Measurement of length 8 (must be 12)"),
    (tlv(wire.TLV_TIMESTAMP_INFO, bytes(2)), "Timestamp Information shorter than its 4 octets"),
    (tlv(wire.TLV_LOCATION, bytes(2)), "Location shorter than its two ports"),
    (tlv(wire.TLV_LOCATION, bytes(4) + tlv(wire.LOC_DST_IP, bytes(8))),
     "Location whose Destination IP Address sub-TLV has length 8 (must be 16)"),
])
def test_a_malformed_tlv_is_flagged_m_and_ends_the_walk(refl, bad, why):
    after = tlv(wire.TLV_EXTRA_PADDING, b"zz")
    req = frame(request(tlvs=tlv(wire.TLV_EXTRA_PADDING, b"x") + bad + after))
    got = scapy_tlvs(checked(req, refl.reflect(req)))
    assert got[0][0] == 0, "the well-formed TLV before the malformed one was not handled"
    assert got[1][0] & M and not got[1][0] & U, f"{why}: flags {got[1][0]:#04x}, want M=1 U=0"
    assert got[2] == (U, wire.TLV_EXTRA_PADDING, b"zz"), \
        "the TLV after a malformed one must come back as it came (U=1 as sent), not processed"


def test_a_tlv_running_past_the_packet_is_flagged_m(refl):
    body = request(tlvs=tlv(wire.TLV_EXTRA_PADDING, b"abcd"))
    body = body[:44] + wire.TLV.pack(U, wire.TLV_EXTRA_PADDING, 40) + b"abcd"  # 40 claimed, 4 there
    req = frame(body)
    out = checked(req, refl.reflect(req))
    raw = bytes(out)
    assert raw[44] == M, f"flags {raw[44]:#04x} of a TLV longer than the packet: want M=1 only"
    assert raw[45:] == body[45:], "the malformed TLV's other octets changed"


def test_a_list_longer_than_the_walk_bound_is_answered_up_to_the_bound(refl):
    n = wire.TLV_WALK_MAX + 4
    req = frame(request(tlvs=b"".join(tlv(wire.TLV_EXTRA_PADDING, bytes([i])) for i in range(n))))
    got = scapy_tlvs(checked(req, refl.reflect(req)))
    flags = [f for f, _, _ in got]
    assert flags == [0] * wire.TLV_WALK_MAX + [U] * 4, (
        f"with {n} TLVs the first {wire.TLV_WALK_MAX} are handled (U=0) and the rest come back "
        f"as sent (U=1); got flags {flags}")
    assert [v for _, _, v in got] == [bytes([i]) for i in range(n)], "a padding Value changed"


def test_a_scapy_built_request_with_default_tlv_flags_is_answered(refl):
    """scapy's STAMPTestTLV sends flags 0 by default (RFC 8972 wants U=1 from senders): a
    first TLV of a known type that fits the packet is taken for TLVs all the same."""
    from scapy.contrib.stamp import STAMPSessionSenderTestUnauthenticated, STAMPTestTLV
    req_payload = bytes(STAMPSessionSenderTestUnauthenticated(seq=3, ssid=77, tlv_objects=[
        STAMPTestTLV(type=wire.TLV_TIMESTAMP_INFO, len=4, value=bytes(4)),
        STAMPTestTLV(type=wire.TLV_CLASS_OF_SERVICE, len=4, value=wire.build_cos(8)),
        STAMPTestTLV(type=241, len=2, value=b"hi")]))
    req = frame(req_payload)
    p = checked(req, refl.reflect(req))
    assert p.ssid == 77
    assert [(f, t) for f, t, _ in scapy_tlvs(p)] == [(0, 3), (0, 4), (U, 241)], scapy_tlvs(p)


def test_padding_that_is_not_tlvs_comes_back_unchanged(refl):
    """An RFC 8762 or TWAMP-Light sender's padding (zeros; octets whose first "TLV" has
    type 0, or flags other than a sender's 0x80 and a length past the packet) is not
    taken for TLVs."""
    for pad in (bytes(56), bytes((37 * i + 11) & 0x7F or 1 for i in range(56)),
                b"\x80\x00" + bytes(range(1, 55)), b"\x01\x05\xff\xff" + bytes(52)):
        req = frame(request() + pad)
        out = checked(req, refl.reflect(req))
        assert bytes(out)[44:] == pad, "padding past the base packet was changed"


def test_tlvs_at_odd_offsets_keep_the_udp_checksum_valid(refl):
    """Extra Padding of odd length puts the TLVs after it at odd offsets, where each changed
    octet sits in the other half of its checksum word."""
    for pad in (1, 3, 5):
        req = frame(request(tlvs=tlv(wire.TLV_EXTRA_PADDING, bytes(pad))
                            + tlv(wire.TLV_CLASS_OF_SERVICE, wire.build_cos(10)) + tlv(240, b"q")
                            + tlv(wire.TLV_TIMESTAMP_INFO, bytes(4))), tos=0x2B)
        got = scapy_tlvs(checked(req, refl.reflect(req)))
        assert [f for f, _, _ in got] == [0, 0, U, 0], f"flags after {pad} octets of padding: {got}"


def test_udp_checksum_zero_stays_zero(refl):
    req = frame(request(tlvs=tlv(wire.TLV_TIMESTAMP_INFO, bytes(4))), udp_chksum=0)
    out = refl.reflect(req)
    assert out[40:42] == b"\0\0", "a request without UDP checksum (0) got one back"
    assert stampnet.ip_header_ok(out)


# -- values ---------------------------------------------------------------------------------

def test_location_reports_ports_addresses_and_mac_as_received(refl):
    subs = (tlv(wire.LOC_SRC_MAC, bytes(8), flags=0) + tlv(wire.LOC_DST_IP, bytes(16), flags=0)
            + tlv(wire.LOC_SRC_IP, bytes(16), flags=0) + tlv(200, bytes(4), flags=0))
    req = frame(request(tlvs=tlv(wire.TLV_LOCATION, bytes(4) + subs)), sport=41234)
    got = scapy_tlvs(checked(req, refl.reflect(req)))
    assert got[0][:2] == (0, wire.TLV_LOCATION), f"Location flags/type: {got[0][:2]}"
    value = got[0][2]
    assert len(value) == 4 + len(subs), "the Location TLV changed length"
    assert wire.LOCATION.unpack_from(value) == (862, 41234), \
        f"Destination/Source Port {wire.LOCATION.unpack_from(value)}, sent to 862 from 41234"
    found = wire.parse_tlvs(value, 4)
    mac = bytes.fromhex(SMAC.replace(":", ""))
    assert [(t.flags, t.type, t.value) for t in found] == [
        (0, wire.LOC_SRC_EUI48, mac + bytes(2)),
        (0, wire.LOC_DST_IPV4, socket.inet_aton(REFLECTOR) + bytes(12)),
        (0, wire.LOC_SRC_IPV4, socket.inet_aton(SENDER) + bytes(12)),
        (U, 200, bytes(4)),
    ], f"Location sub-TLVs as answered: {found}"


@pytest.mark.parametrize("tos", [0x00, 0x29, 0xB8, 0xFF])
def test_class_of_service_reports_arrival_and_sends_the_asked_dscp(refl, tos):
    dscp1 = 46 if tos != 0xB8 else 0
    req = frame(request(tlvs=tlv(wire.TLV_CLASS_OF_SERVICE, wire.build_cos(dscp1))), tos=tos)
    out = refl.reflect(req)
    got = scapy_tlvs(checked(req, out))
    assert got[0][0] == 0, f"Class of Service flags {got[0][0]:#04x}"
    assert wire.parse_cos(got[0][2]) == (dscp1, tos >> 2, tos & 3, 0), (
        f"(DSCP1, DSCP2, ECN, RP) = {wire.parse_cos(got[0][2])}: want the asked DSCP, the "
        f"DSCP and ECN of TOS {tos:#04x} as received, RP 0")
    assert got[0][2][2:] == b"\0\0", "Reserved is not zero"
    assert out[15] >> 2 == dscp1 and out[15] & 3 == tos & 3, (
        f"the reply left with TOS {out[15]:#04x}: want DSCP {dscp1} and the received ECN")


@pytest.mark.parametrize("synced, source, want", [
    (False, "ntp", wire.SYNC_SRC_FREE_RUNNING), (True, "ntp", wire.SYNC_SRC_NTP),
    (True, "ptp", wire.SYNC_SRC_PTP)])
def test_timestamp_information_says_software_timestamps_and_the_clock_source(
        stateless, synced, source, want):
    stateless.configure(synced, source)
    try:
        req = frame(request(tlvs=tlv(wire.TLV_TIMESTAMP_INFO, bytes(4))))
        got = scapy_tlvs(checked(req, stateless.reflect(req)))
    finally:
        stateless.configure(False)
    assert got == [(0, wire.TLV_TIMESTAMP_INFO, bytes([want, wire.TS_METHOD_SW_LOCAL] * 2))], (
        f"clock synchronised={synced}, --sync-source {source}: want sync source {want} and SW "
        f"Local ({wire.TS_METHOD_SW_LOCAL}) both ways, got {got}")


# -- stateful sessions (RFC 8762 4.3.1) ----------------------------------------------------

def test_stateful_sequence_numbers_count_per_session_from_zero(stateful, stateless):
    dm = tlv(wire.TLV_DIRECT_MEASUREMENT, struct.pack("!III", 77, 0, 0))
    seen = {}
    for i, (sport, ssid) in enumerate([(42000, 1), (42000, 2), (42001, 1)] * 3):
        req = frame(request(seq=1000 + i, ssid=ssid, tlvs=dm), sport=sport)
        p = checked(req, stateful.reflect(req))
        seen.setdefault((sport, ssid), []).append(p.seq)
        assert p.seq_sender == 1000 + i, "the Session-Sender Sequence Number was not copied"
        s_tx, r_rx, r_tx = struct.unpack("!III", scapy_tlvs(p)[0][2])
        assert (s_tx, r_rx, r_tx) == (77, p.seq + 1, p.seq + 1), (
            f"Direct Measurement (S_TxC, R_RxC, R_TxC) = {(s_tx, r_rx, r_tx)} for the reply with "
            f"Sequence Number {p.seq}: S_TxC as sent, the session's counts with this packet")
    assert seen == {k: [0, 1, 2] for k in seen}, (
        f"each (sender port, SSID) is its own session counting from 0: {seen}")
    req = frame(request(seq=1000, ssid=1), sport=42000)
    assert checked(req, stateless.reflect(req)).seq == 1000, "stateless must copy the sender's"


def test_an_idle_session_starts_again_from_zero(stateful):
    stateful.configure(False, timeout_s=0.2)
    try:
        before = stateful.dp.stats()["sessions_expired"]
        req = frame(request(ssid=9), sport=43000)
        seqs = [checked(req, stateful.reflect(req)).seq for _ in range(2)]
        time.sleep(0.3)
        seqs.append(checked(req, stateful.reflect(req)).seq)
    finally:
        stateful.configure(False)
    assert seqs == [0, 1, 0], f"Sequence Numbers {seqs}: after 0.3 s idle (timeout 0.2 s) want 0"
    assert stateful.dp.stats()["sessions_expired"] - before == 1, "the expiry was not counted"


def fast_frame(template, i):
    """`template` from sender 10.x.y.z:port, i-th of many: source address and port from
    i, IPv4 checksum recomputed, UDP checksum 0 (none)."""
    f = bytearray(template)
    f[26:30] = socket.inet_aton(f"10.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF}")
    f[34:36] = struct.pack("!H", 1024 + i % 60000)
    f[24:26] = b"\0\0"
    f[24:26] = struct.pack("!H", packets.rfc1071(bytes(f[14:34])))
    return bytes(f)


def test_the_session_map_holds_its_bound_under_100000_senders():
    """100,000 senders into a map of 1,024: every packet is reflected, the map never holds
    more than its bound, the least recently used sessions are the ones evicted, and the
    evictions are counted."""
    bound, n = 1024, 100_000
    r = Loaded(True, max_sessions=bound)
    try:
        template = frame(request(tlvs=tlv(wire.TLV_DIRECT_MEASUREMENT, bytes(12))), udp_chksum=0)
        runner_fd = r.fd
        refused = 0
        for i in range(n):
            rc, _ = progtest.TestRunner(fast_frame(template, i)).run(runner_fd)
            refused += progtest.signed(rc) != TC_ACT_REDIRECT
            if i in (bound, n // 2):
                live = r.dp.session_count()
                assert live <= bound, f"after {i} senders the map holds {live} > {bound}"
        assert refused == 0, f"{refused} of {n} packets were not reflected with the map full"
        live = r.dp.session_count()
        stats = r.dp.stats()
        assert live <= bound, f"the map holds {live} sessions, more than its bound {bound}"
        assert stats["sessions_created"] == n, f"{stats['sessions_created']} sessions created, not {n}"
        evicted = stats["sessions_created"] - live
        assert evicted >= n - bound, f"only {evicted} evictions for {n} senders into {bound}"
        # The newest sender is still known (its next reply counts on); the first is not.
        newest = Ether(r.reflect(fast_frame(template, n - 1)))
        first = Ether(r.reflect(fast_frame(template, 0)))
        assert ScapyReflected(bytes(newest[UDP].payload)).seq == 1, \
            "the most recent session was evicted"
        assert ScapyReflected(bytes(first[UDP].payload)).seq == 0, \
            "the least recently used session was not the one evicted"
    finally:
        r.dp.bpf.cleanup()
