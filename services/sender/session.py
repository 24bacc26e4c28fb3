"""One test session: the packets sent to one reflector and what came back.

Counting rules (docs in README "Loss, late, duplicates"):
- received: the reply came back within --timeout of T1 (T4 - T1 <= timeout);
- late: it came back after --timeout but before --timeout + --late-window;
- lost: no reply by --timeout + --late-window (judged on the monotonic clock
  from the moment user space sent it); a reply after that is not counted again;
- duplicate: a second reply for a sequence number already answered;
- reordered: a reply whose sequence number is below one already answered.
A packet is counted once: received, late or lost.

Sequence numbers are 32 bits on the wire and wrap from 2^32 - 1 to 0 (about
50 days at 1 ms); "below" is serial number arithmetic (RFC 1982): a is before
b when b - a, modulo 2^32, is between 1 and 2^31 - 1.
"""

import time
from typing import NamedTuple

from ..common import addr, records, wire
from ..common.delaystats import DIRECTIONS, DelayStats, delays
# Sequence numbers remembered for duplicate detection, per session: enough
# for every packet that can still be answered (timeout + late window), twice.
ANSWERED_MIN, ANSWERED_MAX = 1024, 65536
SEQ_MOD = 1 << 32           # the Sequence Number field is 32 bits (RFC 8762 4.2.1)
SEQ_HALF = 1 << 31


def seq_before(a, b):
    """Is sequence number a before b, across the wrap at 2^32 (RFC 1982)?"""
    return 0 < (b - a) % SEQ_MOD < SEQ_HALF


class Sent(NamedTuple):
    mono_ns: int        # when user space sent it (CLOCK_MONOTONIC)
    wall_ns: int        # the same moment on CLOCK_REALTIME, for lost records


class Reply(NamedTuple):
    """A decoded reply: the four timestamps as Unix ns (UTC) and the rest.

    valid is False when a timestamp field is zero (not taken): the reply
    still counts for loss, but gives no delays.
    """
    valid: bool
    seq: int
    reflector_seq: int
    t1: int
    t2: int
    t3: int
    t4: int
    sender_ee: int
    reflector_ee: int
    sender_ttl: int


class SenderSession:
    """The sender's session to one reflector: what was sent, what came back, delays."""

    def __init__(self, reflector, port, local, local_port, count, interval_s, timeout_s,
                 late_window_s, start_mono_ns):
        self.reflector = reflector
        self.port = port
        self.local = local           # our source address toward the reflector (the route's)
        self.local_port = local_port
        self.local_mismatch = False  # a reply came back to another address (logged once)
        self.label = addr.endpoint(reflector, port)
        self.count = count
        self.interval_ns = int(interval_s * 1e9)
        self.timeout_ns = int(timeout_s * 1e9)
        self.give_up_ns = int((timeout_s + late_window_s) * 1e9)
        self.answered_window = min(ANSWERED_MAX, max(
            ANSWERED_MIN, 2 * -(-self.give_up_ns // max(self.interval_ns, 1))))
        self.start_ns = start_mono_ns
        self.index = 0               # packets handed out so far; never wraps
        self.outstanding = {}        # seq -> Sent
        self.answered = {}           # seq -> None, insertion-ordered window
        self.max_answered = None     # the latest sequence number answered
        self.stopping = False        # no more sends (DNS removed it)
        self.scheduled = False       # an entry of the service's send schedule is ours
        self.sent = self.received = self.lost = self.late = 0
        self.duplicates = self.reordered = self.invalid = 0
        self.delays = {d: DelayStats() for d in DIRECTIONS}
        self.ssid = None             # ssid.SsidCheck, set by the service
        self.direction = None        # direction.DirectionalLoss with --directional-loss
        self.tlvs = None             # tlvs.TlvReport when we send TLVs

    # --- sending -------------------------------------------------------------

    def next_send_ns(self):
        """Monotonic deadline of the next packet, or None when done sending.

        Packet k goes at start + k * interval: a late loop catches up without
        shifting later packets, so the rate never drifts.
        """
        if self.stopping or (self.count and self.index >= self.count):
            return None
        return self.start_ns + self.index * self.interval_ns

    @property
    def next_seq(self):
        """The Sequence Number of the next packet: its index modulo 2^32."""
        return self.index % SEQ_MOD

    def on_sent(self, mono_ns, wall_ns):
        seq = self.next_seq
        self.outstanding[seq] = Sent(mono_ns, wall_ns)
        self.index += 1
        self.sent += 1
        return seq

    def skip(self):
        """The next packet could not be sent: go on with the one after it."""
        self.index += 1

    def finished(self):
        return self.next_send_ns() is None and not self.outstanding

    # --- replies -------------------------------------------------------------

    def on_reply(self, r):
        """Count a reply; returns (outcome, reordered) for its record."""
        if r.seq in self.answered:
            self.duplicates += 1
            return records.OUTCOME_DUPLICATE, False
        if self.outstanding.pop(r.seq, None) is None:
            return None, False      # not ours, or already declared lost
        self._remember(r.seq)
        reordered = self.max_answered is not None and seq_before(r.seq, self.max_answered)
        if reordered:
            self.reordered += 1
        else:
            self.max_answered = r.seq
        if r.valid and r.t4 - r.t1 > self.timeout_ns:
            self.late += 1
            outcome = records.OUTCOME_LATE
        else:
            self.received += 1
            outcome = records.OUTCOME_RECEIVED
        if r.valid:
            for name, value in zip(DIRECTIONS, delays(r.t1, r.t2, r.t3, r.t4)):
                self.delays[name].add(value)
        else:
            self.invalid += 1
        return outcome, reordered

    def _remember(self, seq):
        self.answered[seq] = None
        if len(self.answered) > self.answered_window:
            del self.answered[next(iter(self.answered))]

    def give_up_at(self, sent):
        """Monotonic time after which a packet with no reply is lost."""
        return sent.mono_ns + self.give_up_ns

    def declare_lost(self, seq):
        """The Sent of `seq` if it was still waiting (now counted lost), else None."""
        sent = self.outstanding.pop(seq, None)
        if sent is not None:
            self.lost += 1
        return sent

    # --- reporting -----------------------------------------------------------

    def counters(self):
        return (self.sent, self.received, self.lost, self.late, self.duplicates, self.reordered)

    def summary(self):
        out = {"reflector": self.reflector, "port": self.port, "sent": self.sent,
               "received": self.received, "lost": self.lost, "late": self.late,
               "duplicates": self.duplicates, "reordered": self.reordered}
        if self.outstanding:
            out["outstanding"] = len(self.outstanding)     # fate unknown: stopped before timeout
        if self.invalid:
            out["invalid"] = self.invalid
        for name in DIRECTIONS:
            out[name] = self.delays[name].summary()
        if self.ssid is not None:
            out.update(self.ssid.summary())
        if self.direction is not None:
            out.update(self.direction.summary())
        if self.tlvs is not None:
            out.update(self.tlvs.summary())
        return out

    def stats_record(self, ended=False):
        return records.SessionStats(self.reflector, self.port, self.local, self.local_port,
                                    *self.counters(), ended)


def decode_reply(ev, our_ee, tai_offset_s):
    """A Reply from a sender ring buffer event.

    T1 and T4 are ours (our format); T2 and T3 are in the format the
    reflector's Z bit names (RFC 8762 section 4.2.1). A zero timestamp field
    was never taken: it decodes to 0 and makes the reply invalid.
    """
    pkt = wire.parse_reflector_packet(ev.pkt)

    def ns(ts, ee):
        return 0 if wire.ts_is_zero(ts) else wire.ts_to_ns(ts, ee, tai_offset_s)

    t1 = ns(pkt.sender_ts, pkt.sender_error_estimate)
    t2 = ns(pkt.rx_ts, pkt.error_estimate)
    t3 = ns(pkt.ts, pkt.error_estimate)
    t4 = ns(ev.t4, our_ee)
    return Reply(
        valid=bool(t1 and t2 and t3 and t4),
        seq=pkt.sender_seq, reflector_seq=pkt.seq, t1=t1, t2=t2, t3=t3, t4=t4,
        sender_ee=pkt.sender_error_estimate, reflector_ee=pkt.error_estimate,
        sender_ttl=pkt.sender_ttl)


def now_ns():
    """(monotonic, realtime) now, in ns."""
    return time.monotonic_ns(), time.time_ns()
