"""The reflector's guard in its kernel program, on crafted frames (BPF_PROG_TEST_RUN).

The real reflector_ingress, loaded and configured by the reflector's own
datapath code, gets frames built with scapy: senders in and out of the
allow-list (and a list changed in place), the never-reflect cases (own,
broadcast, multicast, loopback, unspecified sources, port 0, a group MAC, a
request shorter than its reply would be, malformed lengths), and a sender over
its token bucket next to one within it. Each refusal must leave the frame
exactly as it came and count one under its reason; rate-limited ones are
dropped (TC_ACT_SHOT).
"""

import ipaddress
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from stamp_bpf.common import clock, records, tc, wire
from stamp_bpf.lab import progtest
from stamp_bpf.lab.progtest import TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT
from stamp_bpf.reflector import datapath as reflector_dp
from stamp_bpf.reflector import guard

pytestmark = [pytest.mark.timeout(300)]

SENDER, REFLECTOR, BROADCAST, OTHER = "198.18.0.1", "198.18.0.2", "198.18.0.255", "192.0.2.9"
SMAC = "02:00:00:00:00:01"
NO_LIMIT = guard.rate_limit(0, 1)


def frame(src=SENDER, dst=REFLECTOR, sport=40000, smac=SMAC, size=wire.BASE_LEN, raw=None):
    payload = wire.build_sender_packet(7, (0xE000_0001, 0x8000_0000), 0x0A05,
                                       size=max(size, wire.BASE_LEN))[:size]
    # To lo's all-zero MAC: BPF_PROG_TEST_RUN's skb is then PACKET_HOST.
    pkt = (Ether(src=smac, dst="00:00:00:00:00:00") / IP(src=src, dst=dst, ttl=64)
           / UDP(sport=sport, dport=862) / (raw if raw is not None else payload))
    return bytes(pkt)


@pytest.fixture(scope="module")
def loaded(one_cpu):
    dp, fns = reflector_dp.load(862, False)
    dp.configure(clock.ClockState(False, 1e-3, 37))
    dp.set_addresses([REFLECTOR], [BROADCAST, OTHER])
    yield dp, fns[tc.INGRESS].fd
    dp.bpf.cleanup()


def run(loaded, data):
    """(return code, frame after, {reason: count increase}) of one run."""
    dp, fd = loaded
    before = dp.stats()
    runner = progtest.TestRunner(data)
    rc, _ = runner.run(fd)
    after = dp.stats()
    return (progtest.signed(rc), runner.output(),
            {r: after[r] - before[r] for r in records.DROP_REASONS if after[r] != before[r]})


def refused(loaded, data, reason, rc=TC_ACT_UNSPEC):
    got, out, counted = run(loaded, data)
    assert got == rc, f"reflector_ingress returned {got}, not {rc}, for a {reason} packet."
    assert counted == {reason: 1}, f"A {reason} packet should count once there, counted {counted}."
    if rc == TC_ACT_UNSPEC:
        assert out == data, f"A {reason} packet should pass on untouched."


def test_without_a_list_every_sender_is_reflected(loaded):
    loaded[0].set_guard([], NO_LIMIT)
    for src in (SENDER, "203.0.113.5"):
        assert run(loaded, frame(src=src))[0] == TC_ACT_REDIRECT


def test_only_senders_in_the_list_are_reflected_and_a_new_list_applies_at_once(loaded):
    dp = loaded[0]
    dp.set_guard([guard.prefix("198.18.0.0/28"), guard.prefix("2001:db8::/32")], NO_LIMIT)
    assert run(loaded, frame(src=SENDER))[0] == TC_ACT_REDIRECT
    assert run(loaded, frame(src="198.18.0.15"))[0] == TC_ACT_REDIRECT
    refused(loaded, frame(src="198.18.0.16"), "not_allowed")
    refused(loaded, frame(src="203.0.113.5"), "not_allowed")
    added, removed = dp.set_guard([guard.prefix("198.18.0.16/28"), guard.prefix(SENDER)],
                                  NO_LIMIT)
    assert {str(n) for n in added} == {"198.18.0.16/28", "198.18.0.1/32"}
    assert {str(n) for n in removed} == {"198.18.0.0/28", "2001:db8::/32"}
    assert run(loaded, frame(src="198.18.0.16"))[0] == TC_ACT_REDIRECT
    assert run(loaded, frame(src=SENDER))[0] == TC_ACT_REDIRECT
    refused(loaded, frame(src="198.18.0.15"), "not_allowed")
    dp.set_guard([guard.prefix("fd00::/8")], NO_LIMIT)
    refused(loaded, frame(src=SENDER), "not_allowed")     # an IPv6-only list admits no IPv4
    keys = [(k.prefixlen, bytes(k.a.addr)) for k in dp.bpf[b"allow_prefixes"].keys()]
    assert keys == [(8, b"\xfd" + b"\0" * 15)], f"The trie holds exactly the list in force: {keys}"
    dp.set_guard([guard.prefix("198.18.0.0/24")], NO_LIMIT)
    keys = [(k.prefixlen, bytes(k.a.addr)) for k in dp.bpf[b"allow_prefixes"].keys()]
    assert keys == [(96 + 24, b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 0, 0]))], \
        f"An IPv4 prefix is keyed as its IPv4-mapped IPv6 prefix: {keys}"
    dp.set_guard([], NO_LIMIT)
    assert run(loaded, frame(src="203.0.113.5"))[0] == TC_ACT_REDIRECT


@pytest.mark.parametrize("what,kw", [
    ("its own address", {"src": REFLECTOR}),
    ("its subnet broadcast", {"src": BROADCAST}),
    ("another address of the host", {"src": OTHER}),
    ("a multicast address", {"src": "224.0.0.5"}),
    ("the limited broadcast", {"src": "255.255.255.255"}),
    ("a reserved 240/4 address", {"src": "240.0.0.1"}),
    ("the unspecified address", {"src": "0.0.0.0"}),
    ("a loopback address", {"src": "127.0.0.1"}),
    ("port 0", {"sport": 0}),
    ("a multicast MAC", {"smac": "01:00:5e:00:00:05"}),
])
def test_a_reply_that_would_go_where_none_may_go_is_not_sent(loaded, what, kw):
    loaded[0].set_guard([], NO_LIMIT)
    refused(loaded, frame(**kw), "bad_source")


def test_requests_to_broadcast_or_another_address_are_not_ours(loaded):
    loaded[0].set_guard([], NO_LIMIT)
    for dst in (BROADCAST, OTHER, "224.0.0.5", "255.255.255.255", "0.0.0.0", "240.0.0.1"):
        rc, out, counted = run(loaded, frame(dst=dst))
        assert rc == TC_ACT_UNSPEC and not counted, \
            f"A test packet to {dst} is not for this reflector: passed on, uncounted ({counted})."


@pytest.mark.parametrize("size", [14, 20, 41, 43])
def test_a_request_shorter_than_its_reply_is_not_reflected(loaded, size):
    loaded[0].set_guard([], NO_LIMIT)
    refused(loaded, frame(size=size), "too_short")


def test_malformed_datagrams_to_the_port_are_counted(loaded):
    loaded[0].set_guard([], NO_LIMIT)
    refused(loaded, frame(raw=b"\0" * 10), "malformed")          # under TWAMP Light's 14
    good = bytearray(frame())
    good[38:40] = (8 + 60).to_bytes(2, "big")                      # UDP length past the IP's
    refused(loaded, bytes(good), "malformed")


def test_a_sender_over_its_bucket_is_dropped_while_another_gets_its_own(loaded):
    dp = loaded[0]
    dp.set_guard([], guard.rate_limit(2, 5))           # 500 ms per token, 5 deep
    flood, calm = "198.18.0.11", "198.18.0.12"
    # GCRA: a sender that keeps trying has taken, at time t, the bucket's 5 plus
    # one per 500 ms since its first packet (t_a), rounded down. The runs take
    # time (more under load), so each bound is taken with the widest or
    # narrowest span the clock readings allow (CLOCK_MONOTONIC, the buckets' clock).
    t0 = time.monotonic()
    burst = [run(loaded, frame(src=flood))[0] for _ in range(50)]
    t1 = time.monotonic()           # t_a lies between t0 and t1
    taken = burst.count(TC_ACT_REDIRECT)
    assert 5 <= taken <= 5 + int((t1 - t0) * 2), \
        f"A burst of 50 in {t1 - t0:.3f} s gets the bucket's 5 packets, got {taken}."
    assert burst.count(TC_ACT_SHOT) == 50 - taken, "The excess is dropped, not passed on."
    if time.monotonic() - t0 < 0.4:
        refused(loaded, frame(src=flood), "rate_limited", rc=TC_ACT_SHOT)
    assert run(loaded, frame(src=calm))[0] == TC_ACT_REDIRECT, \
        "Another sender has its own bucket."
    time.sleep(1.25)
    t2 = time.monotonic()
    later = [run(loaded, frame(src=flood))[0] for _ in range(10)]
    t3 = time.monotonic()
    total = taken + later.count(TC_ACT_REDIRECT)
    lo, hi = 5 + int((t2 - t1) * 2), 5 + int((t3 - t0) * 2)
    assert lo <= total <= hi and lo >= 7, \
        f"{t2 - t1:.3f}..{t3 - t0:.3f} s after its first packet at 2/s, 5 deep, the flood has " \
        f"taken {lo}..{hi} packets, got {total}."
    keys = {bytes(k.addr) for k in dp.bpf[b"rate_buckets"].keys()}
    assert b"\0" * 10 + b"\xff\xff" + ipaddress.ip_address(flood).packed in keys, \
        "An IPv4 sender's bucket is keyed by its IPv4-mapped IPv6 address."


def test_a_refused_sender_takes_no_token(loaded):
    dp = loaded[0]
    dp.set_guard([guard.prefix("198.18.0.0/28")], guard.rate_limit(1, 2))
    for _ in range(20):
        refused(loaded, frame(src="198.18.0.77"), "not_allowed")
        refused(loaded, frame(src="198.18.0.5", size=20), "too_short")
    got = [run(loaded, frame(src="198.18.0.5"))[0] for _ in range(3)]
    assert got == [TC_ACT_REDIRECT, TC_ACT_REDIRECT, TC_ACT_SHOT], \
        f"Refused packets leave the bucket full: {got}."
    dp.set_guard([], NO_LIMIT)


def test_on_the_loopback_interface_this_hosts_own_senders_are_answered(loaded):
    """On lo every frame comes from this host (stamp-sender lo 127.0.0.1): its own
    and loopback addresses are answered there, and still nothing else may go."""
    dp = loaded[0]
    dp.set_guard([], NO_LIMIT, on_loopback=True)
    try:
        for src in (REFLECTOR, OTHER, "127.0.0.1"):
            assert run(loaded, frame(src=src))[0] == TC_ACT_REDIRECT, \
                f"A request from {src} on lo is from this host and should be reflected."
        for what, kw in (("port 0", {"sport": 0}), ("a multicast source", {"src": "224.0.0.5"}),
                         ("the unspecified address", {"src": "0.0.0.0"})):
            refused(loaded, frame(**kw), "bad_source")
    finally:
        dp.set_guard([], NO_LIMIT)
    refused(loaded, frame(src="127.0.0.1"), "bad_source")
