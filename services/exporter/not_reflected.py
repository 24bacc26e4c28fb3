"""Test packets the reflectors did not reflect, by reason; a prometheus collector.

Each reflector process sends its cumulative count per reason (DropCount
records) with its health record. The family sums them over processes; the
counts of a process that restarts with the same pid carry on, and those of
processes gone idle stay in the totals, so the counter never goes down.
"""

from prometheus_client.core import CounterMetricFamily

from ..common import records

from .cumulative import CumulativeCounts

# Reasons beyond DROP_REASONS a newer reflector may send; more are refused, so a
# broken sender of records cannot grow the label set without bound.
MAX_REASONS = 32


class NotReflected:
    """stamp_reflector_packets_not_reflected_total{reason} from DropCount records."""

    def __init__(self, pipeline):
        self.sources = {}       # (role, pid, reason) -> [last_seen, CumulativeCounts]
        self.retired = {}       # reason -> counts of expired processes
        self._pipeline = pipeline

    def drop_count(self, rec, now):
        known = {k[2] for k in self.sources} | set(self.retired) | set(records.DROP_REASONS)
        if rec.reason not in known and len(known) >= MAX_REASONS:
            self._pipeline.bad("too_many_reasons", f"reason {rec.reason!r} from pid {rec.pid}")
            return
        key = (rec.role, rec.pid, rec.reason)
        entry = self.sources.get(key)
        if entry is None:
            entry = self.sources[key] = [now, CumulativeCounts(("count",))]
        entry[0] = now
        entry[1].update((rec.count,))

    def expire(self, now, idle):
        for key in [k for k, (seen, _) in self.sources.items() if now - seen > idle]:
            _, counts = self.sources.pop(key)
            self.retired[key[2]] = self.retired.get(key[2], 0) + counts.totals()[0]

    def totals(self):
        """{reason: count}; every known reason once any reflector has reported."""
        if not (self.sources or self.retired):
            return {}
        out = dict.fromkeys(records.DROP_REASONS, 0)
        for reason, n in self.retired.items():
            out[reason] = out.get(reason, 0) + n
        for (_, _, reason), (_, counts) in self.sources.items():
            out[reason] = out.get(reason, 0) + counts.totals()[0]
        return out

    def collect(self):
        family = CounterMetricFamily(
            "stamp_reflector_packets_not_reflected",
            "Test packets the reflector did not reflect, by reason: passed on to the host's "
            "stack, or dropped when rate_limited (docs/metrics.md).", labels=["reason"])
        for reason, n in sorted(self.totals().items()):
            family.add_metric([reason], n)
        yield family
