"""Helpers for the supervisor tests (no tests here): a running `stamp-bpf run`
whose output is parsed as it comes, and stand-in children for the logic tests."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

STAMP_BPF = os.path.join(os.path.dirname(sys.executable), "stamp-bpf")
SERVICES = ("exporter", "reflector", "sender")

# A stand-in for stamp-sender, -reflector and -exporter, installed under each
# name in a temporary bin directory. It records what happens to it as JSON lines
# in DIR/events.log and takes orders from files in DIR named after it:
#   NAME.crash     exit 3 at once, after one line on stderr (a crash on start)
#   NAME.stubborn  ignore SIGTERM (the supervisor has to SIGKILL it)
#   NAME.spam      write N long JSON lines (N in the file) as fast as it can
# Otherwise it prints a JSON line every 0.2 s and exits 0 on SIGTERM. As the
# exporter, it listens on its --listen address, as the real one serves /metrics.
STANDIN = r'''
import json, os, signal, socket, sys, time
here = os.path.dirname(os.path.abspath(__file__))
name = os.path.basename(sys.argv[0]).removeprefix("stamp-")

def event(what, **kw):
    line = json.dumps({"event": what, "name": name, "pid": os.getpid(),
                       "t": time.monotonic(), **kw}) + "\n"
    fd = os.open(os.path.join(here, "events.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line.encode())
    os.close(fd)

def order(what):
    path = os.path.join(here, f"{name}.{what}")
    return open(path).read().strip() if os.path.exists(path) else None

def on_term(signum, frame):
    event("term")
    print(json.dumps({"event": "stopping", "service": name}), flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, signal.SIG_IGN if order("stubborn") is not None else on_term)
event("start", argv=sys.argv[1:])
if order("crash") is not None:
    print(f"{name}: cannot start: the crash order file says so", file=sys.stderr, flush=True)
    sys.exit(3)
if "--listen" in sys.argv:
    host, _, port = sys.argv[sys.argv.index("--listen") + 1].rpartition(":")
    listener = socket.create_server((host, int(port)))
spam = order("spam")
if spam:
    for i in range(int(spam)):
        print(json.dumps({"event": "spam", "service": name, "i": i, "pad": name[0] * 3000}))
    sys.stdout.flush()
    event("spammed")
while True:
    print(json.dumps({"event": "tick", "service": name}), flush=True)
    time.sleep(0.2)
'''


def install_standins(bin_dir):
    """Write the stand-in under the three service names into bin_dir."""
    os.makedirs(bin_dir, exist_ok=True)
    for svc in SERVICES:
        path = os.path.join(bin_dir, f"stamp-{svc}")
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\n{STANDIN}")
        os.chmod(path, 0o755)
    return bin_dir


def free_port():
    """A TCP port nobody listens on right now (for a stand-in exporter's --listen)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standin_events(bin_dir, what=None, name=None):
    """The stand-ins' events so far, optionally only one kind and one child."""
    path = os.path.join(bin_dir, "events.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        evs = [json.loads(line) for line in f if line.strip()]
    return [e for e in evs if (what is None or e["event"] == what)
            and (name is None or e["name"] == name)]


def wait_until(pred, timeout, what):
    """Poll pred() until it returns something true; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"Waited {timeout} s in vain for this: {what}.")
        time.sleep(0.05)


class SupervisorRun:
    """`stamp-bpf run ARGS` (in namespace `ns`), stdout and stderr collected by line."""

    def __init__(self, args, ns=None):
        argv = [STAMP_BPF, "run", "--log-format", "json", *args]
        if ns:
            argv = ["ip", "netns", "exec", ns, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stdout, self.stderr = [], []
        self._threads = [threading.Thread(target=self._read, args=(p, dst), daemon=True)
                         for p, dst in ((self.proc.stdout, self.stdout),
                                        (self.proc.stderr, self.stderr))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(pipe, dst):
        for line in iter(pipe.readline, b""):
            dst.append(line)

    def json_lines(self, strict=True):
        """Every stdout line parsed. Strict: a line that is not one JSON object fails
        the test; otherwise such lines (a child's traceback, say) are skipped."""
        out = []
        for line in list(self.stdout):
            try:
                out.append(json.loads(line))
            except ValueError:
                if strict:
                    raise AssertionError(f"Supervisor stdout line is not one JSON object: "
                                         f"{line[:200]!r}") from None
        return out

    def events(self, event=None, **match):
        """The supervisor's own events, optionally one kind with matching fields."""
        return [e for e in self.json_lines(strict=False) if e.get("service") == "supervisor"
                and (event is None or e.get("event") == event)
                and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, event, timeout=10, count=1, **match):
        return wait_until(lambda: (evs := self.events(event, **match)) and len(evs) >= count
                          and evs, timeout,
                          f"the supervisor logged {event} {match} fewer than {count} times; "
                          f"stderr: {b''.join(self.stderr)[-500:]!r}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"The supervisor did not exit within {timeout} s.") from None
        for t in self._threads:
            t.join(5)
        return rc

    def close(self):
        """Finalizer: SIGTERM, then SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
