"""stamp-bpf: run, watch and restart the stamp-bpf services on one host.

USAGE: stamp-bpf {run,check} [-c FILE] [--set KEY=VALUE ...] [--bin-dir DIR]
                             [--log-format {auto,json,console}]

`run` starts stamp-exporter, then stamp-reflector and/or stamp-sender, restarts
a child that crashes (exponential backoff, capped), gives up after
supervisor.maxRestarts crashes in a row, stops the children in reverse order on
SIGTERM/SIGINT, and on SIGHUP re-reads the configuration and restarts only the
children whose command changed. `check` validates the configuration and prints
the commands `run` would start. Keys: docs/supervisor.md.
"""

import argparse
import shlex
import sys

from ..common import logs
from ..common.recordpipe import RecordPusher
from . import commands, config
from .output import LineOutput
from .supervisor import Supervisor

EXAMPLES = """examples:
  stamp-bpf run -c /etc/stamp-bpf/stamp-bpf.toml
      # what the config file says
  stamp-bpf run --set sender.enabled=false --set reflector.interface=eth1
      # a reflector on eth1 and the exporter on :8080
  stamp-bpf run --set reflector.enabled=false --set sender.interface=eth0 \\
                --set sender.reflectorIPs=192.0.2.10,192.0.2.11
      # a sender measuring to two reflectors, and the exporter
  stamp-bpf check -c stamp-bpf.yaml --set sender.count=10
      # validate, and print the three commands run would start
  systemctl reload stamp-bpf     # or: kill -HUP PID
      # re-read the file; restart only the children whose settings changed
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="stamp-bpf", description="Run and supervise the stamp-bpf services on one host.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "check"),
                        help="run: start and supervise; check: validate and print the commands")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="TOML (*.toml) or YAML (*.yaml, *.yml) file; keys mirror the "
                             "Helm chart's values (docs/supervisor.md)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="set one key, over the file; lists as a,b or {a,b}; repeatable")
    parser.add_argument("--bin-dir", metavar="DIR", default=commands.default_bin_dir(),
                        help="where stamp-sender, stamp-reflector and stamp-exporter are "
                             "(default: beside this interpreter, %(default)s)")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                        help="log format of the supervisor and its children (default: auto, "
                             "console on a terminal, JSON otherwise)")
    return parser.parse_args(argv)


def load(args, log_format):
    """Configuration and child commands from the file and --set items; raises ConfigError."""
    cfg = config.load(args.config, args.sets)
    cmds = commands.build(cfg, args.bin_dir, log_format)
    commands.check_host(cfg, cmds)
    return cfg, cmds


def main(argv=None):
    args = parse_args(argv)
    out = LineOutput()
    log_format = args.log_format
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    try:
        cfg, cmds = load(args, log_format)
    except config.ConfigError as e:
        print(f"stamp-bpf: {e}", file=sys.stderr)
        return 2
    if args.command == "check":
        for argv_ in cmds.values():
            print(shlex.join(argv_))
        return 0
    log = logs.configure("supervisor", fmt=log_format, stream=out.text())
    try:
        sup = Supervisor(cfg, cmds, out, log, reload=lambda: load(args, log_format),
                         make_pusher=lambda endpoint: RecordPusher(endpoint, hwm=100, log=log))
    except ValueError as e:   # RecordPusher: an endpoint ZeroMQ refuses
        print(f"stamp-bpf: zmq.endpoint: {e}", file=sys.stderr)
        return 2
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
