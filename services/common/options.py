"""Command-line options the sender and the reflector share, and their checks."""

import argparse

from . import auth, autoif, bpfprog, clock, logs, netif, recordpipe, tc

TIMESTAMP_FORMATS = ("ntp", "ptp")


def port(text):
    """argparse type: a UDP port number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def seconds(minimum=0.0):
    """argparse type: a number of seconds, at least `minimum`."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum of {minimum:g} s")
        return value
    return parse


def resolve_timestamping(parser, args):
    """Settle --timestamping: authenticated mode runs in user space only (docs/auth.md)."""
    if args.auth_key_file is not None:
        if args.timestamping == "bpf":
            parser.error("--auth-key-file runs in user space (the HMAC cannot be computed in "
                         "TC, see docs/auth.md); drop --timestamping bpf")
        args.timestamping = "user"
    elif args.timestamping is None:
        args.timestamping = "bpf"


def zmq_problem(endpoint):
    """One line saying why the exporter endpoint cannot be used, or None."""
    try:
        recordpipe.RecordPusher(endpoint).close()
    except ValueError as e:
        return (f"--zmq {endpoint}: {e}; use ipc:///path or tcp://host:port, "
                f"e.g. {recordpipe.DEFAULT_ENDPOINT}")
    return None


def add_common(parser):
    """Flags both the sender and the reflector take."""
    parser.add_argument("--timestamp-format", choices=TIMESTAMP_FORMATS, default="ntp",
                        help="timestamp format of our timestamps: ntp (RFC 8762 default, Z=0) "
                             "or ptp (truncated PTPv2, TAI, Z=1); default ntp")
    parser.add_argument("--enforce-sync", action="store_true",
                        help="refuse to start unless the kernel reports the clock synchronised")
    parser.add_argument("--enforce-ptp", action="store_true",
                        help="refuse to start unless a PTP hardware clock disciplines the "
                             "system clock (/dev/ptp*, ptp4l/phc2sys running, clock in sync)")
    parser.add_argument("-D", "--debug", action="store_true",
                        help="print the BPF verifier log and every per-packet record")
    parser.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--zmq", default=recordpipe.DEFAULT_ENDPOINT, metavar="ENDPOINT",
                        help=f"exporter's ZeroMQ endpoint; default {recordpipe.DEFAULT_ENDPOINT}")
    parser.add_argument("--timestamping", choices=("bpf", "user"), default=None,
                        help="where T1..T4 are taken: bpf (TC hooks, default) or user "
                             "(user space around send/recv: for hosts where BPF is not "
                             "allowed, and as a baseline; labelled in logs and metrics); "
                             "user with --auth-key-file")
    parser.add_argument("--auth-key-file", metavar="PATH",
                        help="authenticated mode (RFC 8762 4.4, 112-octet packets, "
                             "HMAC-SHA-256): the key is this file's content (not readable "
                             "by others; one trailing newline ignored); runs in user space "
                             "with kernel receive timestamps; the peer needs the same key")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                        help="log lines as JSON or for people; auto picks console on a "
                             "terminal, JSON otherwise")


def run_service(name, args, files, defines, run):
    """What follows parsing, for the sender and the reflector alike.

    --ebpf prints the C and cflags and stops; otherwise logging is set up,
    the exporter endpoint, clock guarantees and interface are checked, and
    run(log) is called. Every expected failure ends in one log line.
    Returns the exit code: 0, 1 (failed) or 2 (refused by a check).
    """
    if args.ebpf:
        print(bpfprog.source(files))
        print("// cflags:", " ".join(bpfprog.cflags(defines)))
        return 0
    log = logs.configure(name, debug=args.debug, fmt=args.log_format)
    problem = zmq_problem(args.zmq) or clock.check_enforce(args.enforce_sync, args.enforce_ptp)
    args.hmac = None
    if not problem and args.auth_key_file is not None:
        try:
            args.hmac = auth.Hmac(auth.load_key(args.auth_key_file))
        except auth.AuthKeyError as e:
            problem = str(e)
    if problem:
        log.error("refused", reason=problem)
        return 2
    tai_problem = clock.tai_offset_problem(args.timestamp_format == "ptp", clock.read())
    if tai_problem:
        # Loud but not fatal: a peer may not care, and the metric
        # stamp_ptp_tai_offset_missing says so for as long as it lasts.
        log.warning("tai_offset_missing", reason=tai_problem)
    try:
        if args.interface == autoif.AUTO:
            args.interface = autoif.resolve(args)
            log.info("interface_chosen", interface=args.interface, by="route")
        netif.addresses(args.interface)      # the interface exists
        if args.timestamping == "bpf":
            log.info("starting", interface=args.interface, timestamping="bpf",
                     kernel_headers=bpfprog.kernel_headers()[1])
        else:
            log.warning("starting", interface=args.interface, timestamping="user",
                        authenticated=args.hmac is not None,
                        hint="kernel receive timestamps, user-space transmit timestamps "
                             "(the HMAC covers them)" if args.hmac else
                             "user-space timestamps include this process's scheduling delays")
        run(log)
    except (LookupError, OSError, bpfprog.BpfSetupError, tc.TcError) as e:
        log.error("failed", reason=str(e))
        return 1
    return 0
