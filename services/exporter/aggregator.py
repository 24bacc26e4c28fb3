"""The exporter's state: decodes record messages, routes them, renders /metrics.

All state is guarded by one lock, taken once per batch of messages by the
receiver and once per scrape by the HTTP server.
"""

import threading

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from ..common import records

from .delays import DelayBuckets
from .history import INTERVAL_S as HISTORY_INTERVAL_S, History, sender_judged
from .node_info import NodeInfo
from .not_reflected import NotReflected
from .pipeline import Pipeline
from .reflector_sessions import ReflectorFamilies
from .sender_sessions import SenderFamilies
from .service_info import ServiceInfo


class Aggregator:
    """Everything the exporter knows; `bounds` are the delay buckets in seconds (+Inf last),
    `node_name` the node it runs on (stamp_node_info), `history_interval` the seconds
    between two points of the / page's graphs; reflector_histogram False leaves out
    stamp_reflector_delay_seconds."""

    def __init__(self, bounds, log, idle_timeout=300.0, max_reflector_sessions=None,
                 node_name="", history_interval=HISTORY_INTERVAL_S, reflector_histogram=True):
        buckets = DelayBuckets(bounds)
        self.lock = threading.Lock()
        self.idle_timeout = idle_timeout
        self.sender = SenderFamilies(buckets, log)
        self.reflector = ReflectorFamilies(buckets, log, max_reflector_sessions,
                                           reflector_histogram)
        self.info = ServiceInfo(log)
        self.history = History({"sender": (self.sender.table, sender_judged),
                                "reflector": (self.reflector.table, None)}, history_interval)
        self.pipeline = Pipeline(self.info, {"sender": self.sender,
                                             "reflector": self.reflector}, log)
        self.not_reflected = NotReflected(self.pipeline)
        # Session records are aggregated as raw tuples (addresses as bytes, fast); the
        # few service records as NamedTuples.
        self._raw_routes = {records.ReflectorPacket: self.reflector.packet,
                            records.SessionStats: self.sender.stats}
        self._routes = {records.ServiceStats: self.info.service,
                        records.SupervisorStats: self.info.supervisor,
                        records.DropCount: self.not_reflected.drop_count}
        self.registry = CollectorRegistry()
        self.node = NodeInfo(node_name, {self.sender.table: "sender",
                                         self.reflector.table: "reflector"})
        for collector in (self.pipeline, self.info, self.node, self.not_reflected,
                          ProcessCollector(registry=None)):
            self.registry.register(collector)

    def handle(self, msg, now):
        """Aggregate one message (bytes); malformed ones are counted, never raised."""
        try:
            kind, raw = records.decode_raw(msg)
        except records.RecordError as e:
            self.pipeline.bad(e.reason, str(e))
            return
        if kind is records.SenderPacket:
            packet, n = self.sender.packet, 0
            for rec in raw:
                n += 1
                if rec[4] > records.OUTCOME_DUPLICATE:
                    self.pipeline.bad("bad_outcome", f"outcome {rec[4]} in {rec}")
                    n -= 1
                    continue
                packet(rec, now)
            self.pipeline.received += n
            return
        route = self._raw_routes.get(kind)
        recs = list(raw) if route else records.decode(msg)
        route = route or self._routes[kind]
        for rec in recs:
            route(rec, now)
        self.pipeline.received += len(recs)

    def expire(self, now):
        """Drop the series of sessions and services idle for longer than idle_timeout."""
        self.sender.table.expire(now, self.idle_timeout)
        self.reflector.table.expire(now, self.idle_timeout)
        self.info.expire(now, self.idle_timeout)
        self.not_reflected.expire(now, self.idle_timeout)

    def metrics(self):
        """The whole /metrics page, bytes in text format 0.0.4."""
        with self.lock:
            return generate_latest(self.registry) + self.sender.render() + self.reflector.render()
