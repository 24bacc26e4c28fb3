"""capacity: the highest rate a reflector reflects with under 0.1% loss, and its CPU at 10,000 pps.

    [sender ns: loadgen x CPUs, replies dropped at TC ingress] --veth-- [reflector ns]

loadgen.py (sendmmsg through ctypes, batches of 32, one process per CPU,
each with its own source port) sends 44-octet test packets to the reflector.
Sent is what sendmmsg accepted; reflected is what arrived back at the
sender's interface (its rx_packets: the veth peer counts only what it
delivered). Replies are dropped by a drop-all filter on the sender's TC
ingress, so no socket work is spent on them.

First flat out for a few seconds; if that loses 0.1% or more, a bisection
between 0 and that rate. Everything runs on this one machine: generator,
reflector datapath (softirq, in the generator's syscalls) and the
reflector's process share its CPUs, so the flat-out figure is a lower bound
of the reflector's capacity when the generator is the bottleneck.

CPU at 10,000 pps, per process from /proc (robust to other load on the host):
reflector process + (generators' CPU with the reflector - generators' CPU
when a program ahead of the reflector's on its TC ingress drops the test
packets). softirq runs inside the generators' send calls here (no IRQ time
accounting in this kernel), so its cost shows in their system time.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import time

from stamp_bpf.lab.netns import Topology

import labrun
import table

PART = "capacity"
STEP_S = 2.0
FLAT_OUT_S = 3.0
LOSS_MAX = 0.001
CPU_RATE = 10_000
CPU_S = 5.0
BISECT_STEPS = 7
LOADGEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen.py")
PORTS = {"bpf": 862, "user": 8620}


def _rx_packets(topo, host):
    out = topo.run(host, ["ip", "-j", "-s", "link", "show", "dev", host.ifname],
                   capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


def _udp_rcvbuf_errors(topo, host):
    """UDP datagrams the host's namespace dropped for a full socket receive buffer."""
    lines = [ln.split() for ln in topo.run(host, ["cat", "/proc/net/snmp"], capture_output=True,
                                          text=True, check=True).stdout.splitlines()
             if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


# Drops every frame on an interface's ingress from the head of its tcx list,
# where it runs before the reflector's tcx program (and every clsact filter),
# for as long as this process holds the link. Exits 3 on a kernel without tcx.
DROP_TCX = """
import errno, signal, socket, sys
from bcc import BPF
from stamp_bpf.common import bpfsys
b = BPF(text="int drop_all(struct __sk_buff *skb) { return 2; /* TC_ACT_SHOT */ }")
fn = b.load_func(b"drop_all", BPF.SCHED_CLS)
try:
    link = bpfsys.link_create(fn.fd, socket.if_nametoindex(sys.argv[1]), bpfsys.TCX_INGRESS,
                              bpfsys.F_BEFORE)
except OSError as e:
    sys.exit(3 if e.errno == errno.EINVAL else 1)
print("dropping", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
"""
_droppers = {}


def _drop_ingress(topo, host, on):
    """Drop everything on host's TC ingress, before any other program.

    With tcx (Linux 6.6+): a tcx program at the head of the list, run
    before ours and before every clsact filter. Without: a one-instruction
    classic BPF filter at clsact prio 1 in direct-action mode returning
    TC_ACT_SHOT (this kernel has cls_bpf but neither matchall nor gact).
    """
    if on:
        proc = topo.popen(host, [sys.executable, "-c", DROP_TCX, host.ifname],
                          stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() == "dropping":
            _droppers[host.ns] = proc
            return
        if proc.wait(30) != 3:
            raise RuntimeError(f"the tcx drop program did not attach to {host.ifname}")
        topo.run(host, ["tc", "qdisc", "add", "dev", host.ifname, "clsact"], capture_output=True)
        topo.run(host, ["tc", "filter", "add", "dev", host.ifname, "ingress", "prio", "1",
                        "bpf", "bytecode", "1,6 0 0 2", "da"], check=True, capture_output=True)
    elif host.ns in _droppers:
        topo.stop(_droppers.pop(host.ns))
    else:
        topo.run(host, ["tc", "filter", "del", "dev", host.ifname, "ingress", "prio", "1"],
                 check=True, capture_output=True)


def blast(topo, port, rate, seconds, gens=None):
    """Send at `rate` pps in total (0: flat out) from one loadgen per CPU.

    Returns {"sent", "rate", "loss", "gen_cpu_s", "seconds"}.
    """
    gens = gens or os.cpu_count()
    rx0 = _rx_packets(topo, topo.sender)
    procs = [topo.popen(topo.sender, [sys.executable, LOADGEN, topo.reflector.addr, "-p", port,
                                      "-s", 40000 + i, "-r", rate / gens if rate else 0,
                                      "-t", seconds, "-c", i % os.cpu_count()],
                        stdout=subprocess.PIPE, text=True) for i in range(gens)]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 30)
        topo.stop(p)
        if p.returncode != 0 or not out.strip():
            raise RuntimeError(f"loadgen failed with status {p.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    time.sleep(0.3)                       # replies in flight
    rx = _rx_packets(topo, topo.sender) - rx0
    sent = sum(r["sent"] for r in results)
    secs = max(r["seconds"] for r in results)
    return {"sent": sent, "rate": sent / secs, "reflected": rx, "seconds": secs,
            "loss": 1 - rx / sent if sent else 1.0, "gen_cpu_s": sum(r["cpu_s"] for r in results)}


def highest_rate(topo, port, log):
    """(highest pps with loss < LOSS_MAX, whether the flat-out rate already met it, flat-out result)."""
    flat = blast(topo, port, 0, FLAT_OUT_S)
    log(f"capacity: flat out {flat['rate']:,.0f} pps sent, loss {100 * flat['loss']:.3f}%")
    if flat["loss"] < LOSS_MAX:
        return flat["rate"], True, flat
    lo, hi, best = 0.0, flat["rate"], 0.0
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) / 2
        r = blast(topo, port, mid, STEP_S)
        log(f"capacity: {mid:,.0f} pps asked, {r['rate']:,.0f} sent, loss {100 * r['loss']:.3f}%")
        if r["loss"] < LOSS_MAX:
            lo, best = mid, r["rate"]
        else:
            hi = mid
    return best, False, flat


def ksoftirqd_seconds():
    """CPU seconds of the ksoftirqd threads (softirq work deferred out of the senders' calls)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        total += labrun.cpu_seconds(int(pid))
            except OSError:
                pass
    return total


def cpu_at(topo, port, reflector_pid, log):
    """% of one core the reflector host spends at CPU_RATE pps."""
    c0, k0 = labrun.cpu_seconds(reflector_pid), ksoftirqd_seconds()
    with_refl = blast(topo, port, CPU_RATE, CPU_S)
    proc_cpu = labrun.cpu_seconds(reflector_pid) - c0
    k1 = ksoftirqd_seconds()
    _drop_ingress(topo, topo.reflector, True)
    try:
        base = blast(topo, port, CPU_RATE, CPU_S)
    finally:
        _drop_ingress(topo, topo.reflector, False)
    k2 = ksoftirqd_seconds()
    kernel = (with_refl["gen_cpu_s"] + k1 - k0) - (base["gen_cpu_s"] + k2 - k1)
    total = 100 * (proc_cpu + kernel) / with_refl["seconds"]
    log(f"capacity: at {with_refl['rate']:,.0f} pps: reflector process {proc_cpu:.2f} s, "
        f"kernel path {kernel:.2f} s of CPU in {with_refl['seconds']:.1f} s")
    return total, 100 * proc_cpu / with_refl["seconds"], 100 * kernel / with_refl["seconds"], with_refl


def run(log=print):
    user = labrun.user_timestamping_available()
    tmp = tempfile.mkdtemp(prefix="stamp-bench-cap-")
    out = {}
    failed = {}
    try:
        for mode in (["bpf", "user"] if user else ["bpf"]):
            try:
                out[mode] = _one(mode, tmp, log)
            except RuntimeError as e:
                if mode == "bpf":
                    raise
                failed[mode] = str(e).splitlines()[-1][-200:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows(out, failed)


def _one(mode, tmp, log):
    port = PORTS[mode]
    os.makedirs(f"{tmp}/{mode}")
    with Topology("direct", workdir=f"{tmp}/{mode}/topo") as topo:
        extra = ["--timestamping", "user"] if mode == "user" else []
        refl = labrun.Service(topo, topo.reflector, "stamp-reflector",
                              [topo.reflector.ifname, "-p", port, "--zmq", f"ipc://{tmp}/{mode}/none.sock",
                               *extra], f"{tmp}/{mode}/reflector.log")
        refl.wait_event("reflecting")
        _drop_ingress(topo, topo.sender, True)
        log(f"capacity: {mode} reflector")
        # CPU first: after the flat-out search the service is still working
        # through the records it has queued, which is not the cost of 10,000 pps.
        total, proc, kernel, at = cpu_at(topo, port, refl.proc.pid, log)
        rcvbuf0 = _udp_rcvbuf_errors(topo, topo.reflector)
        best, generator_bound, flat = highest_rate(topo, port, log)
        rcvbuf = _udp_rcvbuf_errors(topo, topo.reflector) - rcvbuf0
        paused = None
        if mode == "bpf":
            # The datapath alone: the service stopped (SIGSTOP), nothing reads
            # the records, the kernel keeps reflecting.
            os.kill(refl.proc.pid, signal.SIGSTOP)
            try:
                paused = blast(topo, port, 0, FLAT_OUT_S)
            finally:
                os.kill(refl.proc.pid, signal.SIGCONT)
            log(f"capacity: flat out with the service paused {paused['rate']:,.0f} pps, "
                f"loss {100 * paused['loss']:.3f}%")
        refl.stop()
    return {"best": best, "generator_bound": generator_bound, "flat": flat, "cpu": total,
            "cpu_proc": proc, "cpu_kernel": kernel, "at": at, "paused": paused, "rcvbuf": rcvbuf,
            "load": os.getloadavg()[0]}


def rows(out, failed):
    b = out["bpf"]
    rows_ = [table.row(PART, "eBPF reflector, highest rate with < 0.1% loss", b["best"], "pps",
                       note=("the generator's limit on this machine: flat out, "
                             f"{b['flat']['rate']:,.0f} pps lost {100 * b['flat']['loss']:.3f}%"
                             if b["generator_bound"] else
                             f"flat out {b['flat']['rate']:,.0f} pps lost {100 * b['flat']['loss']:.2f}%")),
             table.row(PART, "eBPF reflector, flat out, service paused", b["paused"]["rate"], "pps",
                       note=f"loss {100 * b['paused']['loss']:.3f}%: the kernel alone, nothing reading the "
                            f"records (SIGSTOP); load average {b['load']:.1f} during the run"),
             table.row(PART, "eBPF reflector host CPU at 10,000 pps", b["cpu"], "% core",
                       note=f"process {b['cpu_proc']:.1f}% (records: ring buffer, decode, ZeroMQ) "
                            f"+ kernel path {b['cpu_kernel']:.1f}%")]
    if "user" in out:
        u = out["user"]
        rows_ += [table.row(PART, "user-space reflector, highest rate with < 0.1% loss", u["best"], "pps",
                            note=f"flat out {u['flat']['rate']:,.0f} pps lost {100 * u['flat']['loss']:.2f}%; "
                                 f"{u['rcvbuf']:,} test packets dropped on its full socket receive "
                                 "buffer during the search (UDP RcvbufErrors)"),
                  table.row(PART, "user-space reflector host CPU at 10,000 pps", u["cpu"], "% core",
                            note=f"process {u['cpu_proc']:.1f}% + kernel path {u['cpu_kernel']:.1f}%"),
                  table.row(PART, "eBPF / user-space capacity", b["best"] / u["best"] if u["best"] else None,
                            "x", ">=", 10,
                            note="a lower bound: the eBPF figure is the generator's limit"
                            if b["generator_bound"] else "")]
    else:
        reason = failed.get("user", "--timestamping user not available")
        rows_ += [table.not_measured(PART, "user-space reflector, highest rate with < 0.1% loss", "pps", reason),
                  table.not_measured(PART, "eBPF / user-space capacity", "x", reason, ">=", 10)]
    return rows_


if __name__ == "__main__":
    for r in run():
        print(r)
