"""The sender's counting rules, in user space only (fast layer: no root, no BPF).

received / late / lost / duplicate / reordered as services/sender/session.py
states them, the duplicate window, the wrap of the 32-bit sequence number,
and reply decoding from a ring buffer event.
"""

import pytest

from stamp_bpf.common import events, records, wire
from stamp_bpf.sender import session as sess
from stamp_bpf.sender.session import SenderSession, Reply

pytestmark = pytest.mark.unit

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000      # a wall-clock T1, ns


def new_session(count=0, interval_s=0.01, timeout_s=1.0, late_window_s=1.0):
    return SenderSession("10.0.0.2", 862, "10.0.0.1", 862, count, interval_s, timeout_s, late_window_s, 0)


def send(s, n=1):
    """Send n packets; their sequence numbers."""
    return [s.on_sent(0, T0) for _ in range(n)]


def reply(seq, rtt_ms=2.0, valid=True):
    """A reply to `seq` with T1..T4 2 ms round trip (1 ms each way) by default."""
    t1 = T0
    t2 = t1 + int(rtt_ms * MS / 2)
    t3 = t2 + 10_000
    t4 = t3 + int(rtt_ms * MS / 2)
    if not valid:
        t2 = 0
    return Reply(valid, seq, seq, t1, t2, t3, t4, 0, 0, 254)


def test_a_reply_within_the_timeout_is_received_with_its_three_delays():
    s = new_session()
    (seq,) = send(s)
    assert s.on_reply(reply(seq)) == (records.OUTCOME_RECEIVED, False)
    assert s.counters() == (1, 1, 0, 0, 0, 0), "One sent, one received, nothing else."
    assert s.delays["near_end"].last == 1 * MS
    assert s.delays["far_end"].last == 1 * MS
    assert s.delays["round_trip"].last == 2 * MS, "Round trip excludes the 10 us at the reflector."


def test_a_reply_after_the_timeout_is_late_not_received_and_still_gives_delays():
    s = new_session(timeout_s=0.5)
    (seq,) = send(s)
    assert s.on_reply(reply(seq, rtt_ms=600)) == (records.OUTCOME_LATE, False)
    assert (s.received, s.late) == (0, 1)
    assert s.delays["round_trip"].count == 1, "A late reply's delays are counted too."


def test_a_packet_given_up_is_lost_once_and_its_late_reply_is_ignored():
    s = new_session()
    (seq,) = send(s)
    assert s.declare_lost(seq) is not None
    assert s.declare_lost(seq) is None, "A packet is declared lost once."
    assert s.on_reply(reply(seq)) == (None, False), "A reply after the give-up is not counted."
    assert s.counters() == (1, 0, 1, 0, 0, 0)


def test_a_second_reply_is_a_duplicate_and_gives_no_second_delay():
    s = new_session()
    (seq,) = send(s)
    s.on_reply(reply(seq))
    assert s.on_reply(reply(seq)) == (records.OUTCOME_DUPLICATE, False)
    assert (s.received, s.duplicates) == (1, 1)
    assert s.delays["round_trip"].count == 1


def test_a_reply_below_one_already_answered_is_reordered_and_still_received():
    s = new_session()
    a, b, c = send(s, 3)
    s.on_reply(reply(a))
    s.on_reply(reply(c))
    assert s.on_reply(reply(b)) == (records.OUTCOME_RECEIVED, True)
    assert (s.received, s.reordered) == (3, 1)


def test_a_reply_without_a_timestamp_counts_for_loss_but_gives_no_delays():
    s = new_session()
    (seq,) = send(s)
    assert s.on_reply(reply(seq, valid=False)) == (records.OUTCOME_RECEIVED, False)
    assert s.invalid == 1 and s.delays["near_end"].count == 0


def test_the_duplicate_window_covers_every_packet_that_can_still_be_answered():
    # 1 ms interval, 1 s + 1 s to give up: 2,000 packets in flight, twice that remembered.
    s = new_session(interval_s=0.001)
    assert s.answered_window == 4000
    seqs = send(s, 4001)
    for q in seqs:
        s.on_reply(reply(q))
    assert s.on_reply(reply(seqs[1])) == (records.OUTCOME_DUPLICATE, False)
    assert s.on_reply(reply(seqs[0])) == (None, False), \
        "The oldest answer left the window: it is no longer known (and not outstanding)."
    assert len(s.answered) == s.answered_window


def test_the_window_is_bounded_for_long_timeouts():
    s = new_session(interval_s=0.0001, timeout_s=60, late_window_s=60)
    assert s.answered_window == sess.ANSWERED_MAX


def test_packets_are_scheduled_at_start_plus_k_intervals_until_count():
    s = new_session(count=3, interval_s=0.01)
    times = []
    while (t := s.next_send_ns()) is not None:
        times.append(t)
        s.on_sent(t, T0)
    assert times == [0, 10 * MS, 20 * MS]
    s.stopping = True
    assert s.next_send_ns() is None


# --- the 32-bit sequence number wraps ----------------------------------------------

def at_index(s, index):
    """Put a session as if it had sent `index` packets already."""
    s.index = index
    return s


def test_the_sequence_number_wraps_from_2_32_minus_1_to_0():
    s = at_index(new_session(), 2**32 - 2)
    assert send(s, 4) == [2**32 - 2, 2**32 - 1, 0, 1]
    assert s.index == 2**32 + 2, "The packet index (the schedule) does not wrap."


def test_a_wrapped_sequence_number_packs_into_the_test_packet():
    s = at_index(new_session(), 2**32 + 5)
    pkt = wire.build_sender_packet(s.next_seq)
    assert wire.parse_sender_packet(pkt)[0] == 5


def test_replies_in_order_across_the_wrap_are_not_reordered():
    s = at_index(new_session(), 2**32 - 2)
    for q in send(s, 4):
        assert s.on_reply(reply(q)) == (records.OUTCOME_RECEIVED, False), \
            f"seq {q} follows the one before it across the wrap."
    assert s.reordered == 0


def test_a_reply_from_before_the_wrap_after_one_from_after_it_is_reordered():
    s = at_index(new_session(), 2**32 - 1)
    old, new = send(s, 2)
    assert (old, new) == (2**32 - 1, 0)
    s.on_reply(reply(new))
    assert s.on_reply(reply(old)) == (records.OUTCOME_RECEIVED, True)


def test_duplicates_are_found_across_the_wrap():
    s = at_index(new_session(), 2**32 - 1)
    for q in send(s, 2):
        s.on_reply(reply(q))
    assert s.on_reply(reply(2**32 - 1)) == (records.OUTCOME_DUPLICATE, False)
    assert s.on_reply(reply(0)) == (records.OUTCOME_DUPLICATE, False)


@pytest.mark.parametrize("a,b,before", [
    (1, 2, True), (2, 1, False), (5, 5, False),
    (2**32 - 1, 0, True), (0, 2**32 - 1, False),
    (2**32 - 10, 10, True), (10, 2**32 - 10, False),
    (0, 2**31 - 1, True), (0, 2**31 + 1, False)])
def test_seq_before_is_serial_number_arithmetic(a, b, before):
    assert sess.seq_before(a, b) is before


# --- reply decoding -------------------------------------------------------------------

def test_decode_reply_takes_t1_t4_in_our_format_and_t2_t3_in_the_reflectors():
    tai = 37
    t1, t2, t3, t4 = T0, T0 + 3 * MS, T0 + 4 * MS, T0 + 9 * MS
    ee_ntp = wire.encode_error_estimate(1e-6, True, False)
    ee_ptp = wire.encode_error_estimate(1e-6, True, True)
    pkt = wire.build_reflector_packet(7, wire.ns_to_ptp(t3, tai), ee_ptp, wire.ns_to_ptp(t2, tai),
                                      42, wire.ns_to_ntp(t1), ee_ntp, 250)
    raw = events.SENDER_EVENT.pack(bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), 862, 862, 44, 60,
                                   0, *wire.ns_to_ntp(t4), pkt, b"")
    r = sess.decode_reply(events.sender_event(raw), ee_ntp, tai)
    assert r.valid and (r.seq, r.reflector_seq, r.sender_ttl) == (42, 7, 250)
    for name, got, want in (("T1", r.t1, t1), ("T2", r.t2, t2), ("T3", r.t3, t3), ("T4", r.t4, t4)):
        assert abs(got - want) <= 1, f"{name} decodes to within 1 ns of what was encoded."


def test_decode_reply_with_a_zero_timestamp_is_invalid():
    pkt = wire.build_reflector_packet(1, (0, 0), 0, wire.ns_to_ntp(T0), 1, wire.ns_to_ntp(T0), 0, 64)
    raw = events.SENDER_EVENT.pack(bytes(4), bytes(4), 862, 862, 44, 60,
                                   0, *wire.ns_to_ntp(T0), pkt, b"")
    r = sess.decode_reply(events.sender_event(raw), 0, 0)
    assert not r.valid and r.t3 == 0, "T3 was never written: no delays from this reply."
