"""startup: time to the first measured packet, and memory after minutes at 100 sessions.

    [sender ns: loadgen probe, then stamp-sender x 100 sessions] --veth-- [reflector ns]

Reflector: started while loadgen.py sends it 1,000 test packets/s; its
start-up ends when its first record (one reflected packet) reaches the
ZeroMQ endpoint. Sender: started against the running reflector with 100
sessions at 10 packets/s each; its start-up ends at its first per-packet
record. Both include bcc's compile (one per process; the log's "starting"
to first "attached" shows how much). Then both run for FOOTPRINT_S seconds
and their VmRSS is sampled: the last sample, and its growth over the second
half, say whether memory is still growing.
"""

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time

from stamp_bpf.lab.netns import Topology

import labrun
import table

PART = "startup"
SESSIONS = 100
FOOTPRINT_S = 120
SAMPLE_S = 10
LOADGEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen.py")


def _wait_first(col, kind, proc_svc, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kind in col.first:
            return col.first[kind]
        if proc_svc.proc.poll() is not None:
            raise RuntimeError(f"{proc_svc.name} exited with {proc_svc.proc.returncode}: {proc_svc.tail()}")
        time.sleep(0.01)
    raise RuntimeError(f"no {kind} record within {timeout} s of starting {proc_svc.name}")


def _compile_s(svc):
    """Seconds from the "starting" log line to the first "attached" (compile, load, attach)."""
    ts = [datetime.datetime.fromisoformat(svc.events(e)[0]["timestamp"].replace("Z", "+00:00"))
          for e in ("starting", "attached")]
    return (ts[1] - ts[0]).total_seconds()


def run(log=print, footprint_s=FOOTPRINT_S):
    tmp = tempfile.mkdtemp(prefix="stamp-bench-start-")
    try:
        return _run(log, tmp, footprint_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(log, tmp, footprint_s):
    os.makedirs(f"{tmp}/topo")
    with Topology("direct", extra_addrs=SESSIONS, workdir=f"{tmp}/topo") as topo:
        col = labrun.Collector(f"ipc://{tmp}/records.sock")
        try:
            probe = topo.popen(topo.sender, [sys.executable, LOADGEN, topo.reflector.addr, "-s", "863",
                                             "-r", "1000", "-b", "1", "-t", "300"],
                               stdout=subprocess.DEVNULL)
            t0 = time.monotonic()
            refl = labrun.Service(topo, topo.reflector, "stamp-reflector",
                                  [topo.reflector.ifname, "--zmq", col.endpoint], f"{tmp}/reflector.log")
            refl_start = _wait_first(col, "ReflectorPacket", refl) - t0
            topo.stop(probe)
            log(f"startup: reflector's first reflected packet {refl_start:.1f} s after start")
            t0 = time.monotonic()
            snd = labrun.Service(topo, topo.sender, "stamp-sender",
                                 [topo.sender.ifname, *topo.reflector.extra_addrs, "-i", "0.1",
                                  "--zmq", col.endpoint], f"{tmp}/sender.log")
            snd_start = _wait_first(col, "SenderPacket", snd) - t0
            log(f"startup: sender's first measured packet {snd_start:.1f} s after start; "
                f"{footprint_s} s at {SESSIONS} sessions")
            samples = []
            while time.monotonic() - t0 < footprint_s:
                time.sleep(SAMPLE_S)
                samples.append((time.monotonic() - t0, labrun.rss_mb(snd.proc.pid),
                                labrun.rss_mb(refl.proc.pid)))
            detail = {"sender": labrun.rss_detail(snd.proc.pid), "reflector": labrun.rss_detail(refl.proc.pid)}
            compile_s = {"sender": _compile_s(snd), "reflector": _compile_s(refl)}
            snd.stop()
            refl.stop()
        finally:
            col.close()
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    out = [table.row(PART, "reflector: start to first reflected packet", refl_start, "s",
                     note=f"bcc compile, load and attach {compile_s['reflector']:.1f} s of it"),
           table.row(PART, "sender: start to first measured packet", snd_start, "s",
                     note=f"bcc compile, load and attach {compile_s['sender']:.1f} s of it")]
    for i, name in ((1, "sender"), (2, "reflector")):
        grow = half[-1][i] - half[0][i]
        span = (half[-1][0] - half[0][0]) / 60
        d = detail[name]
        out.append(table.row(PART, f"{name} resident memory after {samples[-1][0]:.0f} s, {SESSIONS} sessions",
                             samples[-1][i], "MB",
                             note=f"{grow:+.1f} MB over the last {span:.1f} min "
                                  f"({'still growing' if grow > 1 else 'flat'}); anon {d['RssAnon']:.0f} MB, "
                                  f"file {d['RssFile']:.0f} MB"))
    return out


if __name__ == "__main__":
    for r in run(footprint_s=int(sys.argv[1]) if len(sys.argv) > 1 else FOOTPRINT_S):
        print(r)
