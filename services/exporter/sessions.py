"""What sender and reflector sessions share: the table with idle removal, delay families."""

from . import textformat
from .delays import DelayStats


class Session:
    """One session's label strings (rendered once) and per-direction delay statistics."""

    def __init__(self, labelkv, directions, buckets):
        self.labels = labelkv
        self.base = textformat.labels(**labelkv)
        self.by_dir = {d: textformat.labels(**labelkv, direction=d) for d in directions}
        self.delays = {d: DelayStats(buckets) for d in directions}
        self.buckets = buckets
        self.last_seen = 0.0
        self._prefixes = {}

    def bucket_prefixes(self, family, direction):
        """Each `_bucket` line of a direction up to its value, built on first use."""
        key = (family, direction)
        p = self._prefixes.get(key)
        if p is None:
            inner = self.by_dir[direction][:-1]
            p = self._prefixes[key] = [f'{family}_bucket{inner},le="{le}"}} '
                                       for le in self.buckets.le]
        return p


class SessionTable:
    """Sessions by key; a session with no record for `idle` seconds is removed."""

    def __init__(self, make, side, log):
        self.sessions = {}
        self._make = make
        self._side = side
        self._log = log

    def get(self, key, now):
        s = self.sessions.get(key)
        if s is None:
            s = self.sessions[key] = self._make(key)
            self._log.info("session_added", side=self._side, **s.labels)
        s.last_seen = now
        return s

    def expire(self, now, idle):
        """Remove sessions idle for longer than `idle` seconds; returns how many."""
        old = [k for k, s in self.sessions.items() if now - s.last_seen > idle]
        for k in old:
            s = self.sessions.pop(k)
            self._log.info("session_removed", side=self._side, idle_seconds=idle, **s.labels)
        return len(old)

    def __len__(self):
        return len(self.sessions)


def render_delays(prefix, sessions, directions, what):
    """The delay families of `sessions` as exposition text; `prefix` is "stamp_" or similar.

    `what` names the delays ("..., signed, in seconds." is added to the help).
    """
    hist = [textformat.header(f"{prefix}delay_seconds", "histogram",
                              f"{what}, signed, in seconds.")]
    last = textformat.Family(f"{prefix}delay_last_seconds", "gauge",
                             f"Last value of {prefix}delay_seconds, signed, in seconds.")
    jitter = textformat.Family(f"{prefix}jitter_seconds", "gauge",
                               "Interarrival jitter of the delay (RFC 3550 6.4.1), in seconds.")
    neg = textformat.Family(f"{prefix}negative_delay_total", "counter",
                            "Delays below zero (clocks out of step) per direction.")
    name = f"{prefix}delay_seconds"
    for s in sessions:
        for d in directions:
            st = s.delays[d]
            lab = s.by_dir[d]
            hist.append(st.bucket_lines(s.bucket_prefixes(name, d)))
            hist.append(f"{name}_sum{lab} {textformat.value(st.sum_ns / 1e9)}\n"
                        f"{name}_count{lab} {st.count}\n")
            neg.add(lab, st.negative)
            if st.last_ns is not None:
                last.add(lab, st.last_ns / 1e9)
                jitter.add(lab, st.jitter_ns / 1e9)
    return "".join(hist) + last.text() + jitter.text() + neg.text()
