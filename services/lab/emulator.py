"""emulator - a link emulator relaying Ethernet frames between two interfaces.

USAGE: python -m stamp_bpf.lab.emulator SENDER_IF REFLECTOR_IF [--fwd-delay D] [--back-delay D]
           [--jitter D] [--drop DIR:SEQ,...] [--drop-prob DIR:P] [--delay-seq DIR:SEQ=D]
           [--reorder DIR:SEQ,...] [--remark DIR:DSCP] [--port PORT] [--seed N] [--rt-priority N]
           [--log PATH] [--ready-file PATH]

The kernel has no netem, so this runs in the middle namespace of the lab
(stamp_bpf.lab.netns, shape "emulated") and bridges the two sides itself:
every frame read from one interface (AF_PACKET, outgoing copies ignored, so
nothing loops) is sent out of the other after that direction's delay. `fwd`
is sender -> reflector (frames read on SENDER_IF), `back` the other way.

Timing: delays count from the kernel's receive timestamp; frames wait on a
heap against the monotonic clock, in a SCHED_FIFO process with 1 us timer
slack. Forwarding adds about 0.1 ms to each leg (more on a loaded machine):
captures, not this program, are the truth. Jitter is uniform in [-J, +J],
applies to every frame, and never reorders a direction.

Impairments touch STAMP frames only: IPv4/UDP or IPv6/UDP (UDP the first Next
Header) to or from --port, whose SEQ is
the first 4 payload bytes, big-endian (in `back` frames that is the reflector's
Sequence Number: the sender's own for a stateless reflector, or a stateful one
serving one session from 0). A SEQ rule hits every session. Every other frame
(ARP, ICMP, TCP, other UDP, malformed) gets just its direction's delay.

Every STAMP frame dropped or forwarded is one JSON line in --log (line-buffered):
  {"event": "forward"|"drop", "dir": "fwd"|"back", "seq": N, "rx_ns": ..., "tx_ns": ...,
   "src": ..., "dst": ..., "sport": ..., "dport": ...}        (times: CLOCK_REALTIME ns)
("reordered": true marks a --reorder packet; drops have no tx_ns). On exit one
{"event": "summary", ...} line with counters follows, also printed to stderr.
SIGTERM or SIGINT stops it cleanly; frames still in flight are counted as "in_flight".
"""

import argparse
import ctypes
import heapq
import json
import os
import random
import re
import select
import signal
import sys
import time

from . import packets

DIRS = ("fwd", "back")
PR_SET_TIMERSLACK = 29
REORDER_HOLD_NS = 1_000_000_000    # a held frame goes out after this even with no successor
_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

EXAMPLES = """examples:
  emulator ms0 mr0 --fwd-delay 3ms --back-delay 7ms     # asymmetric delay
  emulator ms0 mr0 --jitter 0.5ms --seed 7              # +-0.5 ms, reproducible
  emulator ms0 mr0 --drop fwd:3,4 --drop back:10        # lose these STAMP packets
  emulator ms0 mr0 --delay-seq back:10=1500ms           # make reply 10 arrive late
  emulator ms0 mr0 --reorder fwd:5                      # send 5 just after 6
  emulator ms0 mr0 --remark fwd:10                      # STAMP packets re-marked DSCP 10
"""


def duration_ns(text):
    """'3ms', '0.5ms', '250us', '1s', '0' -> nanoseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|ms|s)?\s*", text)
    if not m or (m.group(2) is None and float(m.group(1)) != 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 3ms, 250us, 1.5s")
    return round(float(m.group(1)) * _UNITS[m.group(2) or "ns"])


def _split_dir(text, what):
    d, sep, rest = text.partition(":")
    if not sep or d not in DIRS or not rest:
        raise argparse.ArgumentTypeError(f"{text!r}: {what} must look like fwd:... or back:...")
    return d, rest


def _seq(text):
    if not text.strip().isdigit() or int(text) >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a STAMP sequence number (0 .. 2^32-1)")
    return int(text)


def dir_seqs(text):
    """'fwd:1,2,3' -> ('fwd', {1, 2, 3})."""
    d, rest = _split_dir(text, "the value")
    return d, {_seq(s) for s in rest.split(",")}


def dir_prob(text):
    """'fwd:0.01' -> ('fwd', 0.01)."""
    d, rest = _split_dir(text, "--drop-prob")
    try:
        p = float(rest)
    except ValueError:
        p = -1
    if not 0 <= p <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the probability must be between 0 and 1")
    return d, p


def dir_seq_delay(text):
    """'back:10=1500ms' -> ('back', 10, 1_500_000_000)."""
    d, rest = _split_dir(text, "--delay-seq")
    seq, sep, dur = rest.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: --delay-seq must look like back:10=1500ms")
    return d, _seq(seq), duration_ns(dur)


def dir_dscp(text):
    d, rest = _split_dir(text, "--remark")
    try:
        dscp = int(rest)
    except ValueError:
        dscp = -1
    if not 0 <= dscp <= 63:
        raise argparse.ArgumentTypeError(f"{text!r}: --remark wants DIR:DSCP with DSCP 0-63")
    return d, dscp


def remark(frame, dscp):
    """`frame` with the IPv4 DSCP set to `dscp` (ECN kept) and the header checksum redone."""
    f = bytearray(frame)
    ihl = (f[14] & 0x0F) * 4
    f[15] = (dscp << 2) | (f[15] & 3)
    f[24:26] = b"\0\0"
    f[24:26] = packets.rfc1071(bytes(f[14:14 + ihl])).to_bytes(2, "big")
    return bytes(f)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m stamp_bpf.lab.emulator",
        description="relay frames between two interfaces with per-direction delay, jitter, "
                    "drops and reordering of chosen STAMP packets",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sender_if", help="interface towards the sender (frames read here go fwd)")
    p.add_argument("reflector_if", help="interface towards the reflector (frames go back)")
    p.add_argument("-f", "--fwd-delay", type=duration_ns, default=0, metavar="D",
                   help="sender -> reflector delay, e.g. 3ms (default 0)")
    p.add_argument("-b", "--back-delay", type=duration_ns, default=0, metavar="D",
                   help="reflector -> sender delay, e.g. 7ms (default 0)")
    p.add_argument("-j", "--jitter", type=duration_ns, default=0, metavar="D",
                   help="uniform jitter +-D on both directions, never reordering (default 0)")
    p.add_argument("-d", "--drop", type=dir_seqs, action="append", default=[], metavar="DIR:SEQ,...",
                   help="drop the STAMP packets with these sequence numbers (repeatable)")
    p.add_argument("-P", "--drop-prob", type=dir_prob, action="append", default=[], metavar="DIR:P",
                   help="drop each STAMP packet of DIR with probability P (repeatable)")
    p.add_argument("-S", "--delay-seq", type=dir_seq_delay, action="append", default=[],
                   metavar="DIR:SEQ=D", help="add D to the delay of one STAMP packet (repeatable)")
    p.add_argument("-r", "--reorder", type=dir_seqs, action="append", default=[], metavar="DIR:SEQ,...",
                   help="send these STAMP packets just after the next one of DIR (repeatable)")
    p.add_argument("-m", "--remark", type=dir_dscp, action="append", default=[], metavar="DIR:DSCP",
                   help="re-mark every STAMP packet of DIR with DSCP (ECN kept; repeatable)")
    p.add_argument("-p", "--port", type=int, default=862, help="STAMP UDP port (default 862)")
    p.add_argument("-s", "--seed", type=int, default=1, help="seed for jitter and --drop-prob (default 1)")
    p.add_argument("-T", "--rt-priority", type=int, default=10, choices=range(0, 100), metavar="N",
                   help="SCHED_FIFO priority, so other load delays frames less; 0 = normal (default 10)")
    p.add_argument("-l", "--log", metavar="PATH", help="JSON-lines log of STAMP frames")
    p.add_argument("-R", "--ready-file", metavar="PATH", help="create PATH once both sockets are bound")
    return p.parse_args(argv)


class Emulator:
    """The relay: two packet sockets, a heap of frames in flight, the impairment rules."""

    def __init__(self, args, log):
        self.args = args
        self.log = log
        self.base = {"fwd": args.fwd_delay, "back": args.back_delay}
        self.drops = {d: set() for d in DIRS}
        for d, seqs in args.drop:
            self.drops[d] |= seqs
        self.drop_prob = dict.fromkeys(DIRS, 0.0)
        self.drop_prob.update(args.drop_prob)
        self.extra = {d: {} for d in DIRS}
        for d, seq, ns in args.delay_seq:
            self.extra[d][seq] = ns
        self.reorder = {d: set() for d in DIRS}
        for d, seqs in args.reorder:
            self.reorder[d] |= seqs
        self.remark = dict(args.remark)
        self.jitter_rng = random.Random(args.seed)
        self.drop_rng = random.Random(args.seed + 1)
        self.socks = {"fwd": packets.open_packet_socket(args.sender_if),
                      "back": packets.open_packet_socket(args.reflector_if)}
        self.out = {"fwd": self.socks["back"], "back": self.socks["fwd"]}
        for s in self.socks.values():
            s.setblocking(False)
        self.heap = []                   # [due_mono_ns, n, dir, frame, record or None, sent]
        self.last_due = dict.fromkeys(DIRS, 0)
        self.held = {d: [] for d in DIRS}
        self.n = 0
        self.stats = {f"{k}_{d}": 0 for d in DIRS
                      for k in ("frames", "stamp", "dropped", "send_errors")}
        self.stopping = False

    def run(self):
        socks = list(self.socks.values())
        while not self.stopping:
            timeout = 0.1
            if self.heap:
                timeout = min(timeout, max(0.0, (self.heap[0][0] - time.monotonic_ns()) / 1e9))
            readable, _, _ = select.select(socks, [], [], timeout)
            for d, s in self.socks.items():
                if s in readable:
                    self.receive(d, s)
            self.transmit_due()
        return self.summary()

    def receive(self, d, sock):
        for _ in range(256):             # bounded, so the other side and the heap get a turn
            try:
                frame, pkttype, rx_ns = packets.recv_frame(sock)
            except BlockingIOError:
                return
            if pkttype == packets.PACKET_OUTGOING:
                continue
            self.stats[f"frames_{d}"] += 1
            now_mono, now_real = time.monotonic_ns(), time.time_ns()
            rx_ns = rx_ns or now_real
            rx_mono = now_mono - max(0, now_real - rx_ns)
            udp = packets.parse_udp(frame)
            seq = packets.stamp_seq(udp, self.args.port)
            record = None
            if seq is not None:
                self.stats[f"stamp_{d}"] += 1
                record = {"dir": d, "seq": seq, "rx_ns": rx_ns, "src": udp.src, "dst": udp.dst,
                          "sport": udp.sport, "dport": udp.dport}
                p = self.drop_prob[d]
                if seq in self.drops[d] or (p and self.drop_rng.random() < p):
                    self.stats[f"dropped_{d}"] += 1
                    self.write({"event": "drop", **record})
                    continue
                if d in self.remark:
                    frame = remark(frame, self.remark[d])
                    record["dscp"] = self.remark[d]
            jitter = self.jitter_rng.randint(-self.args.jitter, self.args.jitter) if self.args.jitter else 0
            due = max(rx_mono + max(0, self.base[d] + jitter), self.last_due[d])
            self.last_due[d] = due
            if seq is not None and seq in self.extra[d]:
                due += self.extra[d][seq]
            entry = [due, self.n, d, frame, record, False]
            self.n += 1
            if seq is not None and seq in self.reorder[d]:
                entry[0] += REORDER_HOLD_NS
                record["reordered"] = True
                self.held[d].append(entry)
            heapq.heappush(self.heap, entry)

    def transmit_due(self):
        while self.heap and self.heap[0][0] <= time.monotonic_ns():
            entry = heapq.heappop(self.heap)
            if entry[5]:
                continue                 # a held frame already sent after its successor
            d, record = entry[2], entry[4]
            if record is not None and record.get("reordered"):
                self.held[d] = [e for e in self.held[d] if e is not entry]
            self.send(entry)
            if record is not None and not record.get("reordered"):
                for held in self.held[d]:
                    self.send(held)      # just after its successor: the reorder asked for
                self.held[d] = []

    def send(self, entry):
        entry[5] = True
        d, frame, record = entry[2], entry[3], entry[4]
        try:
            self.out[d].send(frame)
        except OSError as e:
            self.stats[f"send_errors_{d}"] += 1
            if record is not None:
                self.write({"event": "drop", **record, "error": e.strerror})
            return
        if record is not None:
            self.write({"event": "forward", **record, "tx_ns": time.time_ns()})

    def write(self, obj):
        if self.log:
            self.log.write(json.dumps(obj) + "\n")

    def summary(self):
        for d, s in self.socks.items():
            self.stats[f"socket_drops_{d}"] = packets.socket_stats(s)[1]
        self.stats["in_flight"] = sum(1 for e in self.heap if not e[5])
        return {"event": "summary", **self.stats}


def tighten_timer_slack():
    """Ask for 1 us timer slack instead of 50 us, so select() wakes when the frame is due."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass                             # only costs precision


def raise_priority(priority):
    """Run under SCHED_FIFO at `priority` (0: leave as is) so busy CPUs delay frames less."""
    if priority:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except OSError as e:
            print(f"emulator: running without real-time priority: {e.strerror}", file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    tighten_timer_slack()
    raise_priority(args.rt_priority)
    # Line-buffered: a test may read the log while the emulator runs, and sees whole lines.
    log = open(args.log, "a", buffering=1) if args.log else None
    try:
        emu = Emulator(args, log)
    except OSError as e:
        sys.exit(f"emulator: cannot open packet sockets on {args.sender_if}/{args.reflector_if}: "
                 f"{e.strerror}; run it as root inside the namespace that holds both interfaces")

    def stop(signum, frame):
        emu.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(tmp, args.ready_file)
    print("emulator ready", flush=True)
    summary = emu.run()
    emu.write(summary)
    if log:
        log.close()
    print(json.dumps(summary), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
