"""Service health: clocks per role, supervisor state, build info; the services' drop counts."""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .. import __version__
from ..common import records

from .cumulative import CumulativeCounts

PROC_COUNTS = ("dropped_queue", "dropped_ringbuf", "records_sent", "dropped_sessions")  # ServiceStats fields


def _role(rec):
    return records.ROLES.get(rec.role, "unknown")


def _add(a, b):
    return b if a is None else tuple(x + y for x, y in zip(a, b))


class ServiceInfo:
    """Latest ServiceStats per process and SupervisorStats per service; a prometheus collector.

    With several processes of one role, the clock is reported as synchronized
    only when all are, and the error is the largest one. A process is told apart
    by role and pid; the counts of one that restarts with the same pid (pid 1 in
    a container, say) carry on from where the previous one stopped.
    """

    def __init__(self, log):
        self.procs = {}         # (role, pid) -> [ServiceStats, last_seen, CumulativeCounts]
        self.supervised = {}    # service name -> [SupervisorStats, last_seen, CumulativeCounts]
        self.retired = {}       # role name -> PROC_COUNTS totals of expired processes
        self.last_seen = None   # monotonic time of the newest ServiceStats (liveness)
        self._log = log

    def service(self, rec, now):
        self.last_seen = now
        key = (rec.role, rec.pid)
        role = records.ROLES.get(rec.role, str(rec.role))
        entry = self.procs.get(key)
        if entry is None:
            self._log.info("service_seen", role=role, pid=rec.pid)
            entry = self.procs[key] = [rec, now, CumulativeCounts(PROC_COUNTS)]
        entry[0:2] = rec, now
        counts = (rec.dropped_queue, rec.dropped_ringbuf, rec.records_sent, rec.dropped_sessions)
        before = entry[2].update(counts)
        if before is not None:
            entry[2].log_restart(self._log, before, role=role, pid=rec.pid)

    def supervisor(self, rec, now):
        entry = self.supervised.get(rec.service)
        if entry is None:
            entry = self.supervised[rec.service] = [rec, now, CumulativeCounts(("restarts",))]
        entry[0:2] = rec, now
        before = entry[2].update((rec.restarts,))
        if before is not None:
            entry[2].log_restart(self._log, before, side="supervisor", child=rec.service)

    def expire(self, now, idle):
        for key in [k for k, (_, seen, _) in self.procs.items() if now - seen > idle]:
            rec, _, counts = self.procs.pop(key)
            self.retired[_role(rec)] = _add(self.retired.get(_role(rec)), counts.totals())
        for key in [k for k, (_, seen, _) in self.supervised.items() if now - seen > idle]:
            del self.supervised[key]

    def totals(self):
        """{role: PROC_COUNTS totals of every process seen}, expired processes included."""
        out = dict(self.retired)
        for rec, _, counts in self.procs.values():
            out[_role(rec)] = _add(out.get(_role(rec)), counts.totals())
        return out

    def dropped(self):
        """(service queue, ring buffer, session table full) drops of every process seen,
        expired ones included."""
        by_role = self.totals().values()
        return tuple(sum(t[i] for t in by_role) for i in (0, 1, 3))

    def records_sent(self):
        """{role: records its processes handed to ZeroMQ}, expired processes included."""
        return {role: t[2] for role, t in self.totals().items()}

    def collect(self):
        info = GaugeMetricFamily("stamp_build_info", "stamp-bpf version of this exporter.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        synced = GaugeMetricFamily("stamp_clock_synchronized",
                                   "1 when the kernel reports the service's clock synchronized.",
                                   labels=["role"])
        error = GaugeMetricFamily("stamp_clock_estimated_error_seconds",
                                  "The kernel's estimated clock error of the service (adjtimex).",
                                  labels=["role"])
        by_role = {}
        for rec, _, _ in self.procs.values():
            by_role.setdefault(_role(rec), []).append(rec)
        for role, recs in sorted(by_role.items()):
            synced.add_metric([role], int(all(r.clock_synchronized for r in recs)))
            known = [r.clock_error_ns for r in recs if r.clock_error_ns >= 0]
            if known:
                error.add_metric([role], max(known) / 1e9)
        tai = GaugeMetricFamily("stamp_clock_tai_offset_seconds",
                                "The TAI-UTC offset (adjtimex) the service converts PTP "
                                "timestamps with; the lowest of the role's processes.",
                                labels=["role"])
        missing = GaugeMetricFamily("stamp_ptp_tai_offset_missing",
                                    "1 when a service writes PTP timestamps while the kernel's "
                                    "TAI offset is 0: they are about 37 s off (docs/cli.md).",
                                    labels=["role"])
        for role, recs in sorted(by_role.items()):
            tai.add_metric([role], min(r.tai_offset_s for r in recs))
            missing.add_metric([role], int(any(r.ptp_format and r.tai_offset_s == 0
                                               for r in recs)))
        yield synced
        yield error
        yield tai
        yield missing
        up = GaugeMetricFamily("stamp_supervisor_up", "1 when the supervised service runs.",
                               labels=["service"])
        restarts = CounterMetricFamily("stamp_supervisor_restarts",
                                       "Restarts of the supervised service.", labels=["service"])
        for name, (rec, _, counts) in sorted(self.supervised.items()):
            up.add_metric([name], int(rec.up))
            restarts.add_metric([name], counts.totals()[0])
        yield up
        yield restarts
