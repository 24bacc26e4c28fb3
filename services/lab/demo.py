"""demo - watch stamp-bpf measure a link whose delays you chose.

USAGE: python -m stamp_bpf.lab.demo [-c COUNT] [-t SECONDS] [-i INTERVAL]
           [-f DELAY] [-b DELAY] [-j JITTER] [-e HOST:PORT] [-k DIR]

Builds an emulated lab link (stamp_bpf.lab.netns: sender ns <-> emulator ns
<-> reflector ns, 198.18.0.1 -> 198.18.0.2), starts stamp-reflector in the
reflector ns and stamp-sender in the sender ns, and shows the sender's output
live. Runs until Ctrl-C, --count packets or --duration seconds; then removes
everything and prints the truth: the delays the emulator was told to add, and
the delays packet captures on both ends actually saw, to compare with what the
sender printed. Needs root (namespaces, eBPF).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

from stamp_bpf.lab import capture
from stamp_bpf.lab.emulator import duration_ns
from stamp_bpf.lab.netns import Topology

EXAMPLES = """examples:
  python -m stamp_bpf.lab.demo                        # 3 ms forward, 7 ms back, until Ctrl-C
  python -m stamp_bpf.lab.demo -c 50                  # 50 packets, then the truth
  python -m stamp_bpf.lab.demo -f 20ms -b 1ms -j 0    # another link
  python -m stamp_bpf.lab.demo -e 127.0.0.1:9862      # also run stamp-exporter there
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m stamp_bpf.lab.demo",
        description="run stamp-sender and stamp-reflector across an emulated link, "
                    "then show the truth",
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
    p.add_argument("-e", "--exporter", metavar="HOST:PORT",
                   help="also run stamp-exporter in the host namespace, serving /metrics here")
    p.add_argument("-k", "--keep", metavar="DIR", help="keep logs and captures in DIR (created)")
    args = p.parse_args(argv)
    if args.count < 0 or args.duration < 0 or args.interval <= 0:
        p.error("--count and --duration must be >= 0 and --interval > 0")
    return args


def _duration(text):
    duration_ns(text)                    # validates, with the emulator's own message
    return text


def command(name):
    """Path of a stamp-bpf command: beside this Python (the venv) or on PATH."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else name


def wait_for_log(proc, path, event, timeout):
    """Wait until the JSON log at `path` has a line with "event": `event`."""
    deadline = time.monotonic() + timeout
    needle = f'"event": "{event}"'
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        with open(path, errors="replace") as f:
            if needle in f.read():
                return
        time.sleep(0.05)
    raise RuntimeError(f"no {event!r} log line after {timeout:.0f} s")


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


def run(args, topo):
    zmq = f"ipc://{topo.workdir}/records.sock"
    logs = {}

    def service(host, name, argv, **kw):
        logs[name] = os.path.join(topo.workdir, f"{name}.log")
        with open(logs[name], "wb") as out:
            return topo.popen(host, [command(name), *argv], stdout=out, stderr=subprocess.STDOUT, **kw)

    if args.exporter:
        exporter = service(None, "stamp-exporter", ["--listen", args.exporter, "--zmq", zmq,
                                                    "--log-format", "json"])
    print(f"lab: namespaces {topo.sender.ns}, {topo.middle.ns}, {topo.reflector.ns}; "
          f"files in {topo.workdir}")
    print("starting stamp-reflector (it compiles its eBPF programs first: a few seconds)", flush=True)
    reflector = service(topo.reflector, "stamp-reflector",
                        [topo.reflector.ifname, "--zmq", zmq, "--log-format", "json"])
    try:
        wait_for_log(reflector, logs["stamp-reflector"], "reflecting", 60)
    except RuntimeError as e:
        raise RuntimeError(f"stamp-reflector did not start ({e}); its log:\n"
                           + open(logs["stamp-reflector"]).read()[-2000:]) from None
    if args.exporter:
        time.sleep(0.5)
        if exporter.poll() is not None:
            raise RuntimeError("stamp-exporter exited; its log:\n" + open(logs["stamp-exporter"]).read()[-2000:])
        print(f"stamp-exporter: http://{args.exporter}/metrics")
    sender_argv = [command("stamp-sender"), topo.sender.ifname, topo.reflector.addr,
                   "-i", str(args.interval), "--zmq", zmq]
    if args.count:
        sender_argv += ["-c", str(args.count)]
    print(f"link: {topo.sender.addr} --{args.fwd_delay}--> {topo.reflector.addr} "
          f"--{args.back_delay}--> {topo.sender.addr}  (jitter +-{args.jitter}); Ctrl-C to stop\n",
          flush=True)
    # It shares our terminal's process group, so Ctrl-C reaches it and it prints its summary.
    sender = topo.popen(topo.sender, sender_argv, start_new_session=False)
    deadline = time.monotonic() + args.duration if args.duration else None
    interrupted = False
    try:
        while sender.poll() is None and not (deadline and time.monotonic() > deadline):
            time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
    finish(topo, sender, interrupted)
    return sender.returncode


def finish(topo, sender, interrupted):
    """Let the sender end on its own terms: SIGINT (Ctrl-C), so it prints its summary."""
    _ignore_interrupts()
    if sender.poll() is None and interrupted:
        try:
            sender.wait(1.5)             # a terminal's Ctrl-C reached it as well
        except subprocess.TimeoutExpired:
            pass
    if sender.poll() is None:
        sender.send_signal(signal.SIGINT)
        try:
            sender.wait(5)
        except subprocess.TimeoutExpired:
            topo.stop(sender)
    if sender.returncode not in (0, 130, -signal.SIGINT):
        print(f"demo: stamp-sender exited with status {sender.returncode}", file=sys.stderr)


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
    # Ctrl-C and SIGTERM both end the run cleanly; SIGINT is also reset for the
    # children in case we were started with it ignored (a shell's background job).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        rc, truth = demo(args, emulator_args)
    except KeyboardInterrupt:            # while building or tearing down the lab
        return 130
    if truth:
        report(args, truth)
    if args.keep:
        print(f"logs and captures kept in {args.keep}")
    return rc


def demo(args, emulator_args):
    """Build the lab, run the services, tear it all down; (sender status, capture truth)."""
    rc = 1
    with Topology("emulated", emulator_args=emulator_args, workdir=args.keep) as topo:
        pcaps = {h: os.path.join(topo.workdir, f"{h}.pcap") for h in ("sender", "reflector")}
        caps = [capture.start(topo, topo.sender, pcaps["sender"]),
                capture.start(topo, topo.reflector, pcaps["reflector"])]
        try:
            rc = run(args, topo)
        except RuntimeError as e:
            print(f"demo: {e}", file=sys.stderr)
        except KeyboardInterrupt:
            print("demo: interrupted before the sender ran; cleaning up", file=sys.stderr)
            rc = 130
        finally:
            _ignore_interrupts()
            for c in caps:
                c.stop()
        truth = capture.stamp_delays(*(capture.stamp_packets(capture.read_pcap(pcaps[h]))
                                       for h in ("sender", "reflector")))
    return rc, truth


if __name__ == "__main__":
    sys.exit(main())
