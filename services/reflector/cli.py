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

from ..common import bpfprog, clock, histogram, logs, netif, options, tc
from . import datapath, service

EXAMPLES = """examples:
  stamp-reflector eth0                  # reflect on UDP 862 of eth0's addresses
  stamp-reflector eth0 -p 8620          # reflect on another port (TWAMP Light peers)
  stamp-reflector eth0 --output --hist 28 25 75 --histpath /tmp/reflector-hist
                                        # per-sender logs and histograms
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
    histogram.add_arguments(p, histpath=True)
    options.add_common(p)
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    hist_layout = histogram.from_args(p, args)
    if args.ebpf:
        print(bpfprog.source(datapath.FILES))
        print("// cflags:", " ".join(bpfprog.cflags(datapath.defines(args.port, args.timestamp_format == "ptp"))))
        return 0
    log = logs.configure("reflector", debug=args.debug, fmt=args.log_format)
    problem = options.zmq_problem(args.zmq) or clock.check_enforce(args.enforce_sync,
                                                                   args.enforce_ptp)
    if problem:
        log.error("refused", reason=problem)
        return 2
    try:
        netif.ipv4_addresses(args.interface)
        if args.timestamping == "bpf":
            log.info("starting", interface=args.interface, timestamping="bpf",
                     kernel_headers=bpfprog.kernel_headers()[1])
        else:
            log.warning("starting", interface=args.interface, timestamping="user",
                        hint="user-space timestamps include this process's scheduling delays")
        service.run(args, log, hist_layout)
    except (LookupError, OSError, bpfprog.BpfSetupError, tc.TcError) as e:
        log.error("failed", reason=str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
