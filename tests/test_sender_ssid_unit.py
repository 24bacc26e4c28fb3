"""The sender's SSID rules (RFC 8972 section 3), without root: allocation and reply checks."""

import random

import pytest

from stamp_bpf.common import wire
from stamp_bpf.sender import ssid

pytestmark = pytest.mark.unit


def test_allocated_ssids_are_non_zero_and_unique_among_live_sessions():
    alloc = ssid.SsidAllocator(rng=random.Random(1))
    taken = [alloc.take() for _ in range(5000)]
    assert 0 not in taken, "an SSID of 0 means none (RFC 8972 section 3)"
    assert len(set(taken)) == len(taken), "two live sessions got the same SSID"
    alloc.release(taken[0])
    assert alloc.take() not in set(taken[1:]), "a released SSID clashed with a live one"


def test_allocation_wraps_past_65535_and_never_yields_0():
    class Top(random.Random):
        def randint(self, a, b):
            return 0xFFFF
    alloc = ssid.SsidAllocator(rng=Top())
    assert [alloc.take() for _ in range(3)] == [0xFFFF, 1, 2]


def test_fixed_ssid_is_used_once():
    alloc = ssid.SsidAllocator(fixed=100)
    assert alloc.take() == 100
    with pytest.raises(ValueError, match="one reflector"):
        alloc.take()


def test_reply_checks():
    c = ssid.SsidCheck(0x1234)
    assert c.summary() == {"ssid": 0x1234, "ssid_echoed": None}
    assert c.accept(0x1234) == (True, None)
    assert c.accept(0) == (True, "zeroed"), "SSID 0 from an RFC 8762 reflector is accepted, noted"
    assert c.accept(0) == (True, None), "noted once only"
    assert c.accept(0x4321) == (False, "mismatch"), "another session's SSID is not counted"
    assert c.accept(0x4321) == (False, None), "logged once only"
    assert c.summary() == {"ssid": 0x1234, "ssid_echoed": False, "ssid_mismatched": 2}


def test_wire_tlv_helpers_round_trip():
    body = (wire.build_tlv(wire.TLV_CLASS_OF_SERVICE, wire.build_cos(46))
            + wire.build_tlv(240, b"abc") + wire.TLV.pack(wire.TLV_U, 1, 9) + b"xy")
    pkt = wire.build_sender_packet(1, ssid=7, tlvs=body)
    found = wire.parse_tlvs(pkt)
    assert [(t.offset, t.flags, t.type) for t in found] == [
        (44, 0x80, 4), (52, 0x80, 240), (59, 0x80, 1)]
    assert found[2].value == b"xy", "a TLV running past the packet keeps what is there"
    assert wire.parse_cos(found[0].value) == (46, 0, 0, 0)
    assert wire.parse_sender_packet(pkt)[0] == 1 and pkt[14:16] == b"\x00\x07"


def test_tlv_report_counts_re_marking_and_sees_nat():
    from stamp_bpf.sender import tlvs
    import socket as so
    cos = wire.build_tlv(wire.TLV_CLASS_OF_SERVICE, wire.COS.pack((46 << 10) | (10 << 4) | (1 << 2), 0),
                         flags=0)
    loc = wire.build_tlv(wire.TLV_LOCATION, wire.LOCATION.pack(862, 40000) + wire.build_tlv(
        wire.LOC_SRC_IPV4, so.inet_aton("203.0.113.9") + bytes(12), flags=0), flags=0)
    r = tlvs.TlvReport(dscp=46)
    r.on_reply(cos + loc, (12 << 2) | 1, "10.0.0.1", 862, "10.0.0.2", 862)
    out = r.summary()
    assert out["cos"]["dscp_at_reflector"] == 10 and out["cos"]["dscp_on_reply"] == 12
    assert (out["cos"]["remarked_forward"], out["cos"]["remarked_backward"]) == (1, 1)
    assert out["location"]["src_addr"] == "203.0.113.9" and out["location"]["nat_seen"] is True
    bad = wire.TLV.pack(wire.TLV_M, wire.TLV_CLASS_OF_SERVICE, 3) + bytes(3) + cos
    r2 = tlvs.TlvReport(dscp=46)
    r2.on_reply(bad, 46 << 2, "10.0.0.1", 862, "10.0.0.2", 862)
    assert r2.summary()["tlvs_unanswered"] == {"4": 1} and "dscp_at_reflector" not in r2.summary()["cos"], \
        "processing must stop at a TLV flagged M (RFC 8972 section 4)"
