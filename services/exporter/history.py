"""The recent past of every session, for the exporter's / page: bounded, cheap.

Every INTERVAL_S seconds (the receive loop calls maybe_snapshot under the
aggregator's lock) each session's cumulative histogram buckets and counters
are compared with the previous snapshot: the difference is that interval's
delay distribution, whose percentiles are interpolated inside the buckets as
Prometheus' histogram_quantile does, and its loss. A session keeps the last
POINTS intervals (30 minutes); its history goes when its series go.

Memory: one point is a tuple of 5 floats per direction plus loss, about 0.6 KB
for a sender session (3 directions); 180 points are about 100 KB per session,
1.6 MB at --max-peers 16.
"""

import collections
import itertools
import time

INTERVAL_S = 10.0
POINTS = 180
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantiles(counts, bounds_ns, qs=QUANTILES):
    """Percentiles (ns) of one interval's bucket counts (not cumulative); None if empty.

    Linear inside the bucket holding the rank, the first bucket from 0, the +Inf
    bucket answered by the last finite bound (as histogram_quantile).
    """
    total = sum(counts)
    if not total:
        return None
    cum = list(itertools.accumulate(counts))
    out = []
    for q in qs:
        rank = q * total
        i = next(i for i, c in enumerate(cum) if c >= rank)
        if i >= len(bounds_ns):
            out.append(bounds_ns[-1])
            continue
        lower = bounds_ns[i - 1] if i else 0.0
        below = cum[i - 1] if i else 0
        out.append(lower + (bounds_ns[i] - lower) * (rank - below) / counts[i])
    return tuple(out)


class Point(collections.namedtuple("Point", "wall delays loss judged")):
    """One interval: wall-clock end (s), {direction: QUANTILES in ns or None},
    loss ratio (None: nothing judged, or a reflector session), packets judged."""


class Track:
    """One session's snapshots: the previous cumulative state and the points."""

    __slots__ = ("labels", "directions", "points", "_counts", "_judged")

    def __init__(self, session, points, loss_of):
        """The session's state now is the baseline: the first point comes one interval later."""
        self.labels = session.labels
        self.directions = tuple(session.delays)
        self.points = collections.deque(maxlen=points)
        self._counts = {d: list(st.counts) for d, st in session.delays.items()}
        self._judged = loss_of(session)

    def add(self, session, wall, loss_of):
        delays = {}
        for d, st in session.delays.items():
            now = list(st.counts)
            prev = self._counts[d]
            delays[d] = quantiles([a - b for a, b in zip(now, prev)], st.bounds_ns)
            self._counts[d] = now
        loss, judged = None, 0
        got = loss_of(session)
        if got is not None:
            lost, judged = (a - b for a, b in zip(got, self._judged))
            loss = lost / judged if judged > 0 else None
            self._judged = got
        self.points.append(Point(wall, delays, loss, judged))


def _no_loss(session):
    return None


def sender_judged(session):
    """(lost, judged) cumulative counts of a sender session: judged = received + late + lost."""
    sent, received, lost, late = session.counts.totals()[:4]
    return lost, received + late + lost


class History:
    """Tracks of the sessions of `tables`: {side: (SessionTable, loss_of or None)}."""

    def __init__(self, tables, interval_s=INTERVAL_S, points=POINTS, clock=time.time):
        self.tables = tables
        self.interval_s = interval_s
        self.points = points
        self.clock = clock
        self.tracks = {}        # (side, session key) -> Track
        self._next = 0.0

    def maybe_snapshot(self, now):
        """Take a snapshot if one is due (`now`: monotonic seconds)."""
        if now >= self._next:
            self._next = now + self.interval_s
            self.snapshot()

    def snapshot(self):
        wall = self.clock()
        live = set()
        for side, (table, loss_of) in self.tables.items():
            loss_of = loss_of or _no_loss
            for key, s in table.sessions.items():
                live.add((side, key))
                track = self.tracks.get((side, key))
                if track is None:
                    self.tracks[(side, key)] = Track(s, self.points, loss_of)
                else:
                    track.add(s, wall, loss_of)
        for gone in set(self.tracks) - live:
            del self.tracks[gone]

    def copy(self):
        """[(side, labels, directions, [Point, ...])], for rendering outside the lock."""
        out = [(side, t.labels, t.directions, list(t.points)) for (side, _), t in self.tracks.items()]
        return sorted(out, key=lambda x: (x[0], sorted(x[1].items())))
