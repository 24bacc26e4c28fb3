"""The command line of each child, built from a validated configuration.

The children are the same console scripts a user runs by hand, with the same
flags (docs/cli.md), found in one bin directory: by default the one holding the
supervisor's own interpreter, so a virtual environment supervises its own
stamp-sender, stamp-reflector and stamp-exporter.
"""

import os
import shutil
import socket
import sys

from .config import ConfigError, exporter_histogram

START_ORDER = ("exporter", "reflector", "sender")
STOP_ORDER = tuple(reversed(START_ORDER))  # the exporter last, so final records are counted

SCRIPTS = {"exporter": "stamp-exporter", "reflector": "stamp-reflector", "sender": "stamp-sender"}


def default_bin_dir():
    """The directory of this interpreter (not resolved: a venv's bin links to python)."""
    return os.path.dirname(sys.executable)


def _num(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def _common(cfg, svc, log_format):
    args = ["--zmq", cfg["zmq.endpoint"], "--log-format", log_format]
    if cfg[f"{svc}.debug"]:
        args.append("--debug")
    if cfg[f"{svc}.enforceSync"]:
        args.append("--enforce-sync")
    if cfg[f"{svc}.enforcePTP"]:
        args.append("--enforce-ptp")
    h = f"{svc}.histogram."
    if cfg[h + "enabled"]:
        args += ["--hist", *(_num(cfg[h + k]) for k in ("bins", "floor", "ceiling")),
                 "--histpath", cfg[h + "path"]]
    return args


def sender_args(cfg, log_format):
    args = [cfg["sender.interface"], *cfg["sender.reflectorIPs"],
            "--source-port", str(cfg["sender.sourcePort"]),
            "--dest-port", str(cfg["sender.destinationPort"]),
            "--count", str(cfg["sender.count"]),
            "--interval", _num(cfg["sender.interval"]),
            "--timeout", _num(cfg["sender.timeout"])]
    if cfg["sender.reflectorDNS"]:
        args += ["--reflector-dns", cfg["sender.reflectorDNS"],
                 "--dns-interval", _num(cfg["sender.dnsInterval"])]
    return args + _common(cfg, "sender", log_format) + cfg["sender.extraArgs"]


def reflector_args(cfg, log_format):
    args = [cfg["reflector.interface"], "--port", str(cfg["reflector.port"])]
    if cfg["reflector.output"]:
        args.append("--output")
    return args + _common(cfg, "reflector", log_format) + cfg["reflector.extraArgs"]


def exporter_args(cfg, log_format):
    args = ["--listen", cfg["monitoring.listen"], "--zmq", cfg["zmq.endpoint"],
            "--idle-timeout", _num(cfg["exporter.idleTimeout"]), "--log-format", log_format]
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
    """What must hold on this host before anything starts: programs and interfaces exist."""
    for name, argv in commands.items():
        if not shutil.which(argv[0]):
            raise ConfigError(f"{name}: {argv[0]} is not an executable; install the stamp-bpf "
                              "package beside this stamp-bpf, or point --bin-dir at its bin folder")
    for svc in ("sender", "reflector"):
        if svc in commands:
            iface = cfg[f"{svc}.interface"]
            try:
                socket.if_nametoindex(iface)
            except OSError:
                raise ConfigError(f"{svc}.interface: no interface named {iface!r} on this host "
                                  "(see ip link)") from None
