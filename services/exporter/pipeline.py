"""Pipeline health: records received, and dropped at each stage; a prometheus collector."""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class Pipeline:
    """Counts what the exporter ingests; logs each kind of malformed input once."""

    def __init__(self, service_info, sessions, log):
        self.received = 0
        self.malformed = 0
        self._reasons = set()
        self._info = service_info
        self._sessions = sessions   # {"sender": SenderFamilies, "reflector": ReflectorFamilies}
        self._log = log

    def bad(self, reason, detail, exc_info=False):
        """Count one malformed message (or record) and log the first of each reason."""
        self.malformed += 1
        if reason not in self._reasons:
            self._reasons.add(reason)
            self._log.warning("malformed_records", reason=reason, detail=detail,
                              exc_info=exc_info, note="logged once per reason (every one "
                              "with --debug); see stamp_records_dropped_total")
        else:
            self._log.debug("malformed_records", reason=reason, detail=detail)

    def collect(self):
        received = CounterMetricFamily("stamp_records_received",
                                       "Records the exporter decoded and aggregated.")
        received.add_metric([], self.received)
        yield received
        sent = CounterMetricFamily(
            "stamp_records_sent", "Records the services handed to ZeroMQ, as of their last "
            "health report; compare with stamp_records_received_total for losses in transit.",
            labels=["role"])
        for role, n in sorted(self._info.records_sent().items()):
            sent.add_metric([role], n)
        yield sent
        dropped = CounterMetricFamily(
            "stamp_records_dropped", "Records lost before aggregation, by stage: the services' "
            "ZeroMQ queue, the BPF ring buffer, malformed messages at the exporter, and "
            "records of reflector sessions beyond the session bound.",
            labels=["stage"])
        queue, ring, full = self._info.dropped()
        dropped.add_metric(["service_queue"], queue)
        dropped.add_metric(["ring_buffer"], ring)
        dropped.add_metric(["malformed"], self.malformed)
        # Reflector sessions beyond the bound, at the reflector or here: no series for them.
        dropped.add_metric(["session_limit"], full + self._sessions["reflector"].table.overflow)
        yield dropped
        sessions = GaugeMetricFamily("stamp_exporter_sessions",
                                     "Sessions the exporter holds series for.", labels=["side"])
        for side, table in self._sessions.items():
            sessions.add_metric([side], len(table.table))
        yield sessions
