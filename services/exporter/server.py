"""HTTP: /metrics (Prometheus text format), the health checks and / (page.py), on one
threaded server.

    /healthz           the pod's liveness: both checks below
    /healthz/exporter  the exporter's own: its receive loop runs
    /healthz/service   the service's (sender or reflector): with --service-timeout N,
                       a health record (sent every 5 s) came, the last one within N
                       seconds; 503 until the first one

The chart probes the exporter container on /healthz/exporter and the service
container on /healthz/service, so a stuck sender or reflector is restarted
without restarting the exporter, and the other way round: the service's startup
probe waits (minutes: bcc compiles) for its first record, its liveness probe
then for each next one.
"""

import socket
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from . import page

HEALTHY_SECONDS = 10.0   # /healthz fails when the receive loop is stuck this long


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Health:
    """The answers of the health paths; `heartbeat[0]` is the receive loop's last
    monotonic time, `last_service_stats()` that of the newest ServiceStats (or None)."""

    def __init__(self, heartbeat, last_service_stats, service_timeout=0.0, now=time.monotonic):
        self.heartbeat = heartbeat
        self.last_service_stats = last_service_stats
        self.service_timeout = service_timeout
        self.now = now

    def exporter(self):
        """None when the receive loop runs, else what is wrong."""
        age = self.now() - self.heartbeat[0]
        return None if age < HEALTHY_SECONDS else f"receive loop stalled for {age:.0f} s"

    def service(self):
        """None when the service reported within service_timeout (or the check is off)."""
        if not self.service_timeout:
            return None
        last = self.last_service_stats()
        if last is None:
            return "no health record from the service yet: it is starting, stuck or gone"
        age = self.now() - last
        if age < self.service_timeout:
            return None
        return (f"no health record from the service for {age:.0f} s "
                f"(--service-timeout {self.service_timeout:g}): it is stuck or gone")

    def check(self, path):
        """(ok, problems) for /healthz, /healthz/exporter or /healthz/service."""
        checks = {"/healthz": (self.exporter, self.service), "/healthz/exporter": (self.exporter,),
                  "/healthz/service": (self.service,)}[path]
        problems = [p for p in (c() for c in checks) if p]
        return not problems, problems


HEALTH_PATHS = ("/healthz", "/healthz/exporter", "/healthz/service")


def make_app(aggregator, health):
    """The WSGI application over an Aggregator and a Health."""
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body = aggregator.metrics()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if path in HEALTH_PATHS:
            ok, problems = health.check(path)
            body = b"ok\n" if ok else ("\n".join(problems) + "\n").encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [body]
        if path == "/":
            body = page.render(aggregator)
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]
    return app


def serve(host, port, app):
    """Start serving in a daemon thread; returns the server (raises OSError if it cannot bind)."""
    cls = _Server6 if ":" in host else _Server
    httpd = make_server(host, port, app, server_class=cls, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    return httpd
