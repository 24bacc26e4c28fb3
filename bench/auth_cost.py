"""auth: what authenticated mode (RFC 8762 4.4, docs/auth.md) costs, per packet and in accuracy.

    [sender ns] --veth-- [middle ns: link emulator] --veth-- [reflector ns]
     capture              fwd 3 ms, back 7 ms                  capture

Per packet: the HMAC-SHA-256/128 of services/common/auth.py, signing and
verifying, timed here over HMAC_RUNS packets (each packet is signed once and
verified once at each end); and the CPU each user-space reflector process
spends per reflected packet (utime + stime over the window / packets), the
authenticated one beside the unauthenticated --timestamping user one. The
kernel path's cost per packet is the `kernel` part's reflector rows (it
spends no process CPU).

Accuracy: three pairs on one emulated link at 100 packets/s each for
WINDOW_S: the eBPF path (port 862), --timestamping user (8620) and
--auth-key-file (8630). Captures on both ends are the truth; each
direction's absolute error (median, p99) is reported per pair, and the
authenticated pair's p99 beside the eBPF pair's.
"""

import os
import shutil
import tempfile
import time
import timeit

from stamp_bpf.common import auth, records, wire
from stamp_bpf.lab import capture
from stamp_bpf.lab.netns import Topology

import accuracy
import labrun
import table

PART = "auth"
WINDOW_S = 10
INTERVAL_S = 0.01
HMAC_RUNS = 100_000
EMULATOR = ["--fwd-delay", "3ms", "--back-delay", "7ms"]
PAIRS = {"bpf": 862, "user": 8620, "auth": 8630}
EXTRA = {"bpf": [], "user": ["--timestamping", "user"]}


def hmac_cost_us():
    """(sign µs, verify µs) per packet with the services' own Hmac object."""
    h = auth.Hmac(os.urandom(32))
    pkt = bytearray(wire.build_sender_auth_packet(1, (2, 3), 4))
    sign = timeit.timeit(lambda: h.sign(pkt), number=HMAC_RUNS) / HMAC_RUNS * 1e6
    verify = timeit.timeit(lambda: h.verify(pkt), number=HMAC_RUNS) / HMAC_RUNS * 1e6
    assert h.verify(pkt)
    return sign, verify


def run(log=print):
    tmp = tempfile.mkdtemp(prefix="stamp-bench-auth-")
    try:
        return _run(log, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(log, tmp):
    sign_us, verify_us = hmac_cost_us()
    log(f"auth: HMAC sign {sign_us:.2f} µs, verify {verify_us:.2f} µs")
    key = os.path.join(tmp, "key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(key, 0o600)
    EXTRA["auth"] = ["--auth-key-file", key]
    os.makedirs(f"{tmp}/topo")
    cpu, reflected = {}, {}
    with Topology("emulated", emulator_args=EMULATOR, workdir=f"{tmp}/topo") as topo:
        col = labrun.Collector(f"ipc://{tmp}/records.sock")
        try:
            refls = {m: labrun.start(topo, topo.reflector, "stamp-reflector",
                               [topo.reflector.ifname, "-p", p, "--zmq", col.endpoint, *EXTRA[m]],
                               f"{tmp}/reflector-{m}.log", "reflecting")
                     for m, p in PAIRS.items()}
            with capture.start(topo, topo.sender, f"{tmp}/sender.pcap"), \
                    capture.start(topo, topo.reflector, f"{tmp}/reflector.pcap"):
                senders = [labrun.start(topo, topo.sender, "stamp-sender",
                                  [topo.sender.ifname, topo.reflector.addr, "-s", p, "-d", p,
                                   "-i", INTERVAL_S, "--zmq", col.endpoint, *EXTRA[m]],
                                  f"{tmp}/sender-{m}.log", "sending")
                           for m, p in PAIRS.items()]
                time.sleep(1.0)
                log(f"auth: three pairs at {1 / INTERVAL_S:.0f} packets/s, {WINDOW_S} s")
                c0 = {m: labrun.cpu_seconds(r.proc.pid) for m, r in refls.items()}
                t0 = time.time_ns()
                time.sleep(WINDOW_S)
                window = (t0, time.time_ns())
                c1 = {m: labrun.cpu_seconds(r.proc.pid) for m, r in refls.items()}
                time.sleep(0.5)
                for s in senders:
                    s.stop()
            for m, r in refls.items():
                r.stop()
                cpu[m] = c1[m] - c0[m]
                reflected[m] = sum(1 for x in col.of(records.ReflectorPacket)
                                   if x.reflector_port == PAIRS[m] and window[0] <= x.t2_ns < window[1])
        finally:
            col.close()
        sender_frames = capture.read_pcap(f"{tmp}/sender.pcap")
        refl_frames = capture.read_pcap(f"{tmp}/reflector.pcap")
    errs = {}
    for m, port in PAIRS.items():
        truth = capture.stamp_delays(capture.stamp_packets(sender_frames, port),
                                     capture.stamp_packets(refl_frames, port), port=port,
                                     authenticated=m == "auth")
        truth = {k.seq: v for k, v in truth.items() if k.sport == port}
        recs = [r for r in col.of(records.SenderPacket) if r.sender_port == port]
        errs[m] = accuracy.errors_ns(recs, truth, window)
    return rows(sign_us, verify_us, cpu, reflected, errs)


def rows(sign_us, verify_us, cpu, reflected, errs):
    out = [table.row(PART, "HMAC-SHA-256/128 per packet, sign", sign_us, "µs",
                     note=f"services/common/auth.py, mean of {HMAC_RUNS:,} packets"),
           table.row(PART, "HMAC-SHA-256/128 per packet, verify", verify_us, "µs",
                     note="each end verifies one and signs one per packet")]
    for m in ("user", "auth"):
        n = reflected[m]
        if not n:
            out.append(table.not_measured(PART, f"{m} reflector CPU per packet", "µs",
                                          "no packet reflected in the window"))
            continue
        out.append(table.row(PART, f"{'authenticated' if m == 'auth' else 'user-space'} "
                                   "reflector CPU per packet", cpu[m] / n * 1e6, "µs",
                             note=f"{n} packets, {cpu[m]:.2f} CPU s; the eBPF reflector's "
                                  "cost is the kernel part's reflector rows (ns)"))
    if reflected["user"] and reflected["auth"]:
        extra = cpu["auth"] / reflected["auth"] - cpu["user"] / reflected["user"]
        out.append(table.row(PART, "authenticated minus user-space reflector CPU per packet",
                             extra * 1e6, "µs",
                             note="what the HMACs and kernel receive timestamps add; both "
                                  "processes' figures include their loop's fixed cost at 100 pps"))
    for d in accuracy.DIRECTIONS:
        if not errs["bpf"][d] or not errs["auth"][d]:
            out.append(table.not_measured(PART, f"authenticated {d} error", "µs",
                                          "no reply matched the captures"))
            continue
        amed, ap99, amx = accuracy.summary(errs["auth"][d])
        bmed, bp99, _ = accuracy.summary(errs["bpf"][d])
        note = f"eBPF median {bmed:.1f}, p99 {bp99:.1f} µs"
        if errs["user"][d]:
            umed, up99, _ = accuracy.summary(errs["user"][d])
            note += f"; user-space median {umed:.1f}, p99 {up99:.1f} µs"
        name = f"authenticated {d.replace('_', '-')} error"
        out.append(table.row(PART, f"{name}, median", amed, "µs",
                             note=f"{len(errs['auth'][d])} packets, max {amx:.1f} µs; {note}"))
        out.append(table.row(PART, f"{name}, p99", ap99, "µs"))
        out.append(table.row(PART, f"{name}, p99 / eBPF p99", ap99 / bp99 if bp99 else None, "x"))
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
