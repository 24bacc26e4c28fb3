"""demo - watch stamp-bpf measure a link whose delays you chose.

USAGE: python -m stamp_bpf.lab.demo [-c COUNT] [-t SECONDS] [-i INTERVAL]
           [-f DELAY] [-b DELAY] [-j JITTER] [-m] [--log-format FMT] [-k DIR]

Builds an emulated lab link (stamp_bpf.lab.netns: sender ns <-> emulator ns
<-> reflector ns, 198.18.0.1 -> 198.18.0.2) and runs each simulated host as a
bare-metal host runs stamp-bpf: one `stamp-bpf run` (the supervisor) per host,
inside its namespace. The reflector host's supervisor runs only stamp-reflector
and its stamp-exporter, the sender host's only stamp-sender and its
stamp-exporter; each exporter serves 127.0.0.1:9862 inside its own namespace
and has its own record socket in /run/stamp-bpf. The sender host's output is
shown live (on a terminal: the sender's ping-like lines); the reflector host's
goes to a log in the work folder. Runs until Ctrl-C, --count packets or
--duration seconds; then SIGTERM to each supervisor (sender host first), a
check that no TC filter and no socket file is left, the namespaces removed, and
the truth: the delays the emulator was told to add, and the delays packet
captures on both ends actually saw, to compare with what the sender printed.
Needs root (namespaces, eBPF).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

from . import capture
from .emulator import duration_ns
from .netns import Topology

EXAMPLES = """examples:
  python -m stamp_bpf.lab.demo                        # 3 ms forward, 7 ms back, until Ctrl-C
  python -m stamp_bpf.lab.demo -c 50                  # 50 packets, then the truth
  python -m stamp_bpf.lab.demo -f 20ms -b 1ms -j 0    # another link
  python -m stamp_bpf.lab.demo -c 20 -m               # and each host's exporter metrics
  python -m stamp_bpf.lab.demo -c 5 | jq .            # JSON lines (not on a terminal)
"""

METRICS_LISTEN = "127.0.0.1:9862"   # inside each host's namespace: no clash between hosts
SOCKET_DIR = "/run/stamp-bpf"       # shared by all namespaces: one socket name per run and host
STOP_TIMEOUT = 40                   # a supervisor's stop: up to 10 s per child, then SIGKILL
# What --metrics shows of a scrape: the supervisor's view and the measurement counters.
SHOWN_METRICS = ("stamp_supervisor_", "stamp_packets_", "stamp_reflector_packets_",
                 "stamp_records_received", "stamp_records_dropped")
SCRAPE = ("import sys, urllib.request\n"
          "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m stamp_bpf.lab.demo",
        description="run a reflector host and a sender host, each under `stamp-bpf run`, "
                    "across an emulated link, then show the truth",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--count", type=int, default=0,
                   help="test packets to send; default 0 (until Ctrl-C)")
    p.add_argument("-t", "--duration", type=float, default=0,
                   help="stop after this many seconds; default 0 (no limit)")
    p.add_argument("-i", "--interval", type=float, default=0.2,
                   help="seconds between test packets; default 0.2")
    p.add_argument("-f", "--fwd-delay", default="3ms", type=_duration,
                   help="sender -> reflector delay; default 3ms")
    p.add_argument("-b", "--back-delay", default="7ms", type=_duration,
                   help="reflector -> sender delay; default 7ms")
    p.add_argument("-j", "--jitter", default="0.2ms", type=_duration,
                   help="uniform jitter, plus or minus this; default 0.2ms")
    p.add_argument("-m", "--metrics", action="store_true",
                   help="before stopping, show what each host's stamp-exporter serves "
                        f"(a scrape of http://{METRICS_LISTEN}/metrics inside its namespace)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                   help="format of the sender host's supervisor and services, the output shown "
                        "(console includes the sender's ping-like lines); default auto: "
                        "console on a terminal, JSON otherwise")
    p.add_argument("-k", "--keep", metavar="DIR", help="keep logs and captures in DIR (created)")
    args = p.parse_args(argv)
    if args.count < 0 or args.duration < 0 or args.interval <= 0:
        p.error("--count and --duration must be >= 0 and --interval > 0")
    if args.log_format == "auto":
        args.log_format = "console" if sys.stdout.isatty() else "json"
    return args


def _duration(text):
    duration_ns(text)                    # validates, with the emulator's own message
    return text


def command(name):
    """Path of a stamp-bpf command: beside this Python (the venv) or on PATH."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else name


class HostSupervisor:
    """`stamp-bpf run` in one simulated host's namespace, its output copied line by
    line to `log_path` (and to our stdout when `show`), its JSON events noted."""

    def __init__(self, topo, host, name, sets, log_format="json", show=False):
        self.topo, self.host, self.name = topo, host, name
        self.socket = os.path.join(SOCKET_DIR, f"demo-{topo.prefix}-{name}.sock")
        self.log_path = os.path.join(topo.workdir, f"{name}-host.log")
        self._show = show
        self._seen = set()                # (service, event) of the JSON lines so far
        self._cond = threading.Condition()
        argv = [command("stamp-bpf"), "run", "--log-format", log_format,
                "--set", f"monitoring.listen={METRICS_LISTEN}",
                "--set", f"zmq.endpoint=ipc://{self.socket}"]
        for item in sets:
            argv += ["--set", item]
        self.proc = topo.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self):
        with open(self.log_path, "wb") as log, self.proc.stdout:
            for line in iter(self.proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                if self._show:
                    try:
                        sys.stdout.buffer.write(line)
                        sys.stdout.flush()
                    except (BrokenPipeError, ValueError):   # `| head` went away: log only
                        self._show = False
                if line.startswith(b"{"):
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    with self._cond:
                        self._seen.add((ev.get("service"), ev.get("event")))
                        self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def seen(self, service, event):
        with self._cond:
            return (service, event) in self._seen

    def wait_for(self, service, event, timeout):
        """Wait for `service`'s JSON `event`; RuntimeError (with the log's tail) if the
        supervisor exits first or `timeout` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (service, event) not in self._seen:
                left = deadline - time.monotonic()
                if self.proc.poll() is not None or left <= 0:
                    why = (f"exited with status {self.proc.returncode}" if self.proc.poll() is not None
                           else f"no {event!r} from {service} after {timeout:.0f} s")
                    raise RuntimeError(f"the {self.name} host's stamp-bpf run {why}; "
                                       f"its last lines:\n{self.tail()}")
                self._cond.wait(min(left, 0.2))

    def wait_gone(self, program, timeout):
        """Wait until no `program` process runs in the host's namespace (any more)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.topo.run(None, ["ip", "netns", "pids", self.host.ns],
                                 capture_output=True, text=True).stdout.split()
            if not any(program in _cmdline(pid) for pid in pids):
                return
            time.sleep(0.05)

    def tail(self, chars=2000):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]

    def scrape(self):
        """The exporter's /metrics, fetched inside the host's namespace."""
        res = self.topo.run(self.host, [sys.executable, "-c", SCRAPE,
                                        f"http://{METRICS_LISTEN}/metrics"],
                            capture_output=True, text=True, timeout=20)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else
                               f"exit status {res.returncode}")
        return res.stdout

    def stop(self):
        """SIGTERM, as a service manager would; the supervisor stops its children in order."""
        rc = self.topo.stop(self.proc, timeout=STOP_TIMEOUT)
        self._pump.join(5)
        return rc

    def leftovers(self):
        """What the run left on the host: TC filters on its interface, its socket file
        (reported, then removed: /run outlives the namespaces)."""
        left = []
        for hook in ("ingress", "egress"):
            res = self.topo.run(self.host, ["tc", "filter", "show", "dev", self.host.ifname, hook],
                                capture_output=True, text=True)
            if res.stdout.strip():
                left.append(f"TC {hook} filters on {self.host.ifname}")
        if os.path.exists(self.socket):
            left.append(f"socket file {self.socket}")
            os.unlink(self.socket)
        return left


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ms(ns):
    return f"{ns / 1e6:7.3f}"


def summarize(name, values):
    if not values:
        return f"  {name:<9} no packet made it"
    return (f"  {name:<9} min {_ms(min(values))}  median {_ms(statistics.median(values))}  "
            f"max {_ms(max(values))} ms   ({len(values)} packets)")


def report(args, truth):
    """The truth, for the user to hold against the sender's own figures."""
    fwd = [d.fwd_ns for d in truth.values() if d.fwd_ns is not None]
    back = [d.back_ns for d in truth.values() if d.back_ns is not None]
    rtt = [d.fwd_ns + d.back_ns for d in truth.values() if d.fwd_ns is not None and d.back_ns is not None]
    print(f"\nThe emulated truth: forward {args.fwd_delay}, backward {args.back_delay}, "
          f"jitter +-{args.jitter} (uniform, no reordering), no loss.")
    print("What packet captures on the sender's and the reflector's interface saw:")
    print(summarize("forward", fwd))
    print(summarize("backward", back))
    print(summarize("rtt", rtt))
    lost_fwd = len(truth) - len(fwd)
    print(f"  {len(truth)} test packets sent; lost forward {lost_fwd}, lost backward {len(fwd) - len(back)}.")
    print("The captures see frames just after TC egress and just before TC ingress, where\n"
          "stamp-bpf timestamps them: the sender's figures should agree to a few microseconds.\n"
          "The emulator itself adds about 0.1 ms to each leg.")


def show_metrics(hosts):
    """Each host's exporter, as Prometheus would see it: the supervisor and the counters."""
    for h in hosts:
        print(f"\n{h.name} host: http://{METRICS_LISTEN}/metrics in {h.host.ns} (in part)")
        try:
            text = h.scrape()
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"  scrape failed: {e}")
            continue
        for line in text.splitlines():
            if line.startswith(SHOWN_METRICS):
                print(f"  {line}")
    print(flush=True)


def run(args, topo, hosts):
    """Start the reflector host, then the sender host (appended to `hosts` as they
    start); return when the sender finished, --duration passed or a supervisor exited."""
    print(f"lab: namespaces {topo.sender.ns}, {topo.middle.ns}, {topo.reflector.ns}; "
          f"files in {topo.workdir}")
    print(f"starting the reflector host: stamp-bpf run in {topo.reflector.ns} (the reflector "
          "compiles its eBPF programs first: a few seconds)", flush=True)
    reflector = HostSupervisor(topo, topo.reflector, "reflector", [
        "sender.enabled=false", f"reflector.interface={topo.reflector.ifname}"])
    hosts.append(reflector)
    reflector.wait_for("reflector", "reflecting", 90)
    print(f"reflector host: reflecting; its log is {reflector.log_path}")
    sets = ["reflector.enabled=false", f"sender.interface={topo.sender.ifname}",
            f"sender.reflectorIPs={topo.reflector.addr}", f"sender.interval={args.interval:g}"]
    if args.count:
        sets.append(f"sender.count={args.count}")
    print(f"starting the sender host: stamp-bpf run in {topo.sender.ns}\n"
          f"link: {topo.sender.addr} --{args.fwd_delay}--> {topo.reflector.addr} "
          f"--{args.back_delay}--> {topo.sender.addr}  (jitter +-{args.jitter}); Ctrl-C to stop\n",
          flush=True)
    sender = HostSupervisor(topo, topo.sender, "sender", sets, args.log_format, show=True)
    hosts.append(sender)
    deadline = time.monotonic() + args.duration if args.duration else None
    # The sender's summary is its last line, JSON in either format (on a terminal
    # without the service name): it has finished.
    while not (sender.seen("sender", "summary") or sender.seen(None, "summary")):
        if deadline and time.monotonic() > deadline:
            return
        for h in hosts:
            if h.proc.poll() is not None:
                raise RuntimeError(f"the {h.name} host's stamp-bpf run exited with status "
                                   f"{h.proc.returncode}; its last lines:\n{h.tail()}")
        time.sleep(0.1)
    sender.wait_gone("stamp-sender", 10)   # it has pushed its last records when it is gone


def shut_down(hosts, metrics):
    """Stop the supervisors, sender host first (its last replies need the reflector);
    True when each exited 0 and left nothing behind."""
    clean = True
    if metrics and len(hosts) == 2 and all(h.proc.poll() is None for h in hosts):
        show_metrics(hosts)
    for h in reversed(hosts):
        try:
            how = f"exited with status {h.stop()}"
        except RuntimeError as e:        # it survived SIGKILL: the teardown kills the namespace
            how = f"did not stop ({e})"
        left = h.leftovers()
        if how != "exited with status 0" or left:
            clean = False
            print(f"demo: the {h.name} host's stamp-bpf run {how}"
                  + (f" and left {', '.join(left)}" if left else ""), file=sys.stderr)
    if hosts and clean:
        print("stopped: " + ", ".join(f"{h.name} host" for h in reversed(hosts))
              + ": each supervisor exited 0 after stopping its children in order; "
                "no TC filter and no socket file left")
    return clean


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _ignore_interrupts():
    """From here on the demo cleans up; a second Ctrl-C or a SIGTERM must not cut that short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("demo: needs root for network namespaces and eBPF; run it with sudo")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    emulator_args = ["--fwd-delay", args.fwd_delay, "--back-delay", args.back_delay,
                     "--jitter", args.jitter, "--seed", str(int(time.time()))]
    # Ctrl-C and SIGTERM both end the run cleanly. The supervisors have sessions of
    # their own, so a terminal's Ctrl-C reaches only us, and we stop them in order.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        rc, truth = demo(args, emulator_args)
    except KeyboardInterrupt:            # while building the lab
        return 130
    if truth:
        report(args, truth)
    if args.keep:
        print(f"logs and captures kept in {args.keep}")
    return rc


def demo(args, emulator_args):
    """Build the lab, run the hosts, tear it all down; (exit status, capture truth)."""
    rc = 1
    with Topology("emulated", emulator_args=emulator_args, workdir=args.keep) as topo:
        pcaps = {h: os.path.join(topo.workdir, f"{h}.pcap") for h in ("sender", "reflector")}
        caps = [capture.start(topo, topo.sender, pcaps["sender"]),
                capture.start(topo, topo.reflector, pcaps["reflector"])]
        hosts = []
        try:
            run(args, topo, hosts)
            rc = 0
        except RuntimeError as e:
            print(f"demo: {e}", file=sys.stderr)
        except KeyboardInterrupt:
            rc = 0 if len(hosts) == 2 else 130   # Ctrl-C is how an endless run ends
            if rc:
                print("demo: interrupted before the sender ran; cleaning up", file=sys.stderr)
        finally:
            _ignore_interrupts()
            if not shut_down(hosts, args.metrics):
                rc = rc or 1
            for c in caps:
                c.stop()
        truth = capture.stamp_delays(*(capture.stamp_packets(capture.read_pcap(pcaps[h]))
                                       for h in ("sender", "reflector")))
    return rc, truth


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:              # `| head`: the lab is torn down already; no more output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
