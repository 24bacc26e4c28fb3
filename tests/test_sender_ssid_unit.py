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
