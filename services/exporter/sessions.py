"""What sender and reflector sessions share: the table with idle removal, delay families."""

import itertools

from ..common import addr, records

from . import textformat
from .cumulative import CumulativeCounts
from .delays import DelayHistogram


def endpoints(key):
    """("a.b.c.d:port", "[2001:db8::1]:port") of a session key in wire form (16-byte
    addresses, services/common/addr.py)."""
    a, a_port, b, b_port = key
    return addr.endpoint(addr.unpack16(a), a_port), addr.endpoint(addr.unpack16(b), b_port)


class SessionSeries:
    """One session's label strings (rendered once), per-direction delay statistics, and
    the cumulative counts its records carry (named by `counts`)."""

    def __init__(self, labelkv, directions, buckets, counts):
        self.labels = labelkv
        self.base = textformat.labels(**labelkv)
        self.by_dir = {d: textformat.labels(**labelkv, direction=d) for d in directions}
        self.delays = {d: DelayHistogram(buckets) for d in directions}
        self.counts = CumulativeCounts(counts)
        self.buckets = buckets
        self.timestamping = None    # records.TS_*, from the latest packet record
        self.last_seen = 0.0
        self._templates = {}

    def histogram_template(self, family, direction):
        """Bytes %-template of a direction's `_bucket`, `_sum` and `_count` lines, built once.

        Filled with the cumulative bucket counts, the sum (seconds, a float) and the count.
        """
        key = (family, direction)
        t = self._templates.get(key)
        if t is None:
            lab = self.by_dir[direction].replace("%", "%%")
            inner = lab[:-1]
            t = self._templates[key] = "".join(
                [f'{family}_bucket{inner},le="{le}"}} %d\n' for le in self.buckets.le]
                + [f"{family}_sum{lab} %a\n{family}_count{lab} %d\n"]).encode()
        return t


class SeriesTable:
    """Sessions by key; a session with no record for `idle` seconds is removed.

    With a `limit`, at most that many sessions are kept: get() returns None for a
    new key when full, and `overflow` counts those records.
    """

    def __init__(self, make, side, log, limit=None):
        self.sessions = {}
        self._make = make
        self._side = side
        self.log = log
        self.limit = limit
        self.overflow = 0

    def get(self, key, now):
        s = self.sessions.get(key)
        if s is None:
            if self.limit is not None and len(self.sessions) >= self.limit:
                self.overflow += 1
                if self.overflow == 1:
                    self.log.warning("sessions_full", side=self._side, max_sessions=self.limit,
                                     hint="records of new sessions are dropped (see "
                                          "stamp_records_dropped_total{stage=\"session_limit\"}); "
                                          "raise --max-reflector-sessions if they are real")
                return None
            s = self.sessions[key] = self._make(key)
            self.log.info("session_added", side=self._side, **s.labels)
        s.last_seen = now
        return s

    def restarted(self, s, before):
        """Log that the source of session s restarted; `before` is what s.counts.update
        returned."""
        s.counts.log_restart(self.log, before, side=self._side, **s.labels)

    def expire(self, now, idle):
        """Remove sessions idle for longer than `idle` seconds; returns how many."""
        old = [k for k, s in self.sessions.items() if now - s.last_seen > idle]
        for k in old:
            s = self.sessions.pop(k)
            self.log.info("session_removed", side=self._side, idle_seconds=idle, **s.labels)
        return len(old)

    def __len__(self):
        return len(self.sessions)


def render_info(name, sessions):
    """`name{...,timestamping="bpf"|"user"} 1` per session whose timestamping is known."""
    out = [textformat.header(name, "gauge", "Always 1; the timestamping label says where the "
                                            "session's T1..T4 are taken (bpf or user space).")]
    for s in sessions:
        if s.timestamping is not None:
            ts = (records.TIMESTAMPING[s.timestamping]
                  if s.timestamping < len(records.TIMESTAMPING) else "unknown")
            out.append(f'{name}{s.base[:-1]},timestamping="{ts}"}} 1\n')
    return "".join(out).encode()


def render_delays(prefix, sessions, directions, what, histogram=True):
    """The delay families of `sessions` as exposition bytes; `prefix` is "stamp_" or similar.

    `what` names the delays. Delays >= 0 go to the histogram `<prefix>delay_seconds`,
    the magnitudes of negative ones to the summary `<prefix>delay_negative_seconds`
    (_sum and _count only; delays.DelayHistogram says why). histogram False leaves
    the histogram out (the negative summary, last value and jitter stay).
    """
    name = f"{prefix}delay_seconds"
    neg_name = f"{prefix}delay_negative_seconds"
    hist = [textformat.header(name, "histogram", f"{what}, delays >= 0, in seconds; "
                              f"negative ones are in {neg_name}.").encode()]
    neg = [textformat.header(neg_name, "summary", f"{what}: magnitude |d| of delays below "
                             "zero (clocks out of step), in seconds.")]
    last = [textformat.header(f"{prefix}delay_last_seconds", "gauge",
                              "Last delay of the session and direction, signed, in seconds.")]
    jitter = [textformat.header(f"{prefix}jitter_seconds", "gauge",
                                "Interarrival jitter of the delay (RFC 3550 6.4.1), in seconds.")]
    accumulate = itertools.accumulate
    for s in sessions:
        for d in directions:
            st = s.delays[d]
            lab = s.by_dir[d]
            if histogram:
                hist.append(s.histogram_template(name, d)
                            % (*accumulate(st.counts), st.pos_sum_ns / 1e9, st.count - st.negative))
            neg.append(f"{neg_name}_sum{lab} {st.neg_sum_ns / 1e9!r}\n"
                       f"{neg_name}_count{lab} {st.negative}\n")
            if st.last is not None:
                last.append(f"{prefix}delay_last_seconds{lab} {st.last / 1e9!r}\n")
                jitter.append(f"{prefix}jitter_seconds{lab} {st.jitter_ns / 1e9!r}\n")
    return (b"".join(hist) if histogram else b"") + "".join(neg + last + jitter).encode()
