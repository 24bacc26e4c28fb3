"""Reflector sessions: packets reflected and the forward delay T2-T1, labelled by sender."""

from ..common.delaystats import near_end
from . import textformat
from .sessions import SeriesTable, SessionSeries, endpoints, render_delays, render_info

DIRECTIONS = ("near_end",)
COUNTS = ("reflected",)     # record fields


class ReflectorSeries(SessionSeries):
    def __init__(self, key, buckets):
        sender, reflector = endpoints(key)
        super().__init__({"sender": sender, "reflector": reflector}, DIRECTIONS, buckets,
                         COUNTS)


class ReflectorFamilies:
    """Aggregates ReflectorPacket records (records.decode_raw tuples); renders the
    stamp_reflector_ families."""

    def __init__(self, buckets, log, max_sessions=None, histogram=True):
        self.table = SeriesTable(lambda key: ReflectorSeries(key, buckets), "reflector", log,
                                 limit=max_sessions)
        self.histogram = histogram      # False: no stamp_reflector_delay_seconds family

    def packet(self, rec, now):
        s = self.table.get(rec[0:4], now)
        if s is None:
            return      # beyond --max-reflector-sessions: counted by the table
        s.timestamping = rec[4]
        t1, t2 = rec[7:9]
        before = s.counts.update(rec[10:11])
        if before is not None:
            self.table.restarted(s, before)
        if t1 and t2:
            s.delays["near_end"].observe(near_end(t1, t2))

    def render(self):
        sessions = list(self.table.sessions.values())
        name = "stamp_reflector_packets_reflected_total"
        out = [textformat.header(name, "counter", "Test packets the reflector reflected, "
                                                  "per sender session.")]
        out.extend([f"{name}{s.base} {s.counts.totals()[0]}\n" for s in sessions])
        return "".join(out).encode() + render_info(
            "stamp_reflector_session_info", sessions) + render_delays(
            "stamp_reflector_", sessions, DIRECTIONS,
            "Forward delay T2-T1 seen by the reflector (direction near_end)",
            histogram=self.histogram)
