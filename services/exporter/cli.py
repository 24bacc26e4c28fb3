"""stamp-exporter: aggregate the sender's and reflector's records into Prometheus metrics.

USAGE: stamp-exporter [--listen HOST:PORT] [--zmq ENDPOINT] [--hist BINS FLOOR CEIL]
                      [--idle-timeout SECONDS] [-D] [--log-format {auto,json,console}]
"""

import argparse
import signal
import socket
import sys
import threading
import time

from .. import __version__
from ..common import histogram, logs, recordpipe
from ..reflector.sessions import DEFAULT_MAX_SESSIONS

from . import receiver, server
from .aggregator import Aggregator

EXAMPLES = """examples:
    stamp-exporter                            # :8080, records on ipc:///run/stamp-bpf/records.sock
    stamp-exporter --listen 127.0.0.1:9862    # serve /metrics on loopback port 9862 only
    stamp-exporter --zmq tcp://0.0.0.0:5556   # take records from other hosts over TCP
    stamp-exporter --hist 28 25 75            # buckets 316 ns .. 31.6 ms, as the services' bins
    stamp-exporter --idle-timeout 60          # drop a session's series after 60 s of silence
    stamp-exporter --node-name worker-3       # the node name its addresses are joined to
    stamp-exporter --buckets 0.0005,0.001,0.002,0.005,0.01,0.05   # 6 buckets + Inf: fewer series
    stamp-exporter --no-reflector-histogram   # reflector side: counters, last, jitter; no buckets
"""


def parse_listen(parser, text):
    """HOST:PORT -> (host, port); ':8080' means all addresses; '[::]:8080' for IPv6."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not sep or not port.isdigit() or int(port) > 65535:
        parser.error(f"--listen wants HOST:PORT (e.g. 0.0.0.0:8080 or 127.0.0.1:9862), got {text!r}")
    return host, int(port)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="stamp-exporter", description="Serve STAMP measurements as Prometheus metrics.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    parser.add_argument("-l", "--listen", default="0.0.0.0:8080", metavar="HOST:PORT",
                        help="address of /metrics and /healthz (default 0.0.0.0:8080)")
    parser.add_argument("-z", "--zmq", default=recordpipe.DEFAULT_ENDPOINT, metavar="ENDPOINT",
                        help="ZeroMQ endpoint to bind for records; the folder of an ipc:// "
                             f"path is created (default {recordpipe.DEFAULT_ENDPOINT})")
    histogram.add_arguments(parser)
    parser.add_argument("--buckets", metavar="SECONDS,...",
                        help="delay histogram bucket bounds in seconds, ascending, comma "
                             "separated (+Inf is added); instead of --hist; default 10 us "
                             "doubling to 10.5 s")
    parser.add_argument("--no-reflector-histogram", dest="reflector_histogram",
                        action="store_false",
                        help="leave out stamp_reflector_delay_seconds (buckets, sum, count): it "
                             "repeats the sender's near_end one; last value, jitter and "
                             "counters stay")
    parser.add_argument("-t", "--idle-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="remove a session's series after this long without a record, "
                             "seconds (default 300)")
    parser.add_argument("--service-timeout", type=float, default=0.0, metavar="SECONDS",
                        help="/healthz and /healthz/service fail until a service's first "
                             "health record and when none came for this long (they come "
                             "every 5 s): a liveness signal for a stuck sender or reflector; "
                             "0 = off (default)")
    parser.add_argument("--max-reflector-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                        metavar="N",
                        help="reflector sessions (senders seen by a reflector) kept at most; "
                             "records of more are dropped and counted in "
                             "stamp_records_dropped_total{stage=\"session_limit\"} "
                             f"(default {DEFAULT_MAX_SESSIONS}, as stamp-reflector's --max-sessions)")
    parser.add_argument("-n", "--node-name", default=socket.gethostname(), metavar="NAME",
                        help="name of the node this exporter runs on, exported with its "
                             "addresses as stamp_node_address_info (default: the host name)")
    parser.add_argument("--history-interval", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between two points of the graphs on the / page; "
                             "it keeps the last 180 (default 10)")
    parser.add_argument("-D", "--debug", action="store_true",
                        help="log every malformed message, not only the first of each kind")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                        help="log lines as JSON or for people (default: console on a terminal)")
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    args.host, args.port = parse_listen(parser, args.listen)
    if not args.idle_timeout > 0:
        parser.error(f"--idle-timeout must be a positive number of seconds, got {args.idle_timeout}")
    if not args.history_interval >= receiver.SWEEP_SECONDS:
        parser.error(f"--history-interval must be at least {receiver.SWEEP_SECONDS:g} second "
                     f"(the receive loop's sweep), got {args.history_interval}")
    if args.service_timeout < 0 or args.service_timeout != args.service_timeout:
        parser.error(f"--service-timeout must be 0 (off) or a number of seconds, "
                     f"got {args.service_timeout}")
    if 0 < args.service_timeout <= 5:
        parser.error(f"--service-timeout {args.service_timeout:g} is not above the 5 s between "
                     "a service's health records; use more than 5 (e.g. 60) or 0 (off)")
    if args.max_reflector_sessions < 1:
        parser.error(f"--max-reflector-sessions must be 1 or more, got {args.max_reflector_sessions}")
    args.layout = histogram.from_args(parser, args)
    args.bounds = None
    if args.buckets is not None:
        if args.layout:
            parser.error("--buckets and --hist both set the buckets: give one of them")
        try:
            args.bounds = histogram.parse_buckets(args.buckets)
        except ValueError as e:
            parser.error(str(e))
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    log = logs.configure("exporter", debug=args.debug, fmt=args.log_format)
    bounds = (args.bounds or (args.layout.prometheus_buckets() if args.layout
                              else histogram.default_buckets()))
    aggregator = Aggregator(bounds, log, args.idle_timeout, args.max_reflector_sessions,
                            args.node_name, args.history_interval, args.reflector_histogram)
    heartbeat = [time.monotonic()]
    try:
        puller = recordpipe.RecordPuller(args.zmq)
    except ValueError as e:
        parser.exit(1, f"stamp-exporter: error: {e}; choose another endpoint with --zmq\n")
    try:
        health = server.Health(heartbeat, lambda: aggregator.info.last_seen, args.service_timeout)
        httpd = server.serve(args.host, args.port, server.make_app(aggregator, health))
    except OSError as e:
        puller.close()
        parser.exit(1, f"stamp-exporter: error: cannot listen on {args.listen}: {e.strerror}; "
                       "choose another address with --listen\n")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info("started", version=__version__, listen=f"{host}:{httpd.server_port}",
             zmq=puller.endpoint, buckets=len(bounds), idle_timeout=args.idle_timeout,
             service_timeout=args.service_timeout)
    try:
        receiver.run(puller, aggregator, stop, heartbeat)
    finally:
        httpd.shutdown()
        puller.close()
        log.info("stopped", records_received=aggregator.pipeline.received,
                 malformed=aggregator.pipeline.malformed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
