"""The exporter's state: decodes record messages, routes them, renders /metrics.

All state is guarded by one lock, taken once per batch of messages by the
receiver and once per scrape by the HTTP server.
"""

import threading

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from stamp_bpf.common import records

from .delays import DelayBuckets
from .pipeline import Pipeline
from .reflector_sessions import ReflectorSessions
from .sender_sessions import SenderSessions
from .service_info import ServiceInfo


class Aggregator:
    """Everything the exporter knows; `bounds` are the delay buckets in seconds (+Inf last)."""

    def __init__(self, bounds, log, idle_timeout=300.0):
        buckets = DelayBuckets(bounds)
        self.lock = threading.Lock()
        self.idle_timeout = idle_timeout
        self.sender = SenderSessions(buckets, log)
        self.reflector = ReflectorSessions(buckets, log)
        self.info = ServiceInfo(log)
        self.pipeline = Pipeline(self.info, {"sender": self.sender,
                                             "reflector": self.reflector}, log)
        self._routes = {records.ReflectorPacket: self.reflector.packet,
                        records.SessionStats: self.sender.stats,
                        records.ServiceStats: self.info.service,
                        records.SupervisorStats: self.info.supervisor}
        self.registry = CollectorRegistry()
        for collector in (self.pipeline, self.info, ProcessCollector(registry=None)):
            self.registry.register(collector)

    def handle(self, msg, now):
        """Aggregate one message (bytes); malformed ones are counted, never raised."""
        try:
            recs = records.decode(msg)
        except records.RecordError as e:
            self.pipeline.bad(e.reason, str(e))
            return
        kind = type(recs[0])
        if kind is records.SenderPacket:
            packet, good = self.sender.packet, len(recs)
            for rec in recs:
                if rec.outcome > records.OUTCOME_DUPLICATE:
                    self.pipeline.bad("bad_outcome", f"outcome {rec.outcome} in {rec}")
                    good -= 1
                    continue
                packet(rec, now)
            self.pipeline.received += good
            return
        route = self._routes[kind]
        for rec in recs:
            route(rec, now)
        self.pipeline.received += len(recs)

    def expire(self, now):
        """Drop the series of sessions and services idle for longer than idle_timeout."""
        self.sender.table.expire(now, self.idle_timeout)
        self.reflector.table.expire(now, self.idle_timeout)
        self.info.expire(now, self.idle_timeout)

    def metrics(self):
        """The whole /metrics page, bytes in text format 0.0.4."""
        with self.lock:
            return generate_latest(self.registry) + self.sender.render() + self.reflector.render()
