"""stamp-reflector: reflect STAMP test packets in the kernel (RFC 8762).

USAGE: stamp-reflector IFACE [-p PORT] [--timestamp-format {ntp,ptp}] [...]

Every unauthenticated STAMP test packet addressed to one of IFACE's IPv4
addresses on PORT is timestamped (T2), rewritten into the reflector format
and sent back by TC programs, without visiting user space; T3 is written at
TC egress. This process loads and attaches the programs, keeps their
settings fresh and streams one record per reflected packet to the exporter.
"""

import argparse
import sys

from ..common import histogram, options, runtime
from . import datapath, guard, service, sessions

EXAMPLES = """examples:
  stamp-reflector eth0                  # reflect on UDP 862 of eth0's addresses
  stamp-reflector eth0 -p 8620          # reflect on another port (TWAMP Light peers)
  stamp-reflector eth0 --stateful       # own Sequence Numbers per session (RFC 8762 4.3.1)
  stamp-reflector eth0 --stateful --stateful-sessions 4096 --session-timeout 60
                                        # at most 4,096 stateful sessions, 60 s idle ends one
  stamp-reflector eth0 --output --hist 28 25 75 --histpath /tmp/reflector-hist
                                        # per-sender logs and histograms
  stamp-reflector eth0 --auth-key-file /etc/stamp-bpf/auth/key
                                        # authenticated mode only (user space, no TC)
  stamp-reflector eth0 --allow 10.0.0.0/8 --allow 2001:db8::/32
                                        # answer only senders in these prefixes
  stamp-reflector eth0 --allow-file /etc/stamp-bpf/allowed-sources
                                        # the prefixes from a file, re-read on SIGHUP
  stamp-reflector eth0 --max-rate 100 --burst 10
                                        # at most 100 packets/s per sender address
  stamp-reflector eth0 --ebpf           # print the C and cflags that would be loaded
"""


def parser():
    p = argparse.ArgumentParser(
        prog="stamp-reflector", description="Reflect STAMP test packets in the kernel.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    p.add_argument("interface", metavar="IFACE", help="interface to reflect on")
    p.add_argument("-p", "--port", type=options.port, default=862,
                   help="UDP port to reflect on; default 862")
    p.add_argument("--stateful", action="store_true",
                   help="stateful reflector (RFC 8762 4.3.1): one session per sender address "
                        "and port, reflector address and port, and SSID, with the reflector's "
                        "own Sequence Number from 0 and Direct Measurement counters; default "
                        "stateless")
    p.add_argument("--stateful-sessions", type=_max_sessions,
                   default=datapath.DEFAULT_MAX_SESSIONS, metavar="N",
                   help="with --stateful: sessions the kernel numbers (an LRU map; the least "
                        "recently used goes when full; not --max-sessions, which bounds the "
                        f"sessions recorded); default {datapath.DEFAULT_MAX_SESSIONS}")
    p.add_argument("--session-timeout", type=options.seconds(1.0), default=300.0, metavar="S",
                   help="with --stateful: a session idle this long starts again from 0, "
                        "seconds; default 300")
    p.add_argument("--sync-source", choices=sorted(datapath.ReflectorDatapath.SYNC_SOURCES),
                   default="ntp",
                   help="what disciplines this host's clock, reported in the Timestamp "
                        "Information TLV while the kernel says it is synchronised (otherwise "
                        "'local free-running'); default ntp")
    p.add_argument("--output", action="store_true",
                   help="log per-sender sessions (start, periodic stats, end)")
    p.add_argument("--max-sessions", type=int, default=sessions.DEFAULT_MAX_SESSIONS,
                   metavar="N",
                   help="sender sessions kept at most (anyone can send to the port); packets "
                        "of more senders are reflected, not recorded, and counted; "
                        f"default {sessions.DEFAULT_MAX_SESSIONS}")
    p.add_argument("--allow", action="append", type=guard.allow_arg, default=[],
                   metavar="CIDR",
                   help="reflect only for senders in this IPv4 or IPv6 prefix (repeat for "
                        "more); others pass on to the host's stack, counted as not_allowed; "
                        "default: every sender")
    p.add_argument("--allow-file", metavar="PATH",
                   help="more prefixes, one a line ('#' comments), re-read on SIGHUP and "
                        "when the file changes, without dropping a session; with --allow, "
                        "both lists count")
    p.add_argument("--max-rate", type=float, default=guard.DEFAULT_MAX_RATE, metavar="PPS",
                   help="test packets per second reflected at most per sender address "
                        "(token bucket); more are dropped, counted as rate_limited; "
                        f"0 = no limit; default {guard.DEFAULT_MAX_RATE}")
    p.add_argument("--burst", type=int, default=guard.DEFAULT_BURST, metavar="N",
                   help="packets a sender may send back to back above --max-rate; "
                        f"default {guard.DEFAULT_BURST}")
    p.add_argument("--rate-sources", type=int, default=guard.DEFAULT_RATE_SOURCES,
                   metavar="N",
                   help="sender addresses the rate limit tracks (least recently seen go "
                        f"first); default {guard.DEFAULT_RATE_SOURCES}")
    histogram.add_arguments(p, histpath=True)
    options.add_common(p)
    return p


def _max_sessions(text):
    """argparse type: a session map size the kernel can allocate."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of sessions") from None
    if not 1 <= value <= 1 << 24:
        raise argparse.ArgumentTypeError(f"{value} sessions: give 1 to {1 << 24}")
    return value


def main(argv=None):
    hup = runtime.ReloadSignal()    # first: SIGHUP re-reads --allow-file, never ends us
    p = parser()
    args = p.parse_args(argv)
    options.resolve_timestamping(p, args)
    if args.max_sessions < 1:
        p.error(f"--max-sessions must be 1 or more, got {args.max_sessions}")
    if args.rate_sources < 1:
        p.error(f"--rate-sources must be 1 or more, got {args.rate_sources}")
    try:
        allow = guard.AllowList(args.allow, args.allow_file)
        limit = guard.rate_limit(args.max_rate, args.burst)
    except guard.GuardError as e:
        p.error(str(e))
    hist_layout = histogram.from_args(p, args)
    if not args.stateful and (args.stateful_sessions != datapath.DEFAULT_MAX_SESSIONS
                              or args.session_timeout != 300.0):
        p.error("--stateful-sessions and --session-timeout apply to the stateful mode: "
                "add --stateful")
    if args.stateful and args.auth_key_file is not None:
        p.error("--stateful and --auth-key-file do not go together: the stateful reflector "
                "is in the kernel, authenticated mode in user space (docs/auth.md); drop one")
    if args.stateful and args.timestamping == "user":
        p.error("--stateful needs the kernel datapath: drop --timestamping user")
    return options.run_service(
        "reflector", args, datapath.FILES,
        datapath.defines(args.port, args.timestamp_format == "ptp", args.stateful,
                         args.stateful_sessions, args.rate_sources),
        lambda log: service.run(args, log, hist_layout, allow, limit, hup))


if __name__ == "__main__":
    sys.exit(main())
