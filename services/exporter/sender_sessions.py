"""Sender sessions: loss counters and the three delays, labelled reflector and sender."""

from ..common import records
from ..common.delaystats import DIRECTIONS, delays

from . import textformat
from .sessions import SeriesTable, SessionSeries, endpoints, render_delays, render_info

COUNTERS = (  # (family, help); values are the records' cumulative counters, over restarts
    ("stamp_packets_sent_total", "Test packets the sender sent."),
    ("stamp_packets_received_total", "Replies received before the timeout."),
    ("stamp_packets_lost_total", "Test packets with no reply by the timeout plus late window."),
    ("stamp_packets_late_total", "Replies that arrived after the timeout."),
    ("stamp_packets_duplicate_total", "Duplicated replies."),
    ("stamp_packets_reordered_total", "Replies that arrived out of sequence order."),
)
COUNTS = ("sent", "received", "lost", "late", "duplicates", "reordered")   # record fields


class SenderSeries(SessionSeries):
    def __init__(self, key, buckets):
        reflector, sender = endpoints(key)
        super().__init__({"reflector": reflector, "sender": sender}, DIRECTIONS, buckets,
                         COUNTS)


class SenderFamilies:
    """Aggregates SenderPacket and SessionStats records; renders the sender families.

    Records come as records.decode_raw tuples: field order of the NamedTuples.
    """

    def __init__(self, buckets, log):
        self.table = SeriesTable(lambda key: SenderSeries(key, buckets), "sender", log)

    def packet(self, rec, now):
        s = self.table.get(rec[0:4], now)
        c = rec[16:22]
        last = s.counts.last
        # s.counts.update(c) with its test inlined, on this hot path: about 400 instead of
        # 2,600 instructions per record (callgrind).
        if c[0] < last[0] or c[1] < last[1] or c[2] < last[2] or c[3] < last[3] \
                or c[4] < last[4] or c[5] < last[5]:
            self.table.restarted(s, s.counts.update(c))
        else:
            s.counts.last = c
        s.timestamping = rec[6]
        outcome = rec[4]
        if outcome == records.OUTCOME_LOST or outcome == records.OUTCOME_DUPLICATE:
            return      # delays count once per packet that came back, late ones included
        t1, t2, t3, t4 = rec[10:14]
        if t1 and t2 and t3 and t4:     # as the sender: no delays from an incomplete reply
            near, far, rtt = delays(t1, t2, t3, t4)
            d = s.delays
            d["near_end"].observe(near)
            d["far_end"].observe(far)
            d["round_trip"].observe(rtt)

    def stats(self, rec, now):
        s = self.table.get(rec[0:4], now)
        before = s.counts.update(rec[4:10])
        if before is not None:
            self.table.restarted(s, before)
        if rec[10]:     # ended
            sent, received, lost, late = rec[4:8]
            self.table.log.info("session_ended", side="sender", sent=sent, received=received,
                                lost=lost, late=late, **s.labels)

    def render(self):
        sessions = list(self.table.sessions.values())
        totals = [(s.base, s.counts.totals()) for s in sessions]
        out = []
        for i, (name, help_text) in enumerate(COUNTERS):
            out.append(textformat.header(name, "counter", help_text))
            out.extend([f"{name}{base} {t[i]}\n" for base, t in totals])
        families = render_delays("stamp_", sessions, DIRECTIONS,
                               "STAMP delay per direction: near_end T2-T1, far_end T4-T3, "
                               "round_trip (T4-T1)-(T3-T2)")
        return "".join(out).encode() + render_info("stamp_session_info", sessions) + families
