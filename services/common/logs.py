"""Logging for every stamp-bpf service: structlog, JSON lines on stdout.

One event per line, with an ISO UTC timestamp, the level and the service name.
On a terminal the same events are rendered by structlog's console renderer,
unless JSON is asked for explicitly (--log-format json).
"""

import logging
import sys

import structlog


def configure(service, debug=False, fmt="auto", stream=None):
    """Set up structlog for `service` ("sender", "reflector", ...).

    fmt is "json", "console" or "auto" (console on a terminal, JSON otherwise).
    Returns a logger bound to the service name.
    """
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger().bind(service=service)
