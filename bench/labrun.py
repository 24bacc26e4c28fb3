"""What the lab parts of the bench share: services in namespaces, their records, /proc figures."""

import os
import subprocess
import sys
import threading
import time

from stamp_bpf.common import recordpipe, records
from stamp_bpf.lab import jsonlog

BIN = os.path.dirname(sys.executable)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def command(name):
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: install the project (bash scripts/setup.sh)")
    return path


def user_timestamping_available():
    """True once both services accept --timestamping user."""
    for name in ("stamp-sender", "stamp-reflector"):
        out = subprocess.run([command(name), "--help"], capture_output=True, text=True).stdout
        if "--timestamping" not in out:
            return False
    return True


class Service:
    """A service process in a namespace, its log (JSON lines) in a file."""

    def __init__(self, topo, host, name, args, log_path):
        self.topo, self.name, self.log_path = topo, name, log_path
        self.started = time.monotonic()
        with open(log_path, "wb") as out:
            self.proc = topo.popen(host, [command(name), *map(str, args)],
                                   stdout=out, stderr=subprocess.STDOUT)

    def events(self, name):
        return jsonlog.events(self.log_path, name)

    def wait_event(self, name, timeout=90):
        return jsonlog.wait_event(self.proc, self.log_path, name, self.name, timeout)

    def tail(self, n=1500):
        return jsonlog.tail(self.log_path, n)

    def stop(self):
        return self.topo.stop(self.proc, 10)


def start(topo, host, name, args, log_path, ready):
    """A Service that has logged event `ready`; stopped again if it never does."""
    svc = Service(topo, host, name, args, log_path)
    try:
        svc.wait_event(ready)
    except RuntimeError:
        svc.stop()
        raise
    return svc


class Collector:
    """Binds the services' ZeroMQ endpoint and keeps every record, with its arrival time."""

    def __init__(self, endpoint):
        self.puller = recordpipe.RecordPuller(endpoint)
        self.endpoint = self.puller.endpoint
        self.items = []           # (monotonic arrival s, record)
        self.first = {}           # record class name -> monotonic time of the first
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            msg = self.puller.recv(100)
            if msg is None:
                continue
            now = time.monotonic()
            for rec in records.decode(msg):
                self.first.setdefault(type(rec).__name__, now)
                self.items.append((now, rec))

    def of(self, kind):
        return [r for _, r in self.items if isinstance(r, kind)]

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.puller.close()


def cpu_seconds(pid):
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait_s(pid):
    """Seconds the process has spent runnable but waiting for a CPU (/proc/PID/schedstat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def rss_detail(pid):
    """{"RssAnon": MB, "RssFile": MB}: heap and the like vs. mapped files (bcc's LLVM, Python)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def stress(topo, hosts, seconds, log_dir):
    """stress-ng keeping every core busy, started in each host's namespace; returns the processes."""
    procs = []
    for host in hosts:
        with open(os.path.join(log_dir, f"stress-{host.ns}.log"), "wb") as out:
            procs.append(topo.popen(host, ["stress-ng", "--cpu", str(os.cpu_count()), "--timeout",
                                           f"{int(seconds)}s", "--quiet"], stdout=out,
                                    stderr=subprocess.STDOUT))
    return procs


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]
