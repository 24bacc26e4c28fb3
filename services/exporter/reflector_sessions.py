"""Reflector sessions: packets reflected and the forward delay T2-T1, labelled by sender."""

from . import textformat
from .sessions import Session, SessionTable, render_delays, render_info

DIRECTIONS = ("near_end",)


class ReflectorSession(Session):
    def __init__(self, key, buckets):
        sender, sender_port, refl, refl_port = key
        super().__init__({"sender": f"{sender}:{sender_port}", "reflector": f"{refl}:{refl_port}"},
                         DIRECTIONS, buckets)
        self.reflected = 0


class ReflectorSessions:
    """Aggregates ReflectorPacket records; renders the stamp_reflector_ families."""

    def __init__(self, buckets, log):
        self.table = SessionTable(lambda key: ReflectorSession(key, buckets), "reflector", log)

    def packet(self, rec, now):
        s = self.table.get(rec[0:4], now)
        s.reflected = rec.reflected
        s.timestamping = rec.timestamping
        if rec.t1_ns and rec.t2_ns:
            s.delays["near_end"].observe(rec.t2_ns - rec.t1_ns)

    def render(self):
        sessions = list(self.table.sessions.values())
        name = "stamp_reflector_packets_reflected_total"
        out = [textformat.header(name, "counter", "Test packets the reflector reflected, "
                                                  "per sender session.")]
        out.extend([f"{name}{s.base} {s.reflected}\n" for s in sessions])
        return "".join(out).encode() + render_info(
            "stamp_reflector_session_info", sessions) + render_delays(
            "stamp_reflector_", sessions, DIRECTIONS,
            "Forward delay T2-T1 seen by the reflector (direction near_end)")
