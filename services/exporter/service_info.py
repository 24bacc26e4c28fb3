"""Service health: clocks per role, supervisor state, build info; the services' drop counts."""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from stamp_bpf import __version__
from stamp_bpf.common import records


class ServiceInfo:
    """Latest ServiceStats per process and SupervisorStats per service; a prometheus collector.

    With several processes of one role, the clock is reported as synchronized
    only when all are, and the error is the largest one.
    """

    def __init__(self, log):
        self.procs = {}         # (role, pid) -> [ServiceStats, last_seen]
        self.supervised = {}    # service name -> [SupervisorStats, last_seen]
        self.retired = [0, 0]   # drop counts of expired processes: queue, ring buffer
        self.retired_sent = {}  # role name -> records_sent of expired processes
        self._log = log

    def service(self, rec, now):
        key = (rec.role, rec.pid)
        if key not in self.procs:
            self._log.info("service_seen", role=records.ROLES.get(rec.role, str(rec.role)),
                           pid=rec.pid)
        self.procs[key] = [rec, now]

    def supervisor(self, rec, now):
        self.supervised[rec.service] = [rec, now]

    def expire(self, now, idle):
        for key in [k for k, (_, seen) in self.procs.items() if now - seen > idle]:
            rec, _ = self.procs.pop(key)
            self.retired[0] += rec.dropped_queue
            self.retired[1] += rec.dropped_ringbuf
            role = records.ROLES.get(rec.role, "unknown")
            self.retired_sent[role] = self.retired_sent.get(role, 0) + rec.records_sent
        for key in [k for k, (_, seen) in self.supervised.items() if now - seen > idle]:
            del self.supervised[key]

    def dropped(self):
        """(service queue, ring buffer) drops of every process seen, expired ones included."""
        queue, ring = self.retired
        for rec, _ in self.procs.values():
            queue += rec.dropped_queue
            ring += rec.dropped_ringbuf
        return queue, ring

    def records_sent(self):
        """{role: records its processes handed to ZeroMQ}, expired processes included."""
        sent = dict(self.retired_sent)
        for rec, _ in self.procs.values():
            role = records.ROLES.get(rec.role, "unknown")
            sent[role] = sent.get(role, 0) + rec.records_sent
        return sent

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
        for rec, _ in self.procs.values():
            by_role.setdefault(records.ROLES.get(rec.role, "unknown"), []).append(rec)
        for role, recs in sorted(by_role.items()):
            synced.add_metric([role], int(all(r.clock_synchronized for r in recs)))
            known = [r.clock_error_ns for r in recs if r.clock_error_ns >= 0]
            if known:
                error.add_metric([role], max(known) / 1e9)
        yield synced
        yield error
        up = GaugeMetricFamily("stamp_supervisor_up", "1 when the supervised service runs.",
                               labels=["service"])
        restarts = CounterMetricFamily("stamp_supervisor_restarts",
                                       "Restarts of the supervised service.", labels=["service"])
        for name, (rec, _) in sorted(self.supervised.items()):
            up.add_metric([name], int(rec.up))
            restarts.add_metric([name], rec.restarts)
        yield up
        yield restarts
