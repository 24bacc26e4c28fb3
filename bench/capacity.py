"""capacity: how many test packets/s each reflector reflects on one CPU, and its CPU per packet.

    CPU 0                                       CPU 1
    [sender ns: trafgen] --veth--> RPS --> [reflector ns: softirq + stamp-reflector]
    replies: RPS back to CPU 0, dropped at the sender's TC ingress, counted

The generator is netsniff-ng's trafgen (bench/trafgen.py), pinned to CPU 0,
sending the wire module's 44-octet test packet in 4 flows. The reflector gets
CPU 1 to itself as far as this bench goes: its interface's receive work is
steered there with RPS (rps_cpus), and every thread of the stamp-reflector
process is pinned there, so the kernel's reflection (softirq) and the
service's user space share one core, as on a reflector host with one core to
spare. Replies are steered back to CPU 0 and dropped at the sender's TC
ingress (so counting them costs the reflector nothing); reflected is the
sender interface's rx_packets, offered its tx_packets + tx_dropped. No Python
touches a packet on the measuring side.

Capacity: offered rates rising (trafgen's --gap from 100 us down to 0, flat
out), 2 s each after 0.5 s of warm-up, until fewer than KEEP (99%) of the
offered packets come back; the capacity is the highest offered rate that
still did. trafgen's socket is blocking and each frame is charged to it
until CPU 1 has freed it, so a reflector that cannot keep up may also hold
the generator back instead of losing packets: when flat out keeps 99% with
trafgen running or waiting for its CPU (schedstat) under HELD_BACK of the
time and CPU 1 busy, the rate is the reflector's limit; otherwise the
generator's (a lower bound).
"generator alone" is trafgen flat out with nothing to reflect. The eBPF
reflector is also run flat out with its service stopped (SIGSTOP): the
kernel alone.

CPU per reflected packet at CPU_RATE (10,000 pps, below the user-space
reflector's capacity, so both reflect everything), ROUNDS windows of CPU_S,
medians, all on CPU 1 and exact (bench/softirq.py): the reflector process's
run time (/proc/PID/task/*/schedstat) plus the NET_RX softirq time that ran
outside it (raw tracepoints softirq_entry/exit), per reflected packet, less
the softirq time per packet with a drop-all program at the head of the
reflector interface's TC ingress (receiving a packet at all, the same for
any reflector). It includes sending each reply on to CPU 0 (one
inter-processor interrupt per softirq run, a VM exit in a guest), as for
both reflectors; it leaves out the cost of waking an idle vCPU.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from stamp_bpf.lab.netns import Topology

import labrun
import softirq
import table
import trafgen

PART = "capacity"
GEN_CPU, REFL_CPU = 0, 1
GAPS_US = (100, 50, 40, 30, 25, 20, 15, 12, 10, 8, 6, 4, 2, 1, 0)   # trafgen --gap, rising rate
WARMUP_S = 0.5
STEP_S = 2.0
KEEP = 0.99
HELD_BACK = 0.9            # flat out, trafgen running + waiting for its CPU below this share of the time: held back
CPU_RATE = 10_000
CPU_S = 3.0
ROUNDS = 3
PORTS = {"bpf": 862, "user": 8620}
USER_HZ = os.sysconf("SC_CLK_TCK")


def require():
    """Fail before the bench starts when the generator is missing (one line)."""
    trafgen.require()
    if os.cpu_count() < 2:
        raise RuntimeError("the capacity part needs 2 CPUs: one for the generator, one for the reflector")


def _link(topo, host):
    out = topo.run(host, ["ip", "-j", "-s", "link", "show", "dev", host.ifname],
                   capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]


def _idle_s(cpu):
    """CPU `cpu`'s idle + iowait seconds (/proc/stat; measured, not sampled, under NO_HZ idle)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = line.split()
                return (int(v[4]) + int(v[5])) / USER_HZ
    raise RuntimeError(f"no cpu{cpu} line in /proc/stat")


def _udp_rcvbuf_errors(topo, host):
    """UDP datagrams the host's namespace dropped for a full socket receive buffer."""
    lines = [ln.split() for ln in topo.run(host, ["cat", "/proc/net/snmp"], capture_output=True,
                                          text=True, check=True).stdout.splitlines()
             if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def _steer(topo, host, cpu):
    """RPS: this host's receive work (veth backlog, TC ingress, IP, UDP) runs on `cpu`."""
    topo.run(host, ["sh", "-c", f"echo {1 << cpu:x} > /sys/class/net/{host.ifname}/queues/rx-0/rps_cpus"],
             check=True)


def _pin(pid, cpu):
    """Every thread of process `pid` onto `cpu` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})


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


class Lab:
    """One reflector (mode "bpf" or "user") on CPU 1, trafgen's frames for it, the counters."""

    def __init__(self, topo, mode, tmp):
        self.topo, self.mode = topo, mode
        self.port = PORTS[mode]
        self.cfg = os.path.join(tmp, "trafgen.cfg")
        with open(self.cfg, "w") as f:
            f.write(trafgen.config(topo.sender.mac, topo.reflector.mac, self.port))
        _steer(topo, topo.reflector, REFL_CPU)
        _steer(topo, topo.sender, GEN_CPU)
        extra = ["--timestamping", "user"] if mode == "user" else []
        # --max-rate 0: the per-sender rate limit (12,000/s by default) would
        # be the figure otherwise; every packet here comes from one address.
        self.refl = labrun.Service(topo, topo.reflector, "stamp-reflector",
                                   [topo.reflector.ifname, "-p", self.port, "--max-rate", 0,
                                    "--zmq", f"ipc://{tmp}/none.sock", *extra],
                                   os.path.join(tmp, "reflector.log"))
        self.refl.wait_event("reflecting")
        _pin(self.refl.proc.pid, REFL_CPU)
        _drop_ingress(topo, topo.sender, True)

    def step(self, gap_ns, seconds):
        """trafgen at `gap_ns` for `seconds` (after WARMUP_S): rates, CPU 1 busy, CPU of each side."""
        topo, pid = self.topo, self.refl.proc.pid
        with trafgen.Trafgen(topo, topo.sender, self.cfg, gap_ns=gap_ns, cpu=GEN_CPU) as gen:
            time.sleep(WARMUP_S)
            s0, i0, g0, w0, p0 = _link(topo, topo.sender), _idle_s(REFL_CPU), gen.cpu_seconds(), \
                gen.wait_seconds(), labrun.cpu_seconds(pid)
            t0 = time.monotonic()
            time.sleep(seconds)
            s1, i1, g1, w1, p1 = _link(topo, topo.sender), _idle_s(REFL_CPU), gen.cpu_seconds(), \
                gen.wait_seconds(), labrun.cpu_seconds(pid)
            dt = time.monotonic() - t0
            if not gen.running():
                raise RuntimeError("trafgen stopped before the end of its step")
        offered = (s1["tx"]["packets"] - s0["tx"]["packets"]) + (s1["tx"]["dropped"] - s0["tx"]["dropped"])
        back = s1["rx"]["packets"] - s0["rx"]["packets"]
        busy = max(0.0, dt - (i1 - i0))
        return {"gap_us": gap_ns / 1000, "offered": offered / dt, "reflected": back / dt,
                "kept": back / offered if offered else 0.0, "seconds": dt, "packets": back,
                "offered_packets": offered, "busy": busy / dt, "busy_s": busy,
                "gen_cpu": (g1 - g0) / dt, "gen_wait": (w1 - w0) / dt, "proc_s": p1 - p0}

    def search(self, log):
        """Rising rates until fewer than KEEP come back: (capacity pps, reached flat out, steps)."""
        best, steps = 0.0, []
        for gap in GAPS_US:
            r = self.step(gap * 1000, STEP_S)
            steps.append(r)
            log(f"capacity: {self.mode} --gap {gap} us: offered {r['offered']:,.0f} pps, back "
                f"{100 * r['kept']:.2f}%, CPU {REFL_CPU} busy {100 * r['busy']:.0f}%, "
                f"trafgen {100 * r['gen_cpu']:.0f}% of CPU {GEN_CPU} (+{100 * r['gen_wait']:.0f}% waiting)")
            if r["kept"] < KEEP:
                return best, False, steps
            best = max(best, r["offered"])
        return best, True, steps

    def gap_for(self, rate):
        """The --gap (ns) that gives about `rate` pps here: the gap asked less nanosleep's overshoot."""
        period = 1e9 / rate
        probe = self.step(period * 0.8, 1.0)
        overshoot = 1e9 / probe["offered"] - period * 0.8
        return max(0.0, period - overshoot)

    def cpu_ns(self, gap_ns, rx):
        """One CPU_S window at `gap_ns`: ns per reflected packet on CPU 1, exact (bench/softirq.py)."""
        pid = self.refl.proc.pid
        (a0, m0), p0 = rx.read(), softirq.task_runtime_ns(pid)
        r = self.step(gap_ns, CPU_S)
        (a1, m1), p1 = rx.read(), softirq.task_runtime_ns(pid)
        if r["kept"] < KEEP:
            raise RuntimeError(f"the {self.mode} reflector kept only {100 * r['kept']:.1f}% at "
                               f"{r['offered']:,.0f} pps, the CPU rate; lower CPU_RATE")
        n = r["packets"] or 1
        r["softirq_ns"] = (a1 - a0) / n                       # receive softirq, all of it
        r["proc_ns"] = ((p1 - p0) - (m1 - m0)) / n            # the process, less softirq it carried
        return r

    def receive_ns(self, gap_ns, rx):
        """Receive softirq ns per offered packet on CPU 1 while its TC ingress drops everything first."""
        a0, _ = rx.read()
        r = self.step(gap_ns, CPU_S)
        a1, _ = rx.read()
        return (a1 - a0) / (r["offered_packets"] or 1)


def _median(xs):
    return statistics.median(xs) if xs else None


def _list(xs):
    return "/".join(f"{x:,.0f}" for x in xs)


def _cpu(lab, out, log):
    """CPU per packet at CPU_RATE, ROUNDS windows each, medians into `out`."""
    gap = lab.gap_for(CPU_RATE)
    with softirq.NetRxTime(REFL_CPU) as rx:
        rx.watch(lab.refl.proc.pid)
        refl = [lab.cpu_ns(gap, rx) for _ in range(ROUNDS)]
        _drop_ingress(lab.topo, lab.topo.reflector, True)
        try:
            base = _median([lab.receive_ns(gap, rx) for _ in range(ROUNDS)])
        finally:
            _drop_ingress(lab.topo, lab.topo.reflector, False)
    out["base_ns"] = base
    out["kernel_runs"] = [r["softirq_ns"] - base for r in refl]
    out["proc_runs"] = [r["proc_ns"] for r in refl]
    out["cpu_runs"] = [k + p for k, p in zip(out["kernel_runs"], out["proc_runs"])]
    for k in ("kernel", "proc", "cpu"):
        out[f"{k}_ns"] = _median(out[f"{k}_runs"])
    out["at"] = _median([r["offered"] for r in refl])
    log(f"capacity: {lab.mode} at {out['at']:,.0f} pps, ns per reflected packet on CPU {REFL_CPU} "
        f"(net of receiving, {base:,.0f} ns): total {_list(out['cpu_runs'])}, kernel "
        f"{_list(out['kernel_runs'])}, process {_list(out['proc_runs'])}")


def _one(mode, tmp, log):
    os.makedirs(f"{tmp}/{mode}")
    out = {"load": os.getloadavg()[0]}
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {GEN_CPU})       # this process, and what it starts, off the reflector's CPU
    try:
        return _measure(mode, tmp, log, out)
    finally:
        os.sched_setaffinity(0, mask)


def _measure(mode, tmp, log, out):
    with Topology("direct", workdir=f"{tmp}/{mode}/topo") as topo:
        lab = Lab(topo, mode, f"{tmp}/{mode}")
        log(f"capacity: {mode} reflector on CPU {REFL_CPU}, trafgen on CPU {GEN_CPU}")
        # CPU first, while the service has no backlog of records from a flat-out step.
        _cpu(lab, out, log)
        if mode == "bpf":
            os.kill(lab.refl.proc.pid, signal.SIGSTOP)
            try:
                paused = lab.step(0, STEP_S)
                # The generator alone: no reply to count, every frame dropped
                # at the head of the reflector's TC ingress.
                _drop_ingress(topo, topo.reflector, True)
                try:
                    out["generator"] = lab.step(0, STEP_S)
                finally:
                    _drop_ingress(topo, topo.reflector, False)
            finally:
                os.kill(lab.refl.proc.pid, signal.SIGCONT)
            out["paused"] = paused
            log(f"capacity: bpf flat out, service "
                f"stopped: {paused['offered']:,.0f} pps offered, {100 * paused['kept']:.2f}% back, "
                f"CPU {REFL_CPU} busy {100 * paused['busy']:.0f}%; generator alone "
                f"{out['generator']['offered']:,.0f} pps")
        rcvbuf0 = _udp_rcvbuf_errors(topo, topo.reflector)
        out["best"], out["flat_out_kept"], out["steps"] = lab.search(log)
        out["rcvbuf"] = _udp_rcvbuf_errors(topo, topo.reflector) - rcvbuf0
        lab.refl.stop()
    return out


def run(log=print):
    require()
    user = labrun.user_timestamping_available()
    tmp = tempfile.mkdtemp(prefix="stamp-bench-cap-")
    out, failed = {}, {}
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


def _last(o):
    """The note on the last step of a search: where it stopped and why."""
    s = o["steps"][-1]
    return (f"last step (--gap {s['gap_us']:g} us) {s['offered']:,.0f} pps offered, "
            f"{100 * s['kept']:.2f}% back ({s['reflected']:,.0f}/s), CPU {REFL_CPU} busy "
            f"{100 * s['busy']:.0f}%, trafgen {100 * s['gen_cpu']:.0f}% of CPU {GEN_CPU} "
            f"(+{100 * s['gen_wait']:.0f}% waiting for it)")


def _held_back(o):
    """Flat out kept 99%, but trafgen waited: a blocking sendto() whose frames sit in CPU 1's
    backlog (each is charged to its socket until CPU 1 frees it) means CPU 1 set the rate."""
    s = o["steps"][-1]
    return o["flat_out_kept"] and s["gen_cpu"] + s["gen_wait"] < HELD_BACK and s["busy"] >= 0.97


def _verdict(o, g):
    if not o["flat_out_kept"]:
        return ""
    s = o["steps"][-1]
    if _held_back(o):
        return (f"the reflector's limit: flat out trafgen ran {100 * s['gen_cpu']:.0f}% and waited for "
                f"CPU {GEN_CPU} {100 * s['gen_wait']:.0f}% of the time (alone it sends {g['offered']:,.0f} "
                f"pps); the rest it slept, held back while its frames waited for CPU {REFL_CPU}, busy "
                f"{100 * s['busy']:.0f}%; ")
    return "the generator's limit, a lower bound: flat out kept 99%; "


def rows(out, failed):
    b = out["bpf"]
    g, p = b["generator"], b["paused"]
    rows_ = [table.row(PART, "generator alone (trafgen, one CPU), flat out", g["offered"], "pps",
                       note=f"--gap 0, every frame dropped at the head of the reflector's TC ingress; "
                            f"trafgen {100 * g['gen_cpu']:.0f}% of CPU {GEN_CPU}"),
             table.row(PART, "eBPF reflector, one CPU: highest rate with >= 99% back", b["best"], "pps",
                       note=_verdict(b, g) + _last(b)),
             table.row(PART, "eBPF reflector, flat out, service stopped", p["reflected"], "pps",
                       note=f"{p['offered']:,.0f} offered, {100 * p['kept']:.2f}% back, CPU {REFL_CPU} busy "
                            f"{100 * p['busy']:.0f}%: the kernel alone (SIGSTOP), nothing reading the "
                            f"records; load average {b['load']:.1f} at the start"),
             table.row(PART, f"eBPF reflector CPU per packet at {CPU_RATE:,} pps", b["cpu_ns"], "ns/pkt",
                       note=f"in-kernel reflection {b['kernel_ns']:,.0f} ns + the service's ring buffer "
                            f"records {b['proc_ns']:,.0f} ns (median of {_list(b['cpu_runs'])}); net of "
                            f"receiving a packet up to TC ({b['base_ns']:,.0f} ns)")]
    if "user" in out:
        u = out["user"]
        rows_ += [table.row(PART, "user-space reflector, one CPU: highest rate with >= 99% back", u["best"],
                            "pps", note=_last(u) + f"; {u['rcvbuf']:,} test packets dropped on its full "
                                                   "socket receive buffer (UDP RcvbufErrors)"),
                  table.row(PART, f"user-space reflector CPU per packet at {CPU_RATE:,} pps", u["cpu_ns"],
                            "ns/pkt", note=f"its socket's kernel path {u['kernel_ns']:,.0f} ns + the process "
                                           f"{u['proc_ns']:,.0f} ns (median of {_list(u['cpu_runs'])}); net of "
                                           f"receiving up to TC ({u['base_ns']:,.0f} ns)"),
                  table.row(PART, "eBPF / user-space capacity", b["best"] / u["best"] if u["best"] else None,
                            "x", ">=", 10,
                            note="a lower bound: the eBPF figure is the generator's limit"
                            if b["flat_out_kept"] and not _held_back(b) else ""),
                  table.row(PART, "user-space / eBPF CPU per packet", u["cpu_ns"] / b["cpu_ns"], "x",
                            note=f"in-kernel reflection alone against the whole user-space reflector: "
                                 f"{u['cpu_ns'] / b['kernel_ns']:.0f}x")]
    else:
        reason = failed.get("user", "--timestamping user not available")
        rows_ += [table.not_measured(PART, "user-space reflector, one CPU: highest rate with >= 99% back",
                                     "pps", reason),
                  table.not_measured(PART, "eBPF / user-space capacity", "x", reason, ">=", 10)]
    return rows_


if __name__ == "__main__":
    for r in run():
        print(r)
