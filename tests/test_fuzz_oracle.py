"""The fuzzer's oracle (services/lab/fuzz.py) on hand-made answers (fast layer).

The million-frame run trusts the oracle to pass every correct RFC 8972 answer
(TLV flags rewritten, values filled in, the SSID echoed: bytes after octet 44
legitimately change) and to catch wrong ones. Here a request with a TLV of
each kind gets its answer written out by hand from RFC 8762 Figure 5 and RFC
8972 section 4; the oracle must find nothing in it, and must name each defect
put into a copy of it.
"""

import struct

import pytest

from stamp_bpf.lab import fuzz

pytestmark = pytest.mark.unit

SEQ, SSID, TTL, TOS = fuzz.SEQ_FLOOR + 1, 0x1234, 64, (4 << 2) | 1     # DSCP 4, ECN 1
DSCP1 = 46


def tlv(flags, typ, value):
    return struct.pack("!BBH", flags, typ, len(value)) + value


def request_payload(tail):
    return struct.pack("!III HH", SEQ, 0xE0000000, 5, 0x0001, SSID) + bytes(28) + tail


# A sender's TLVs (U=1, as RFC 8972 section 4 has senders send them).
REQUEST_TLVS = [tlv(0x80, fuzz.TLV_PADDING, b"abcd"),
                tlv(0x80, fuzz.TLV_COS, bytes([DSCP1 << 2, 0, 0, 0])),
                tlv(0x80, 9, b"xy"),                                  # not a supported type
                tlv(0x80, fuzz.TLV_DIRECT, struct.pack("!III", 1, 0, 0))]
# The answer: padding unflagged and unchanged; Class of Service with DSCP2/ECN as
# received, RP 0; type 9 and (stateless) Direct Measurement flagged U, unchanged.
ANSWER_TLVS = [tlv(0, fuzz.TLV_PADDING, b"abcd"),
               tlv(0, fuzz.TLV_COS, struct.pack("!HH", DSCP1 << 10 | TOS << 2, 0)),
               tlv(0x80, 9, b"xy"),
               tlv(0x80, fuzz.TLV_DIRECT, struct.pack("!III", 1, 0, 0))]


def reflected(tail, ssid=SSID, ttl=TTL, seq=SEQ):
    return struct.pack("!IIIHH II I II HH B3x", seq, 0xE0000000, 9, 0x0001, ssid,
                       0xE0000000, 7, SEQ, 0xE0000000, 5, 0x0001, 0, ttl) + tail


def frames(req_tail, answer, out_tos=DSCP1 << 2 | 1):
    req = fuzz.build(fuzz.S_IP, fuzz.R_IP, 50000, fuzz.PORT, request_payload(req_tail),
                     ttl=TTL, tos=TOS)
    out = fuzz.build(fuzz.R_IP, fuzz.S_IP, fuzz.PORT, 50000, answer, ttl=255, tos=out_tos)
    return bytes(req), bytes(out)


def classes(req_tail, answer, **kw):
    return sorted({c for c, _ in fuzz.sent_problems(*frames(req_tail, answer, **kw))})


def test_the_right_answer_breaks_nothing():
    assert classes(b"".join(REQUEST_TLVS), reflected(b"".join(ANSWER_TLVS))) == []


def test_padding_that_is_not_tlvs_comes_back_as_it_came():
    assert classes(bytes(20), reflected(bytes(20)), out_tos=TOS) == []
    assert classes(bytes(20), reflected(b"\x40" + bytes(19)), out_tos=TOS) == ["sent_tlv"]


def _answer_with(i, new):
    tlvs = list(ANSWER_TLVS)
    tlvs[i] = new
    return reflected(b"".join(tlvs))


@pytest.mark.parametrize("name,answer,out_tos,want", [
    ("padding changed", _answer_with(0, tlv(0, 1, b"abcX")), None, "sent_tlv"),
    ("padding flagged U", _answer_with(0, tlv(0x80, 1, b"abcd")), None, "sent_tlv"),
    ("I flag set", _answer_with(1, tlv(fuzz.TLV_I, 4, ANSWER_TLVS[1][4:])), None, "sent_tlv"),
    ("DSCP2 not as received", _answer_with(1, tlv(0, 4, struct.pack("!HH", DSCP1 << 10, 0))),
     None, "sent_tlv"),
    ("unsupported type not flagged U", _answer_with(2, tlv(0, 9, b"xy")), None, "sent_tlv"),
    ("unsupported value changed", _answer_with(2, tlv(0x80, 9, b"xz")), None, "sent_tlv"),
    ("type changed", _answer_with(2, tlv(0x80, 10, b"xy")), None, "sent_tlv"),
    ("stateless answers Direct Measurement",
     _answer_with(3, tlv(0, 5, struct.pack("!III", 1, 1, 1))), None, "sent_tlv"),
    ("TLVs not answered at all", reflected(b"".join(REQUEST_TLVS)), None, "sent_tlv"),
    ("reply not sent with DSCP1", reflected(b"".join(ANSWER_TLVS)), TOS, "sent_dscp"),
    ("SSID not echoed", reflected(b"".join(ANSWER_TLVS), ssid=0), None, "sent_ssid"),
    ("Session-Sender TTL wrong", reflected(b"".join(ANSWER_TLVS), ttl=63), None, "sent_fields"),
    ("Sequence Number not the request's", reflected(b"".join(ANSWER_TLVS), seq=SEQ + 1), None,
     "sent_fields"),
])
def test_a_wrong_answer_is_caught(name, answer, out_tos, want):
    kw = {} if out_tos is None else {"out_tos": out_tos}
    assert want in classes(b"".join(REQUEST_TLVS), answer, **kw), name


def test_a_tlv_running_past_the_packet_is_flagged_m_and_ends_the_walk():
    req = tlv(0x80, 1, b"ab") + struct.pack("!BBH", 0x80, 3, 200) + b"1234"
    good = tlv(0, 1, b"ab") + struct.pack("!BBH", 0x40, 3, 200) + b"1234"
    assert classes(req, reflected(good), out_tos=TOS) == []
    unflagged = tlv(0, 1, b"ab") + struct.pack("!BBH", 0, 3, 200) + b"1234"
    assert classes(req, reflected(unflagged), out_tos=TOS) == ["sent_tlv"]
    rest_changed = tlv(0, 1, b"ab") + struct.pack("!BBH", 0x40, 3, 200) + b"1235"
    assert classes(req, reflected(rest_changed), out_tos=TOS) == ["sent_tlv"]


def test_a_wrong_length_for_the_type_is_flagged_m():
    req = tlv(0x80, fuzz.TLV_COS, b"\0\0\0\0\0\0")
    assert classes(req, reflected(tlv(0x40, fuzz.TLV_COS, b"\0\0\0\0\0\0")), out_tos=TOS) == []
    assert classes(req, reflected(tlv(0, fuzz.TLV_COS, b"\0\0\0\0\0\0")), out_tos=TOS) \
        == ["sent_tlv"]


def test_octets_past_the_answered_tlvs_come_back_as_they_came():
    n = fuzz.TLV_ANSWERED
    req = tlv(0x80, 1, b"") * (n + 1)
    good = tlv(0, 1, b"") * n + tlv(0x80, 1, b"")
    assert classes(req, reflected(good), out_tos=TOS) == []
    assert classes(req, reflected(tlv(0, 1, b"") * (n + 1)), out_tos=TOS) == ["sent_tlv"]
