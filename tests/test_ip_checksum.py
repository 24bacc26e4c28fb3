"""A frame whose IPv4 header checksum is wrong is neither reflected nor taken as a reply.

ip_rcv() drops such a frame (RFC 791, RFC 1122 3.2.1.2); our TC ingress
programs run before it, so they must check the header checksum themselves:
the reflector would otherwise answer a corrupt request, patching its header
checksum for the new TTL and keeping the corruption, and the sender would
measure a reply the stack throws away. The real programs, loaded by the
services' own datapath code, run through BPF_PROG_TEST_RUN on crafted frames
that differ from a valid one only in the IPv4 header checksum.
"""


import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from stamp_bpf.common import tc, wire
from stamp_bpf.lab import progtest
from stamp_bpf.lab.progtest import TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT

pytestmark = pytest.mark.timeout(180)

SENDER_ADDR, REFLECTOR_ADDR = "198.18.0.1", "198.18.0.2"


def frame(src, dst, payload, ip_chksum=None):
    # To lo's all-zero MAC: BPF_PROG_TEST_RUN's skb is then PACKET_HOST.
    return bytes(Ether(src="02:00:00:00:00:01", dst="00:00:00:00:00:00")
                 / IP(src=src, dst=dst, ttl=64, flags="DF", chksum=ip_chksum)
                 / UDP(sport=862, dport=862) / payload)


def with_wrong_ip_checksum(good):
    """`good` with its IPv4 header checksum off by one bit pattern, nothing else changed."""
    stored = int.from_bytes(good[24:26], "big")
    return good[:24] + (stored ^ 0x0F0F).to_bytes(2, "big") + good[26:]


def run(fn, data):
    return progtest.run_once(fn.fd, data)


@pytest.fixture(scope="module")
def loaded(one_cpu):
    with progtest.loaded_pair(SENDER_ADDR, REFLECTOR_ADDR) as pair:
        yield pair


def test_reflector_does_not_reflect_a_request_with_a_wrong_ip_header_checksum(loaded):
    r_dp, r_fns, _, _ = loaded
    good = frame(SENDER_ADDR, REFLECTOR_ADDR, wire.build_sender_packet(1))
    bad = with_wrong_ip_checksum(good)
    before = r_dp.stats()
    rc, out = run(r_fns[tc.INGRESS], bad)
    assert (rc, out) == (TC_ACT_UNSPEC, bad), (
        f"reflector_ingress returned {rc} for a request whose IPv4 header checksum is wrong "
        "and changed it: it must pass it on untouched, for ip_rcv() to drop")
    after = r_dp.stats()
    assert after["bad_checksum"] - before["bad_checksum"] == 1, \
        "the request with a wrong IPv4 header checksum was not counted as bad_checksum"
    assert after["reflected"] == before["reflected"], "the corrupt request was counted as reflected"
    rc, _ = run(r_fns[tc.INGRESS], good)
    assert rc == TC_ACT_REDIRECT, f"the same request with a valid header returned {rc}, not reflected"


def test_sender_does_not_take_a_reply_with_a_wrong_ip_header_checksum(loaded):
    _, _, s_dp, s_fns = loaded
    reply = wire.build_reflector_packet(1, (1, 2), 0x0001, (3, 4), 1, (5, 6), 0x0001, 64)
    good = frame(REFLECTOR_ADDR, SENDER_ADDR, reply)
    bad = with_wrong_ip_checksum(good)
    before = s_dp.stats()
    rc, out = run(s_fns[tc.INGRESS], bad)
    assert (rc, out) == (TC_ACT_UNSPEC, bad), (
        f"sender_ingress returned {rc} for a reply whose IPv4 header checksum is wrong: it must "
        "not be measured (TC_ACT_SHOT) but passed on for ip_rcv() to drop")
    after = s_dp.stats()
    assert after["replies_taken"] == before["replies_taken"], "the corrupt reply was taken as received"
    assert after["bad_checksum"] - before["bad_checksum"] == 1, "the corrupt reply was not counted"
    rc, _ = run(s_fns[tc.INGRESS], good)
    assert rc == TC_ACT_SHOT, f"the same reply with a valid header returned {rc}, not taken"
