"""The exporter's / page: per session and direction, the recent delay "smoke" as inline SVG.

As smokeping draws it: the median of each interval as a line, the 25-75th and
5-95th percentiles as bands around it, and the interval's loss as a red strip
under the graph. Plain HTML and SVG, no script, no external asset. The data is
copied from the History under the aggregator's lock (a list copy per session)
and drawn outside it, so a page view never holds up /metrics or the records.

Every <svg> carries its values as data- attributes (session, direction, last
median and loss), and every point has a <title> for a mouse hover.
"""

import html
import time

from . import history as hist

W, H = 640, 150             # graph area, px
LEFT, TOP, BOTTOM = 64, 8, 34
STRIP = 8                   # loss strip height, px


def _fmt_s(ns):
    if ns == 0:
        return "0"
    s = ns / 1e9
    for unit, f in (("s", 1), ("ms", 1e3), ("us", 1e6)):
        if abs(s) >= 1 / f or unit == "us":
            return f"{s * f:.3g} {unit}"


def _hhmmss(wall):
    return time.strftime("%H:%M:%S", time.gmtime(wall))


def _nice_max(v):
    """A round upper bound for the y axis, at least v."""
    if v <= 0:
        return 1000.0   # 1 us
    mag = 10 ** (len(str(int(v))) - 1)
    for m in (1, 2, 5, 10):
        if v <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def _segments(points, direction):
    """Runs of consecutive points that have delays in `direction`."""
    run = []
    for p in points:
        if p.delays.get(direction):
            run.append(p)
        elif run:
            yield run
            run = []
    if run:
        yield run


def svg(side, labels, direction, points, interval_s=hist.INTERVAL_S):
    """One graph: x = the intervals of `points`, y = delay (ns, linear from 0)."""
    with_data = [p for p in points if p.delays.get(direction)]
    last = with_data[-1].delays[direction] if with_data else None
    losses = [p.loss for p in points if p.loss is not None]
    attrs = {"data-side": side, "data-sender": labels.get("sender", ""),
             "data-reflector": labels.get("reflector", ""), "data-direction": direction,
             "data-median-seconds": f"{last[2] / 1e9:.9f}" if last else "",
             "data-p95-seconds": f"{last[4] / 1e9:.9f}" if last else "",
             "data-loss": f"{losses[-1]:.6f}" if losses else "",
             "data-points": str(len(points))}
    head = " ".join(f'{k}="{html.escape(v)}"' for k, v in attrs.items())
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + W + 8}" '
           f'height="{TOP + H + BOTTOM}" {head}>',
           f'<rect x="{LEFT}" y="{TOP}" width="{W}" height="{H}" fill="#fafafa" stroke="#ccc"/>']
    if len(points) < 1:
        out.append(f'<text x="{LEFT + 8}" y="{TOP + H / 2}" font-size="12" fill="#777">'
                   f'no interval yet (one every {interval_s:g} s)</text></svg>')
        return "".join(out)
    t0, t1 = points[0].wall - interval_s, points[-1].wall
    ymax = _nice_max(max((p.delays[direction][4] for p in with_data), default=0))

    def x(wall):
        return LEFT + W * (wall - t0) / (t1 - t0)

    def y(ns):
        return TOP + H - H * max(0.0, min(ns, ymax)) / ymax

    for run in _segments(points, direction):
        for lo, hi, colour in ((0, 4, "#d6e4f0"), (1, 3, "#9ec3e0")):
            top = [f"{x(p.wall):.1f},{y(p.delays[direction][hi]):.1f}" for p in run]
            bottom = [f"{x(p.wall):.1f},{y(p.delays[direction][lo]):.1f}" for p in reversed(run)]
            if len(run) == 1:       # one point: a bar one interval wide
                p = run[0]
                out.append(f'<rect x="{x(p.wall - interval_s):.1f}" '
                           f'y="{y(p.delays[direction][hi]):.1f}" '
                           f'width="{W * interval_s / (t1 - t0):.1f}" height="'
                           f'{max(1.0, y(p.delays[direction][lo]) - y(p.delays[direction][hi])):.1f}"'
                           f' fill="{colour}"/>')
            else:
                out.append(f'<polygon points="{" ".join(top + bottom)}" fill="{colour}"/>')
        median = " ".join(f"{x(p.wall):.1f},{y(p.delays[direction][2]):.1f}" for p in run)
        out.append(f'<polyline points="{median}" fill="none" stroke="#03365e" stroke-width="1.5"/>')
    for p in points:
        q = p.delays.get(direction)
        tip = (f"{_hhmmss(p.wall)} median {_fmt_s(q[2])}, 25-75% {_fmt_s(q[1])}-{_fmt_s(q[3])}, "
               f"5-95% {_fmt_s(q[0])}-{_fmt_s(q[4])}" if q else f"{_hhmmss(p.wall)} no reply")
        if p.loss is not None:
            tip += f", loss {p.loss:.1%} of {p.judged}"
        opacity = 0.0 if not p.loss else max(0.15, p.loss)
        out.append(f'<rect x="{x(p.wall - interval_s):.1f}" y="{TOP + H + 2}" '
                   f'width="{W * interval_s / (t1 - t0):.1f}" height="{STRIP}" fill="#c00" '
                   f'fill-opacity="{opacity:.2f}"><title>{html.escape(tip)}</title></rect>')
    for frac in (0, 0.5, 1):
        out.append(f'<text x="{LEFT - 4}" y="{y(ymax * frac) + 4:.1f}" font-size="11" '
                   f'text-anchor="end">{_fmt_s(ymax * frac)}</text>')
    for wall, anchor in ((t0, "start"), (t1, "end")):
        out.append(f'<text x="{x(wall):.1f}" y="{TOP + H + STRIP + 16}" font-size="11" '
                   f'text-anchor="{anchor}">{_hhmmss(wall)} UTC</text>')
    out.append("</svg>")
    return "".join(out)


def render(aggregator):
    """The / page (bytes): the history is copied under the lock, drawn outside it."""
    with aggregator.lock:
        tracks = aggregator.history.copy()
        node = aggregator.node.node_name
        interval_s = aggregator.history.interval_s
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>stamp-exporter "
             f"{html.escape(node)}</title><style>body{{font-family:sans-serif;margin:1em}}"
             "h2{font-size:1em;margin:1.2em 0 .2em}.d{display:inline-block;margin-right:1em}"
             "</style></head><body>",
             f"<h1>stamp-exporter on {html.escape(node)}</h1>",
             '<p><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a> '
             '<a href="/healthz/exporter">/healthz/exporter</a> '
             '<a href="/healthz/service">/healthz/service</a> &middot; '
             f"one point every {interval_s:g} s, the last {hist.POINTS}; line: median, "
             "bands: 25-75% and 5-95%, red: loss</p>"]
    if not tracks:
        parts.append("<p>No session yet.</p>")
    for side, labels, directions, points in tracks:
        losses = [p.loss for p in points if p.loss is not None]
        loss = f", loss in the last interval {losses[-1]:.1%}" if losses else ""
        snd, refl = html.escape(labels["sender"]), html.escape(labels["reflector"])
        title = (f"{snd} &rarr; {refl}" if side == "sender" else
                 f"reflector {refl} seen from {snd}")
        parts.append(f"<h2>{title}{loss}</h2>")
        for d in directions:
            parts.append(f'<div class="d"><div>{d}</div>{svg(side, labels, d, points, interval_s)}</div>')
    parts.append("</body></html>\n")
    return "".join(parts).encode()
