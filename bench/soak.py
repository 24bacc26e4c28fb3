"""soak: reflector, sender and exporter at 1,000 packets/s with churning sessions, watched for growth.

    [sender ns: stamp-sender -i 0.001 (eBPF),      --veth--  [reflector ns: stamp-reflector]
                churning user-space senders]
    root ns: stamp-exporter (records of both over one ipc:// socket)

For MINUTES (bench/run.py soak --minutes N; 3 in the full run, 60 when
asked) a steady session runs at 1,000 packets/s while a new short session
starts every CHURN_S seconds (a --timestamping user sender, so no compile
per churn) from one of CHURN_PORTS source ports and ends a second later:
sessions start and end at the reflector and the exporter all along. Every
SAMPLE_S seconds: the resident memory and open files of the three processes,
the entries of the reflector's and the sender's BPF hash maps (the map ids
in their /proc/PID/fdinfo, counted with BPF_MAP_GET_NEXT_KEY) and the number
of series the exporter serves. After WARMUP_S, each one's slope (least
squares, per hour) is reported, and it is judged to keep growing when its
median over the last third of the run exceeds that over the middle third by
more than its tolerance (TOLERANCE): the row then fails.
"""

import ctypes
import os
import shutil
import socket
import statistics
import tempfile
import time
import urllib.request

from stamp_bpf.lab.netns import Topology

import labrun
import table

PART = "soak"
DEFAULT_MINUTES = 3
INTERVAL_S = 0.001
CHURN_S = 5.0
CHURN_PORTS = range(20000, 20020)
SAMPLE_S = 5.0
WARMUP_S = 45.0
EXPORTER_IDLE_S = 20
TOLERANCE = {"rss_mib": 2.0, "open_files": 0, "bpf_map_entries": 0, "series": 5}
UNITS = {"rss_mib": "MiB", "open_files": "files", "bpf_map_entries": "entries", "series": "series"}

# --- BPF map entries, from outside the process that owns the maps ------------------
SYS_BPF = 321                   # x86_64
BPF_MAP_GET_NEXT_KEY, BPF_MAP_GET_FD_BY_ID = 4, 14
HASH_TYPES = {1, 5, 9, 10, 11}  # hash, percpu hash, LRU hash, LRU percpu hash, LPM trie
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _IdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


class _KeyAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("next_key", ctypes.c_uint64)]


def map_ids(pid):
    """{map id: (map type, key size)} of the BPF maps process `pid` holds open."""
    out = {}
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(f"{d}/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if "map_id" in info:
            out[int(info["map_id"])] = (int(info["map_type"]), int(info["key_size"]))
    return out


def map_entries(map_id, key_size):
    """How many keys a map holds (walked with BPF_MAP_GET_NEXT_KEY)."""
    a = _IdAttr(map_id, 0, 0)
    fd = _libc.syscall(SYS_BPF, BPF_MAP_GET_FD_BY_ID, ctypes.byref(a), ctypes.sizeof(a))
    if fd < 0:
        return 0
    try:
        key, nxt = ctypes.create_string_buffer(key_size), ctypes.create_string_buffer(key_size)
        k = _KeyAttr(fd, 0, 0, ctypes.addressof(nxt))      # key NULL: the first key
        n = 0
        while _libc.syscall(SYS_BPF, BPF_MAP_GET_NEXT_KEY, ctypes.byref(k), ctypes.sizeof(k)) == 0:
            n += 1
            ctypes.memmove(key, nxt, key_size)
            k.key = ctypes.addressof(key)
        return n
    finally:
        os.close(fd)


def bpf_map_entries(pid):
    return sum(map_entries(i, ks) for i, (t, ks) in map_ids(pid).items() if t in HASH_TYPES)


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def series(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return sum(1 for line in r.read().decode().splitlines() if line and line[0] != "#")


# --- judging --------------------------------------------------------------------

def slope_per_hour(points):
    """Least-squares slope of [(seconds, value)], per hour."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600 if den else 0.0


def keeps_growing(points, tolerance):
    """(growing?, growth): the last third's median against the middle third's."""
    n = len(points)
    if n < 6:
        return False, 0.0
    mid = statistics.median(v for _, v in points[n // 3:2 * n // 3])
    last = statistics.median(v for _, v in points[2 * n // 3:])
    return last - mid > tolerance, last - mid


# --- the run --------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(log=print, minutes=DEFAULT_MINUTES):
    tmp = tempfile.mkdtemp(prefix="stamp-bench-soak-")
    try:
        return _run(log, minutes, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(log, minutes, tmp):
    import subprocess
    os.makedirs(f"{tmp}/topo")
    zmq = f"ipc://{tmp}/records.sock"
    port = _free_port()
    samples = {}        # (process, metric) -> [(s, value)]
    churned = 0
    with open(f"{tmp}/exporter.log", "wb") as out:
        exporter = subprocess.Popen([labrun.command("stamp-exporter"), "--listen",
                                     f"127.0.0.1:{port}", "--zmq", zmq, "--idle-timeout",
                                     str(EXPORTER_IDLE_S), "--log-format", "json"],
                                    stdout=out, stderr=subprocess.STDOUT)
    try:
        with Topology("direct", workdir=f"{tmp}/topo") as topo:
            refl = labrun.Service(topo, topo.reflector, "stamp-reflector",
                                  [topo.reflector.ifname, "--zmq", zmq], f"{tmp}/reflector.log")
            refl.wait_event("reflecting")
            snd = labrun.Service(topo, topo.sender, "stamp-sender",
                                 [topo.sender.ifname, topo.reflector.addr, "-i", INTERVAL_S,
                                  "--zmq", zmq], f"{tmp}/sender.log")
            snd.wait_event("sending")
            procs = {"reflector": refl.proc.pid, "sender": snd.proc.pid, "exporter": exporter.pid}
            log(f"soak: {minutes} min at {1 / INTERVAL_S:,.0f} packets/s, a new session every "
                f"{CHURN_S:g} s")
            t0 = time.monotonic()
            end = t0 + minutes * 60
            next_sample, next_churn, churn = t0, t0, []
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_churn:
                    churn = [c for c in churn if c.proc.poll() is None]
                    sport = CHURN_PORTS[churned % len(CHURN_PORTS)]
                    churn.append(labrun.Service(
                        topo, topo.sender, "stamp-sender",
                        [topo.sender.ifname, topo.reflector.addr, "-s", sport, "-c", 50,
                         "-i", 0.02, "--timestamping", "user", "--zmq", zmq],
                        f"{tmp}/churn-{churned}.log"))
                    churned += 1
                    next_churn += CHURN_S
                if now >= next_sample:
                    t = now - t0
                    for name, pid in procs.items():
                        samples.setdefault((name, "rss_mib"), []).append((t, labrun.rss_mb(pid)))
                        samples.setdefault((name, "open_files"), []).append((t, open_files(pid)))
                        if name != "exporter":
                            samples.setdefault((name, "bpf_map_entries"), []).append(
                                (t, bpf_map_entries(pid)))
                    samples.setdefault(("exporter", "series"), []).append(
                        (t, series(f"http://127.0.0.1:{port}/metrics")))
                    next_sample += SAMPLE_S
                time.sleep(0.2)
            for c in churn:
                c.stop()
            answered = sum(1 for i in range(churned) if _churn_answered(f"{tmp}/churn-{i}.log"))
            alive = {n: p.poll() is None for n, p in (("reflector", refl.proc), ("sender", snd.proc),
                                                      ("exporter", exporter))}
            snd.stop()
            refl.stop()
    finally:
        exporter.terminate()
        exporter.wait(10)
    return rows(samples, alive, minutes, churned, answered)


def _churn_answered(path):
    """Did a churn session get every reply? (its summary's session counts)"""
    from stamp_bpf.lab import jsonlog
    found = jsonlog.events(path, "summary")
    return bool(found) and all(s["received"] == s["sent"] > 0 for s in found[-1]["sessions"])


def rows(samples, alive, minutes, churned, answered):
    out = [table.row(PART, "churned sessions answered in full", answered, "sessions",
                     ">=", max(1, churned - 2),
                     note=f"{churned} started, one every {CHURN_S:g} s (the last ones may be cut "
                          "short by the end)")]
    for name, up in alive.items():
        if not up:
            out.append(table.Row(PART, f"{name} alive after {minutes} min", 0, "", "alive", False,
                                 "the process exited during the soak"))
    for (proc, metric), points in sorted(samples.items()):
        steady = [(t, v) for t, v in points if t >= WARMUP_S and v is not None]
        growing, growth = keeps_growing(steady, TOLERANCE[metric])
        first = steady[0][1] if steady else None
        last = steady[-1][1] if steady else None
        out.append(table.Row(
            PART, f"{proc} {metric.replace('_', ' ')}, slope", slope_per_hour(steady),
            f"{UNITS[metric]}/h", f"last third <= middle third + {TOLERANCE[metric]:g}",
            not growing if steady else None,
            f"{len(steady)} samples after {WARMUP_S:g} s warm-up: {first} -> {last}; last third "
            f"{growth:+.2f} over the middle third; {churned} sessions churned in {minutes} min"))
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
