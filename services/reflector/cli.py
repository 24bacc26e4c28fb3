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

from ..common import histogram, options
from . import datapath, service, sessions

EXAMPLES = """examples:
  stamp-reflector eth0                  # reflect on UDP 862 of eth0's addresses
  stamp-reflector eth0 -p 8620          # reflect on another port (TWAMP Light peers)
  stamp-reflector eth0 --output --hist 28 25 75 --histpath /tmp/reflector-hist
                                        # per-sender logs and histograms
  stamp-reflector eth0 --auth-key-file /etc/stamp-bpf/auth/key
                                        # authenticated mode only (user space, no TC)
  stamp-reflector eth0 --ebpf           # print the C and cflags that would be loaded
"""


def parser():
    p = argparse.ArgumentParser(
        prog="stamp-reflector", description="Reflect STAMP test packets in the kernel.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    p.add_argument("interface", metavar="IFACE", help="interface to reflect on")
    p.add_argument("-p", "--port", type=options.port, default=862,
                   help="UDP port to reflect on; default 862")
    p.add_argument("--output", action="store_true",
                   help="log per-sender sessions (start, periodic stats, end)")
    p.add_argument("--max-sessions", type=int, default=sessions.DEFAULT_MAX_SESSIONS,
                   metavar="N",
                   help="sender sessions kept at most (anyone can send to the port); packets "
                        "of more senders are reflected, not recorded, and counted; "
                        f"default {sessions.DEFAULT_MAX_SESSIONS}")
    histogram.add_arguments(p, histpath=True)
    options.add_common(p)
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    options.resolve_timestamping(p, args)
    if args.max_sessions < 1:
        p.error(f"--max-sessions must be 1 or more, got {args.max_sessions}")
    hist_layout = histogram.from_args(p, args)
    return options.run_service(
        "reflector", args, datapath.FILES,
        datapath.defines(args.port, args.timestamp_format == "ptp"),
        lambda log: service.run(args, log, hist_layout))


if __name__ == "__main__":
    sys.exit(main())
