"""scale: one stamp-sender measuring 1,000 reflector addresses at 10 packets/s each.

    [sender ns: stamp-sender, capture] --veth-- [reflector ns: 1,000 extra /32s,
                                                 stamp-reflector]

The sender runs COUNT packets per session (-i 0.1, first packets spread over
one interval, as the sender does). Over a steady window its CPU share comes
from /proc (user + system; in-line softirq work of its own sends counts
there too), its resident memory from VmRSS/VmHWM. False loss: packets the
sender counted lost although the sender's capture shows the reply back
within the timeout.
"""

import os
import shutil
import struct
import tempfile
import time

from stamp_bpf.common import records
from stamp_bpf.lab import capture
from stamp_bpf.lab.netns import Topology

import labrun
import table

PART = "scale"
SESSIONS = 1000
INTERVAL_S = 0.1
COUNT = 150
TIMEOUT_S = 1.0
WINDOW = (3.0, 13.0)          # seconds after "sending": the steady part
CPU_TARGET, RSS_TARGET = 25, 150


def returned_in_time(frames, sender_addr, timeout_ns, port=862):
    """{(reflector, seq)} whose reply reached the sender's capture within timeout of the request."""
    sent, back = {}, {}
    for p in capture.stamp_packets(frames, port):
        if p.src == sender_addr and p.dport == port and p.seq is not None:
            sent.setdefault((p.dst, p.seq), p.ts_ns)
        elif p.dst == sender_addr and p.sport == port and len(p.payload) >= 28:
            back.setdefault((p.src, struct.unpack_from("!I", p.payload, 24)[0]), p.ts_ns)
    return {k for k, t in sent.items() if k in back and back[k] - t <= timeout_ns}


def run(log=print):
    tmp = tempfile.mkdtemp(prefix="stamp-bench-scale-")
    try:
        return _run(log, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(log, tmp):
    os.makedirs(f"{tmp}/topo")
    with Topology("direct", extra_addrs=SESSIONS, workdir=f"{tmp}/topo") as topo:
        col = labrun.Collector(f"ipc://{tmp}/records.sock")
        try:
            refl = labrun.Service(topo, topo.reflector, "stamp-reflector",
                                  [topo.reflector.ifname, "--zmq", f"ipc://{tmp}/none.sock"],
                                  f"{tmp}/reflector.log")
            refl.wait_event("reflecting")
            # The sender's capture is all the truth false loss needs (request
            # out, reply back, same interface); one capture process, not two,
            # competing with the sender for the CPUs.
            with capture.start(topo, topo.sender, f"{tmp}/sender.pcap"):
                snd = labrun.Service(topo, topo.sender, "stamp-sender",
                                     [topo.sender.ifname, *topo.reflector.extra_addrs,
                                      "-i", INTERVAL_S, "-c", COUNT, "-w", TIMEOUT_S,
                                      "--zmq", col.endpoint], f"{tmp}/sender.log")
                snd.wait_event("sending")
                t0 = time.monotonic()
                log(f"scale: {SESSIONS} sessions at {1 / INTERVAL_S:.0f} pps each, {COUNT} packets each")
                time.sleep(max(0.0, t0 + WINDOW[0] - time.monotonic()))
                c0, w0 = labrun.cpu_seconds(snd.proc.pid), time.monotonic()
                q0 = labrun.runqueue_wait_s(snd.proc.pid)
                time.sleep(WINDOW[1] - WINDOW[0])
                span = time.monotonic() - w0
                cpu = 100 * (labrun.cpu_seconds(snd.proc.pid) - c0) / span
                waited = 100 * (labrun.runqueue_wait_s(snd.proc.pid) - q0) / span
                rss = labrun.rss_mb(snd.proc.pid)
                hwm = _hwm_mb(snd.proc.pid)
                load = os.getloadavg()[0]
                detail = labrun.rss_detail(snd.proc.pid)
                rc = snd.proc.wait(COUNT * INTERVAL_S + 60)
                if rc != 0:
                    raise RuntimeError(f"stamp-sender exited with {rc}: {snd.tail()}")
                summary = snd.events("summary")[-1]
            refl.stop()
        finally:
            col.close()
        frames = capture.read_pcap(f"{tmp}/sender.pcap")
        in_time = returned_in_time(frames, topo.sender.addr, int(TIMEOUT_S * 1e9))
    sessions = summary["sessions"]
    sent = sum(s["sent"] for s in sessions)
    lost = sum(s["lost"] for s in sessions)
    late = sum(s["late"] for s in sessions)
    lost_recs = [(r.reflector, r.seq) for r in col.of(records.SenderPacket)
                 if r.outcome == records.OUTCOME_LOST]
    false_loss = sum(1 for k in lost_recs if k in in_time)
    false_late = sum(1 for r in col.of(records.SenderPacket)
                     if r.outcome == records.OUTCOME_LATE and (r.reflector, r.seq) in in_time)
    return [
        table.row(PART, f"sender CPU, {SESSIONS} sessions x 10 pps", cpu, "% core", "<", CPU_TARGET,
                  note=f"steady {WINDOW[1] - WINDOW[0]:.0f} s window of a {COUNT / 10:.0f} s run; "
                       f"load average {load:.1f}; it waited for a CPU {waited:.0f}% of the window"),
        table.row(PART, "sender resident memory", rss, "MB", "<", RSS_TARGET, note=f"peak {hwm:.1f} MB; anon {detail['RssAnon']:.0f} MB, file {detail['RssFile']:.0f} MB"),
        table.row(PART, "false loss (lost, but back in time on the wire)", false_loss, "packets", "<=", 0,
                  note=f"{sent:,} sent, {lost:,} lost, {late} late ({false_late} of them back in time "
                       f"on the wire), {len(in_time):,} back within {TIMEOUT_S:.0f} s in the capture; "
                       f"ring buffer records lost in the kernel: {summary['counters']['ringbuf_lost']:,}"),
    ]


def _hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


if __name__ == "__main__":
    for r in run():
        print(r)
