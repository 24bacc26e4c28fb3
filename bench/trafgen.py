"""trafgen: STAMP test packets from netsniff-ng's trafgen, the capacity part's generator.

trafgen (Debian package netsniff-ng) builds no packet itself: it is given
the frames, here bench/frames.py's, i.e. the payload from the wire module
(stamp_bpf.common.wire, the one Python definition of the packet), with real
IPv4 and UDP checksums (a reflector drops a test packet whose UDP checksum is
wrong). They go into its config as literal bytes, one `{ ... }` per frame:
FLOWS source ports x SEQS sequence numbers, sent round robin, so no runtime
counter or checksum is needed and every frame is byte for byte what the wire
module built.

    cfg = config(src_mac, dst_mac, 862)               # the config's text
    with Trafgen(topo, topo.sender, cfg_path, gap_ns=40_000, cpu=0) as gen:
        time.sleep(5)
        gen.cpu_seconds()

trafgen is always run with --gap: one sendto() per frame on a blocking
packet socket, with a nanosleep of `gap_ns` between frames (0: none, flat
out). Its --rate option sends bursts (a second's worth of frames at once, then
a pause; seen with a capture), which no reflector's socket buffer absorbs, and
its TX_RING mode (no --gap) gives up with "Flushing TX_RING failed" as soon
as the frames wait on another CPU (its socket's send buffer fills; it treats
EAGAIN as fatal). The gap is a floor: each nanosleep overshoots by a few
microseconds, so the caller measures the rate it got from the interface's
counters.
"""

import os
import shutil
import signal
import subprocess

import frames
import labrun

FLOWS = 4                  # source ports FIRST_SPORT ...
SEQS = 64                  # sequence numbers 0 ... SEQS-1 per flow
FIRST_SPORT = 40000
PACKAGE = "netsniff-ng"


def require():
    """trafgen's path; RuntimeError with one line naming the package when it is missing."""
    path = shutil.which("trafgen")
    if path is None:
        raise RuntimeError(f"trafgen not found: the capacity part needs the Debian package {PACKAGE} "
                           f"(apt-get install {PACKAGE}, or bash scripts/setup.sh)")
    return path


def packets(src_mac, dst_mac, dport, src=frames.SENDER_ADDR, dst=frames.REFLECTOR_ADDR,
            flows=FLOWS, seqs=SEQS):
    """The frames trafgen sends, in its order: for each flow (source port), every sequence number."""
    smac, dmac = (bytes.fromhex(m.replace(":", "")) for m in (src_mac, dst_mac))
    return [frames.stamp_request(sport=FIRST_SPORT + f, dport=dport, seq=s, src=src, dst=dst,
                                 src_mac=smac, dst_mac=dmac)
            for f in range(flows) for s in range(seqs)]


def config(src_mac, dst_mac, dport, **kw):
    """trafgen's packet configuration for packets(...): one `{ 0x.., ... }` line per frame."""
    pkts = packets(src_mac, dst_mac, dport, **kw)
    out = [f"# {len(pkts)} STAMP test frames of {len(pkts[0])} octets (bench/frames.py), "
           f"to port {dport}, sent round robin"]
    out += ["{ " + ", ".join(f"0x{b:02x}" for b in p) + " }" for p in pkts]
    return "\n".join(out) + "\n"


def parse_config(text):
    """The frames of a config written by config(), back as bytes (for the tests)."""
    return [bytes(int(x, 16) for x in line.strip("{} ").split(", "))
            for line in text.splitlines() if line.startswith("{")]


def _or0(f, pid):
    try:
        return f(pid)
    except OSError:
        return 0.0


class Trafgen:
    """trafgen sending the frames of `cfg_path` on `host`'s interface, pinned to `cpu`.

    gap_ns: nanoseconds slept between frames (0: flat out). Stopped with
    SIGINT (its own clean exit) when the with block ends; its messages go to
    `log_path` (default: beside the config).
    """

    def __init__(self, topo, host, cfg_path, gap_ns=0, cpu=0, log_path=None):
        argv = ["taskset", "-c", cpu, require(), "--in", cfg_path, "--out", host.ifname,
                "--cpus", 1, "--gap", f"{int(gap_ns)}ns",
                "--no-sock-mem",       # leave net.core.[rw]mem_* alone: the host is shared
                "--notouch-irq",       # and its IRQ affinities too
                "--no-cpu-stats"]
        self.topo = topo
        self.log_path = log_path or cfg_path + ".log"
        with open(self.log_path, "ab") as log:
            self.proc = topo.popen(host, argv, stdout=log, stderr=subprocess.STDOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _pids(self):
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [pid] + [int(c) for c in f.read().split()]
        except OSError:
            return [pid]

    def cpu_seconds(self):
        """User + system CPU seconds of trafgen and the sender it forked (while they run)."""
        return sum(_or0(labrun.cpu_seconds, p) for p in self._pids())

    def wait_seconds(self):
        """Seconds trafgen was runnable but waiting for its CPU (other load on it), /proc/PID/schedstat."""
        return sum(_or0(labrun.runqueue_wait_s, p) for p in self._pids())

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGINT, then the lab's SIGTERM/SIGKILL; RuntimeError when trafgen had failed on its own."""
        failed = self.proc.poll() is not None
        if not failed:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.topo.stop(self.proc)
        if failed or self.proc.returncode not in (0, -signal.SIGINT, -signal.SIGTERM):
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            raise RuntimeError(f"trafgen exited with status {self.proc.returncode}: "
                               f"{lines[-1] if lines else 'no message'} (log {self.log_path})")
