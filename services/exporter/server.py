"""HTTP: /metrics (Prometheus text format), /healthz and / (page.py), on one threaded server."""

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


def make_app(aggregator, heartbeat):
    """The WSGI application; heartbeat[0] is the receive loop's last monotonic time."""
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body = aggregator.metrics()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if path == "/healthz":
            age = time.monotonic() - heartbeat[0]
            ok = age < HEALTHY_SECONDS
            body = b"ok\n" if ok else f"receive loop stalled for {age:.0f} s\n".encode()
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
