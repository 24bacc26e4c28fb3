"""Two defects a fuzzer found in the ingress programs, by hand on crafted frames (BPF_PROG_TEST_RUN).

1. sender_ingress took replies from a session's reflector addressed to any
   IPv4 address (only the ports were checked): a reply to another address of
   this host, or one seen in promiscuous mode or spoofed, was measured. It
   must take only replies to the address its socket sends that session from.
2. udp4_csum_ok() took a UDP checksum field equal to the folded pseudo-header
   sum for an offloaded partial checksum, whatever the payload summed to: a
   corrupt frame with that field was reflected and measured. The one's
   complement sum must hold unless the skb really is CHECKSUM_PARTIAL (which
   BPF_PROG_TEST_RUN's never is; tests/test_offload.py covers the real one).

The real programs, loaded by the services' own datapath code.
"""

import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from stamp_bpf.common import tc, wire
from stamp_bpf.lab import progtest
from stamp_bpf.lab.progtest import TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT

pytestmark = pytest.mark.timeout(180)

SENDER_ADDR, REFLECTOR_ADDR, OTHER_ADDR = "198.18.0.1", "198.18.0.2", "198.18.0.99"
UDP_CSUM_AT = 14 + 20 + 6


def frame(src, dst, payload, chksum=None):
    # To lo's all-zero MAC: BPF_PROG_TEST_RUN's skb is then PACKET_HOST.
    return bytes(Ether(src="02:00:00:00:00:01", dst="00:00:00:00:00:00")
                 / IP(src=src, dst=dst, ttl=64) / UDP(sport=862, dport=862, chksum=chksum)
                 / payload)


def reply_payload():
    return wire.build_reflector_packet(1, (1, 2), 0x0001, (3, 4), 1, (5, 6), 0x0001, 64)


def pseudo_header_sum(src, dst, udp_len):
    """The folded (not complemented) RFC 768 pseudo-header sum, as an offloading
    sender leaves it in the checksum field."""
    raw = _packed(src) + _packed(dst) + struct.pack("!HH", 17, udp_len)
    s = sum(struct.unpack("!6H", raw))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _packed(addr):
    return bytes(int(x) for x in addr.split("."))


def with_pseudo_sum_checksum(good):
    """`good` with its UDP checksum field set to the folded pseudo-header sum: the
    value an offloaded partial checksum has, here on a frame that is not partial."""
    udp_len = int.from_bytes(good[38:40], "big")
    src, dst = ".".join(map(str, good[26:30])), ".".join(map(str, good[30:34]))
    field = pseudo_header_sum(src, dst, udp_len)
    assert field != int.from_bytes(good[40:42], "big"), "pick another payload"
    return good[:UDP_CSUM_AT] + field.to_bytes(2, "big") + good[UDP_CSUM_AT + 2:]


def run(fn, data):
    return progtest.run_once(fn.fd, data)


@pytest.fixture(scope="module")
def loaded(one_cpu):
    with progtest.loaded_pair(SENDER_ADDR, REFLECTOR_ADDR) as pair:
        yield pair


def test_sender_takes_only_replies_to_its_own_address(loaded):
    _, _, s_dp, s_fns = loaded
    to_other = frame(REFLECTOR_ADDR, OTHER_ADDR, reply_payload())
    before = s_dp.stats()["replies_taken"]
    rc, out = run(s_fns[tc.INGRESS], to_other)
    assert (rc, out) == (TC_ACT_UNSPEC, to_other), (
        f"sender_ingress returned {rc} for a reply to {OTHER_ADDR}, not the session's source "
        f"{SENDER_ADDR}: it must pass it on untouched, not measure it")
    assert s_dp.stats()["replies_taken"] == before, "a reply to another address was taken"
    rc, _ = run(s_fns[tc.INGRESS], frame(REFLECTOR_ADDR, SENDER_ADDR, reply_payload()))
    assert rc == TC_ACT_SHOT, f"the same reply to {SENDER_ADDR} returned {rc}, not taken"


def test_sender_takes_no_reply_while_its_session_has_no_source_address(loaded):
    _, _, s_dp, s_fns = loaded
    s_dp.add_session(REFLECTOR_ADDR, "0.0.0.0")     # no route yet (sender NO_ROUTE)
    try:
        for dst in (SENDER_ADDR, "0.0.0.0"):
            rc, _ = run(s_fns[tc.INGRESS], frame(REFLECTOR_ADDR, dst, reply_payload()))
            assert rc == TC_ACT_UNSPEC, f"a reply to {dst} was taken with no source address known"
    finally:
        s_dp.add_session(REFLECTOR_ADDR, SENDER_ADDR)
    rc, _ = run(s_fns[tc.INGRESS], frame(REFLECTOR_ADDR, SENDER_ADDR, reply_payload()))
    assert rc == TC_ACT_SHOT, "once the source address is known, its replies are taken"


def test_reflector_refuses_a_pseudo_header_sum_in_place_of_a_checksum(loaded):
    r_dp, r_fns, _, _ = loaded
    good = frame(SENDER_ADDR, REFLECTOR_ADDR, wire.build_sender_packet(3))
    bad = with_pseudo_sum_checksum(good)
    before = r_dp.stats()
    rc, out = run(r_fns[tc.INGRESS], bad)
    assert (rc, out) == (TC_ACT_UNSPEC, bad), (
        f"reflector_ingress returned {rc} for a request whose UDP checksum field is the bare "
        "pseudo-header sum on a full-checksum frame: it must pass it on untouched, not reflect it")
    after = r_dp.stats()
    assert after["bad_checksum"] - before["bad_checksum"] == 1, "it was not counted as bad_checksum"
    assert after["reflected"] == before["reflected"]
    assert run(r_fns[tc.INGRESS], good)[0] == TC_ACT_REDIRECT, "the valid request is reflected"


def test_sender_refuses_a_pseudo_header_sum_in_place_of_a_checksum(loaded):
    _, _, s_dp, s_fns = loaded
    good = frame(REFLECTOR_ADDR, SENDER_ADDR, reply_payload())
    bad = with_pseudo_sum_checksum(good)
    before = s_dp.stats()
    rc, out = run(s_fns[tc.INGRESS], bad)
    assert (rc, out) == (TC_ACT_UNSPEC, bad), (
        f"sender_ingress returned {rc} for a reply whose UDP checksum field is the bare "
        "pseudo-header sum: it must not be measured")
    after = s_dp.stats()
    assert after["bad_checksum"] - before["bad_checksum"] == 1
    assert after["replies_taken"] == before["replies_taken"]
    assert run(s_fns[tc.INGRESS], good)[0] == TC_ACT_SHOT


@pytest.mark.parametrize("field", [0xFFFF, 0x0000], ids=["ffff", "zero"])
def test_a_computed_checksum_of_zero_is_sent_as_ffff_and_accepted(loaded, field):
    """RFC 768: a computed checksum of 0 is sent as 0xffff (0 means none); both pass."""
    r_dp, r_fns, _, _ = loaded
    base = bytearray(frame(SENDER_ADDR, REFLECTOR_ADDR, wire.build_sender_packet(5), chksum=0))
    # Make the computed checksum 0: put the complement of the rest's sum in the
    # last two payload octets (the padding of the 44-octet base).
    udp = bytes(base[34:])
    rest = pseudo_header_sum(SENDER_ADDR, REFLECTOR_ADDR, len(udp))
    rest += sum(struct.unpack(f"!{len(udp) // 2}H", udp[:len(udp) // 2 * 2]))
    while rest >> 16:
        rest = (rest & 0xFFFF) + (rest >> 16)
    base[-2:] = (0xFFFF - rest).to_bytes(2, "big")     # now the data sums to 0xffff
    base[UDP_CSUM_AT:UDP_CSUM_AT + 2] = field.to_bytes(2, "big")
    assert run(r_fns[tc.INGRESS], bytes(base))[0] == TC_ACT_REDIRECT, \
        f"a datagram whose computed checksum is 0, sent with field {field:#06x}, is valid"
