"""The command line of each service, built from a validated configuration.

The one builder of the services' command lines: the supervisor runs them, and
the chart's templates (chart/templates/_args.tpl) must render the same
arguments from the same settings, which tests/test_command_line.py checks for
every chart scenario.

The children are the same console scripts a user runs by hand, with the same
flags (docs/cli.md), found in one bin directory: by default the one holding the
supervisor's own interpreter, so a virtual environment supervises its own
stamp-sender, stamp-reflector and stamp-exporter.
"""

import decimal
import os
import shutil
import socket
import sys

from ..common import auth
from .config import ConfigError, exporter_histogram

START_ORDER = ("exporter", "reflector", "sender")
STOP_ORDER = tuple(reversed(START_ORDER))  # the exporter last, so final records are counted

SCRIPTS = {"exporter": "stamp-exporter", "reflector": "stamp-reflector", "sender": "stamp-sender"}


def default_bin_dir():
    """The directory of this interpreter (not resolved: a venv's bin links to python)."""
    return os.path.dirname(sys.executable)


def _num(v):
    """A number as Helm's toString (Go's %v) writes it, so the chart renders the same text:
    the shortest digits that give the value back (never rounded), in exponent form
    below 1e-04 and from 1e+06 on, and whole floats without a point."""
    if not isinstance(v, float):
        return str(v)
    d = decimal.Decimal(repr(v)).normalize()
    exp = d.adjusted()
    if exp < -4 or exp >= 6:
        sign, digits, _ = d.as_tuple()
        mant = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        return f"{'-' if sign else ''}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return format(d, "f")


def _pipe(cfg, log_format):
    return ["--zmq", cfg["zmq.endpoint"], "--log-format", log_format]


def _hist_and_flags(cfg, svc):
    """--hist/--histpath, then the boolean flags, in the chart's order (chart/templates/_args.tpl)."""
    args = []
    h = f"{svc}.histogram."
    if cfg[h + "enabled"]:
        args += ["--hist", *(_num(cfg[h + k]) for k in ("bins", "floor", "ceiling")),
                 "--histpath", cfg[h + "path"]]
    if svc == "reflector" and cfg["reflector.output"]:
        args.append("--output")
    for key, flag in (("enforceSync", "--enforce-sync"), ("enforcePTP", "--enforce-ptp"),
                      ("debug", "--debug")):
        if cfg[f"{svc}.{key}"]:
            args.append(flag)
    return args


def auth_args(cfg):
    """--auth-key-file for authenticated mode (the chart's stamp-bpf.authArgs), or nothing."""
    return ["--auth-key-file", cfg["auth.keyFile"]] if cfg["auth.keyFile"] else []


def sender_args(cfg, log_format):
    """stamp-sender's arguments. REFLECTOR addresses and --reflector-dns may both be
    given: the sender keeps the static sessions apart from the discovered ones."""
    args = [cfg["sender.interface"], *cfg["sender.reflectorIPs"]]
    if cfg["sender.reflectorDNS"]:
        args += ["--reflector-dns", cfg["sender.reflectorDNS"],
                 "--dns-interval", _num(cfg["sender.dnsInterval"])]
        if cfg["sender.maxPeers"]:
            args += ["--max-peers", str(cfg["sender.maxPeers"])]
    args += ["--address-family", cfg["sender.addressFamily"],
             "--source-port", str(cfg["sender.sourcePort"]),
             "--dest-port", str(cfg["sender.destinationPort"]),
             "--count", str(cfg["sender.count"]),
             "--interval", _num(cfg["sender.interval"]),
             "--timeout", _num(cfg["sender.timeout"])]
    return (args + auth_args(cfg) + _pipe(cfg, log_format) + _hist_and_flags(cfg, "sender")
            + cfg["sender.extraArgs"])


def reflector_args(cfg, log_format):
    """stamp-reflector's arguments. The allow-list goes in a file (allowfile.py), so
    a change of it is a reload of that file, not a new command line."""
    args = [cfg["reflector.interface"], "--port", str(cfg["reflector.port"]),
            "--max-sessions", str(cfg["reflector.maxSessions"]),
            "--max-rate", _num(cfg["reflector.maxRate"]), "--burst", str(cfg["reflector.burst"])]
    if cfg["reflector.allowedSources"]:
        args += ["--allow-file", cfg["reflector.allowFile"]]
    return (args + auth_args(cfg) + _pipe(cfg, log_format) + _hist_and_flags(cfg, "reflector")
            + cfg["reflector.extraArgs"])


def exporter_args(cfg, log_format):
    args = ["--listen", cfg["monitoring.listen"], "--zmq", cfg["zmq.endpoint"],
            "--idle-timeout", _num(cfg["exporter.idleTimeout"])]
    if cfg["exporter.serviceTimeout"]:
        args += ["--service-timeout", _num(cfg["exporter.serviceTimeout"])]
    if cfg["reflector.enabled"]:
        args += ["--max-reflector-sessions", str(cfg["reflector.maxSessions"])]
    args += ["--log-format", log_format]
    if cfg["exporter.nodeName"]:
        args += ["--node-name", cfg["exporter.nodeName"]]
    if cfg["exporter.buckets"]:
        args += ["--buckets", ",".join(map(_num, cfg["exporter.buckets"]))]
    if cfg["reflector.enabled"] and not cfg["reflector.delayHistogram"]:
        args.append("--no-reflector-histogram")
    hist = exporter_histogram(cfg)
    if hist:
        args += ["--hist", *map(_num, hist)]
    if cfg["exporter.debug"]:
        args.append("--debug")
    return args + cfg["exporter.extraArgs"]


_BUILDERS = {"exporter": exporter_args, "reflector": reflector_args, "sender": sender_args}


def build(cfg, bin_dir, log_format):
    """{child name: argv} for every enabled child, in START_ORDER."""
    wanted = [n for n in START_ORDER if n == "exporter" or cfg[f"{n}.enabled"]]
    return {n: [os.path.join(bin_dir, SCRIPTS[n]), *_BUILDERS[n](cfg, log_format)]
            for n in wanted}


def check_host(cfg, commands):
    """What must hold on this host before anything starts: programs, interfaces and
    the authenticated mode's key file."""
    for name, argv in commands.items():
        if not shutil.which(argv[0]):
            raise ConfigError(f"{name}: {argv[0]} is not an executable; install the stamp-bpf "
                              "package beside this stamp-bpf, or point --bin-dir at its bin folder")
    for svc in ("sender", "reflector"):
        if svc in commands and cfg[f"{svc}.interface"] != "auto":
            iface = cfg[f"{svc}.interface"]
            try:
                socket.if_nametoindex(iface)
            except OSError:
                raise ConfigError(f"{svc}.interface: no interface named {iface!r} on this host "
                                  "(see ip link)") from None
    if cfg["auth.keyFile"] and ("sender" in commands or "reflector" in commands):
        try:
            auth.load_key(cfg["auth.keyFile"])
        except auth.AuthKeyError as e:
            raise ConfigError(f"auth.keyFile: {str(e).removeprefix('--auth-key-file ')}") from None
