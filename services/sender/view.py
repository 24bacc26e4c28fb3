"""The live, ping-like view the sender prints on a terminal."""

from ..common.delaystats import delays


def _ms(ns):
    return f"{ns / 1e6:.3f}"


def reply_line(session, reply, outcome_name, reordered):
    if not reply.valid:
        return f"{session.reflector}: seq={reply.seq} {outcome_name} (a timestamp is missing)"
    near, far, rtt = delays(reply.t1, reply.t2, reply.t3, reply.t4)
    hops = 255 - reply.sender_ttl
    flags = "".join(f" {w}" for w, on in (("LATE", outcome_name == "late"),
                                          ("DUP", outcome_name == "duplicate"),
                                          ("REORDERED", reordered)) if on)
    return (f"{session.reflector}: seq={reply.seq} hops={hops} near={_ms(near)} ms "
            f"far={_ms(far)} ms rtt={_ms(rtt)} ms{flags}")


def lost_line(session, seq):
    return f"{session.reflector}: seq={seq} lost"


def totals_line(s):
    d = s.delays["round_trip"]
    rtt = (f" rtt min/avg/max/jitter = {_ms(d.min)}/{_ms(d.avg)}/{_ms(d.max)}/{_ms(d.jitter)} ms"
           if d.count else "")
    loss = 100.0 * s.lost / s.sent if s.sent else 0.0
    pending = f", {len(s.outstanding)} outstanding" if s.outstanding else ""
    return (f"--- {s.label}: {s.sent} sent, {s.received} received, {s.late} late, "
            f"{s.lost} lost ({loss:.1f}%){pending}, {s.duplicates} duplicates, "
            f"{s.reordered} reordered{rtt}")
