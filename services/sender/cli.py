"""stamp-sender: STAMP Session-Sender with eBPF TC timestamps (RFC 8762).

USAGE: stamp-sender IFACE REFLECTOR [REFLECTOR ...] [-s SRC_PORT] [-d DST_PORT]
                    [-c COUNT] [-i INTERVAL] [-w TIMEOUT] [...]

One session per reflector, IPv4 and IPv6 side by side. User space builds
each test packet and sends it with IPv4 TTL / IPv6 Hop Limit 255; TC egress writes T1, TC ingress takes T4 and hands the reply
to user space through a ring buffer. Per packet: near-end (forward) delay
T2-T1, far-end (backward) delay T4-T3 and round trip (T4-T1)-(T3-T2).
"""

import argparse
import sys

from ..common import addr, histogram, options
from . import datapath, peers
from .service import SenderService

EXAMPLES = """examples:
  stamp-sender eth0 10.0.0.2                 # one session to 10.0.0.2, 1 packet/s, forever
  stamp-sender eth0 10.0.0.2 10.0.0.3 -c 10  # two sessions, 10 packets each, then a summary
  stamp-sender eth0 10.0.0.2 2001:db8::2     # one IPv4 and one IPv6 session
  stamp-sender eth0 fe80::2                  # link-local: scoped to eth0
  stamp-sender eth0 10.0.0.2 -i 0.001 -w 0.5 # 1,000 packets/s, late after 500 ms
  stamp-sender eth0 --reflector-dns stamp-reflector.default.svc.cluster.local
                                             # every address of a DNS name (a mesh)
  stamp-sender eth0 --reflector-dns stamp-reflector.default.svc.cluster.local --address-family 6
                                             # its AAAA records only
  stamp-sender eth0 --reflector-dns stamp-reflector.default.svc.cluster.local --max-peers 16
                                             # at most 16 of them, the same on every restart
  stamp-sender eth0 10.0.0.2 --timestamp-format ptp   # PTPv2 timestamps (Z=1)
  stamp-sender eth0 10.0.0.2 --auth-key-file /etc/stamp-bpf/auth/key
                                             # authenticated mode (HMAC, 112 octets)
  stamp-sender eth0 10.0.0.2 --ssid 100      # SSID 100 (RFC 8972), checked on every reply
  stamp-sender eth0 10.0.0.2 -c 5 | tail -n1 | jq .    # the JSON summary
"""


def ip_address(text):
    try:
        return addr.normalize(text)
    except ValueError as e:
        detail = str(e) if "%" in text else f"{text!r} is not an IPv4 or IPv6 address"
        raise argparse.ArgumentTypeError(f"{detail}; for a DNS name use --reflector-dns") from None


def _ranged(what, lo, hi):
    """argparse type: a whole number from lo to hi."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what} ({lo}-{hi})") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not a {what}: give {lo}-{hi}")
        return value
    return parse


def _ssid(text):
    """argparse type: a non-zero 16-bit SSID."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an SSID (1-65535)") from None
    if not 1 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{value} is not an SSID: give 1-65535 (0 means none)")
    return value


def max_peers(text):
    """argparse type: --max-peers K, 0 (every peer) or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a peer count: give 0 (every peer) or more")
    return value


def parser():
    p = argparse.ArgumentParser(
        prog="stamp-sender", description="Send STAMP test packets and measure both directions.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    p.add_argument("interface", metavar="IFACE", help="interface to send and timestamp on")
    p.add_argument("reflectors", metavar="REFLECTOR", nargs="*", type=ip_address,
                   help="reflector IPv4 or IPv6 address; one session each")
    p.add_argument("-s", "--source-port", type=options.port, default=862,
                   help="UDP source port; default 862")
    p.add_argument("-d", "--dest-port", type=options.port, default=862,
                   help="reflectors' UDP port; default 862")
    p.add_argument("-c", "--count", type=int, default=0,
                   help="packets per session, then exit with a summary; default 0 (forever)")
    p.add_argument("-i", "--interval", type=options.seconds(0.0001), default=1.0,
                   help="interval between packets of a session, seconds; default 1.0")
    p.add_argument("-w", "--timeout", type=options.seconds(0.001), default=1.0,
                   help="a reply later than this after T1 is late, seconds; default 1")
    p.add_argument("--late-window", type=options.seconds(0.0), default=None,
                   help="a packet with no reply by timeout + this is lost, seconds; "
                        "default: the same as --timeout")
    p.add_argument("--reflector-dns", metavar="NAME",
                   help="measure to every address NAME resolves to (A and AAAA records, "
                        "as --address-family says; except this host's), re-resolved every "
                        "--dns-interval; REFLECTORs given too are measured whatever NAME "
                        "resolves to")
    p.add_argument("--address-family", choices=addr.FAMILIES, default="any",
                   help="families measured: any (IPv4 and IPv6), 4 or 6; filters "
                        "--reflector-dns answers, and REFLECTORs must match it; default any")
    p.add_argument("--dns-interval", type=options.seconds(1.0), default=30.0,
                   help="seconds between --reflector-dns lookups; default 30")
    p.add_argument("--ssid", type=_ssid, default=None, metavar="N",
                   help="STAMP Session Identifier (RFC 8972) of the session, 1-65535; one "
                        "reflector only; default: a random one per session, unique among them")
    p.add_argument("--directional-loss", action="store_true",
                   help="tell loss on the way there from loss on the way back: every test "
                        "packet carries a Direct Measurement TLV (RFC 8972, 60 octets in all), "
                        "which a stateful reflector answers with its counts; summary "
                        "lost_forward/lost_backward (null against a stateless reflector)")
    p.add_argument("--dscp", type=_ranged("DSCP", 0, 63), default=None, metavar="N",
                   help="send test packets with DSCP N and a Class of Service TLV asking the "
                        "reply to use N too; reports re-marking each way")
    p.add_argument("--location", action="store_true",
                   help="add a Location TLV: report the addresses, ports and MAC the reflector "
                        "saw (nat_seen when they differ from ours)")
    p.add_argument("--timestamp-info", action="store_true",
                   help="add a Timestamp Information TLV: report the reflector's sync source "
                        "and timestamping methods")
    p.add_argument("--padding", type=_ranged("padding", 0, 1400), default=None, metavar="N",
                   help="add an Extra Padding TLV of N octets (0-1400), for size effects")
    p.add_argument("--max-peers", metavar="K", type=max_peers, default=None,
                   help="with --reflector-dns: measure at most K of its addresses, chosen "
                        "by a hash ring so every reflector is measured by K senders "
                        "(docs/cli.md); default 0, every address")
    p.add_argument("--summary-interval", type=options.seconds(1.0), default=10.0,
                   help="seconds between per-session stats log lines; default 10")
    histogram.add_arguments(p, histpath=True)
    options.add_common(p)
    return p


def parse(argv=None):
    p = parser()
    args = p.parse_args(argv)
    options.resolve_timestamping(p, args)
    if args.reflector_dns is not None and not args.reflector_dns.strip():
        p.error("--reflector-dns needs a DNS name, e.g. stamp-reflector.monitoring.svc.cluster.local")
    if not args.reflectors and not args.reflector_dns:
        p.error("no reflector: give at least one REFLECTOR address, or --reflector-dns NAME")
    if len(set(args.reflectors)) != len(args.reflectors):
        p.error("a REFLECTOR is listed twice; each address is one session")
    other = [r for r in args.reflectors if not addr.wanted(r, args.address_family)]
    if other:
        p.error(f"REFLECTOR {other[0]} is not IPv{args.address_family}, as --address-family "
                f"{args.address_family} asks; drop it or use --address-family any")
    if args.count < 0:
        p.error(f"--count must be 0 (forever) or more, got {args.count}")
    if args.ssid is not None and (len(args.reflectors) != 1 or args.reflector_dns):
        p.error("--ssid fixes the SSID of one session: give exactly one REFLECTOR and no "
                "--reflector-dns (without --ssid every session gets its own)")
    if args.auth_key_file is not None:
        tlv_flags = [f for f, on in (("--directional-loss", args.directional_loss),
                                     ("--dscp", args.dscp is not None),
                                     ("--location", args.location),
                                     ("--timestamp-info", args.timestamp_info),
                                     ("--padding", args.padding is not None)) if on]
        if tlv_flags:
            p.error(f"{', '.join(tlv_flags)}: RFC 8972 TLVs are not supported in authenticated "
                    "mode (they would need the HMAC TLV, docs/auth.md); drop "
                    f"{'them' if len(tlv_flags) > 1 else 'it'} or --auth-key-file")
    if args.max_peers is not None and not args.reflector_dns:
        p.error("--max-peers chooses among the addresses of --reflector-dns; give --reflector-dns "
                "NAME, or list fewer REFLECTOR addresses")
    args.max_peers = args.max_peers or peers.ALL
    if args.late_window is None:
        args.late_window = args.timeout
    return p, args, histogram.from_args(p, args)


def main(argv=None):
    _, args, hist_layout = parse(argv)
    return options.run_service(
        "sender", args, datapath.FILES,
        datapath.defines(args.source_port, args.dest_port, args.timestamp_format == "ptp"),
        lambda log: SenderService(args, log, hist_layout).run())


if __name__ == "__main__":
    sys.exit(main())
