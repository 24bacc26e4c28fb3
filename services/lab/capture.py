"""capture - the lab's independent truth: frames of one interface, kernel-timestamped, as pcap.

USAGE: python -m stamp_bpf.lab.capture IFACE PCAP [--ready-file PATH]

An AF_PACKET socket sees every frame the interface sends or receives, with the
kernel's CLOCK_REALTIME timestamp (SO_TIMESTAMPNS) taken where tcpdump takes
it. Frames go to a classic pcap file with nanosecond resolution (magic
0xa1b23c4d, link type Ethernet) that tshark and tcpdump read. SIGTERM or
SIGINT drains the socket, flushes the file, and prints one JSON line to stderr
with the frames written and the frames the kernel dropped for lack of buffer.

From Python:

    from stamp_bpf.lab import capture
    with capture.start(topo, topo.reflector, "/tmp/r.pcap"):   # ready when it returns
        ...traffic...
    frames = capture.read_pcap("/tmp/r.pcap")                  # [(ts_ns, frame_bytes)]
    for p in capture.stamp_packets(frames, port=862):          # [StampPacket]
        print(p.ts_ns, p.src, p.sport, p.dst, p.dport, p.ttl, p.seq, len(p.payload))
    truth = capture.stamp_delays(sender_pkts, reflector_pkts)  # {PacketKey: Delays}

stamp_delays pairs the sender's test packets with the reflector's replies
(by the Session-Sender Sequence Number, RFC 8762 Figure 5) and gives each
test packet's one-way delays between the two capture points. Captures sit
outside TC: egress frames are seen after TC egress, ingress frames before TC
ingress, so BPF-timestamped delays are a few microseconds longer than these.

start(topo, host, path, ready_timeout=10) -> Capture; Capture.stop() -> {"frames": N,
"drops": 0, "untimestamped": 0} (raises if the kernel dropped frames or gave no
timestamp: a truth with holes is no truth). A Capture is a context manager.
"""

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import time
from typing import NamedTuple

from . import packets
from .netns import SENDER_ADDR, wait_ready

PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
_RECORD = struct.Struct("<IIII")


class StampPacket(NamedTuple):
    """One captured IPv4/UDP STAMP packet. seq is the first 4 payload bytes (None if shorter)."""
    ts_ns: int
    src: str
    dst: str
    sport: int
    dport: int
    ttl: int
    seq: int
    payload: bytes


class PacketKey(NamedTuple):
    """One test packet: its session (sender and reflector address and port) and sequence number."""
    sender: str
    sport: int
    reflector: str
    rport: int
    seq: int


class Delays(NamedTuple):
    """One test packet's one-way delays in ns; None where that leg (or the one before) was lost."""
    fwd_ns: int
    back_ns: int


# -- writing (the capture process) ----------------------------------------------

def write_header(f):
    f.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))


def write_record(f, ts_ns, frame):
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    f.write(_RECORD.pack(sec, nsec, len(frame), len(frame)))
    f.write(frame)


def capture(ifname, path, ready_file=None):
    """Capture `ifname` into `path` until SIGTERM/SIGINT; return the counters."""
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sock = packets.open_packet_socket(ifname, bufsize=32 << 20)
    sock.settimeout(0.1)
    packets.socket_stats(sock)           # start the kernel's drop counter from here
    frames = untimestamped = 0
    with open(path, "wb") as f:
        write_header(f)
        f.flush()
        if ready_file:
            with open(ready_file + ".tmp", "w") as r:
                r.write(f"{os.getpid()}\n")
            os.rename(ready_file + ".tmp", ready_file)
        while True:
            try:
                frame, _pkttype, ts_ns = packets.recv_frame(sock)
            except (TimeoutError, BlockingIOError):
                if stopping:
                    break                # drained: the socket had nothing left
                f.flush()
                continue
            if stopping:
                sock.setblocking(False)
            if ts_ns is None:            # never seen; counted so it cannot pass unnoticed
                untimestamped += 1
                ts_ns = time.time_ns()
            write_record(f, ts_ns, frame)
            frames += 1
        drops = packets.socket_stats(sock)[1]
    sock.close()
    return {"frames": frames, "drops": drops, "untimestamped": untimestamped}


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m stamp_bpf.lab.capture",
        description="capture every frame of one interface into a nanosecond pcap file",
        epilog="example:\n  ip netns exec NS python -m stamp_bpf.lab.capture eth0 /tmp/a.pcap"
               "   # until SIGTERM\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("iface", help="interface to capture (both directions)")
    p.add_argument("pcap", help="output file (classic pcap, nanosecond timestamps)")
    p.add_argument("-R", "--ready-file", metavar="PATH",
                   help="create PATH once the socket is bound and the header is written")
    args = p.parse_args(argv)
    try:
        result = capture(args.iface, args.pcap, args.ready_file)
    except OSError as e:
        sys.exit(f"capture: cannot capture {args.iface} into {args.pcap}: {e.strerror}; "
                 "run it as root in the namespace that holds the interface")
    print(json.dumps({"event": "capture stopped", "iface": args.iface, **result}),
          file=sys.stderr, flush=True)


# -- driving it from a test ----------------------------------------------------

class Capture:
    """A running capture process; stop() ends it and returns its counters."""

    def __init__(self, topo, proc, path, stderr_path):
        self.topo, self.proc, self.path, self.stderr_path = topo, proc, path, stderr_path
        self.result = None

    def stop(self):
        """Stop and flush; return the counters; raise if frames were lost or it failed."""
        if self.result is not None:
            return self.result
        rc = self.topo.stop(self.proc, timeout=5)
        with open(self.stderr_path) as f:
            err = f.read().strip()
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        if rc != 0 or not lines:
            raise RuntimeError(f"capture of {self.path} failed (status {rc}): {err[-800:]}")
        self.result = {k: lines[-1][k] for k in ("frames", "drops", "untimestamped")}
        if self.result["drops"] or self.result["untimestamped"]:
            raise RuntimeError(f"capture of {self.path} is not a whole truth: {self.result}")
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.stop()
        elif self.result is None:
            self.topo.stop(self.proc, timeout=5)
        return False


def start(topo, host, path, ready_timeout=10):
    """Start capturing `host`'s interface (a netns.Host) into `path`; return once it is ready."""
    ready = f"{path}.ready"
    stderr_path = f"{path}.stderr"
    if os.path.exists(ready):
        os.unlink(ready)
    with open(stderr_path, "wb") as err:
        proc = topo.popen(host, [sys.executable, "-m", "stamp_bpf.lab.capture", host.ifname, path,
                                 "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_ready(proc, ready, ready_timeout, f"the capture of {host.ifname}")
    except RuntimeError as e:
        topo.stop(proc)
        with open(stderr_path) as f:
            raise RuntimeError(f"{e}: {f.read().strip()[-800:]}") from None
    os.unlink(ready)
    return Capture(topo, proc, path, stderr_path)


# -- reading -------------------------------------------------------------------

def read_pcap(path):
    """[(ts_ns, frame_bytes)] from a classic pcap (ns or us resolution, either byte order)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path} is not a pcap file: only {len(data)} bytes")
    for endian in "<>":
        magic = struct.unpack_from(endian + "I", data)[0]
        if magic in (PCAP_MAGIC_NS, PCAP_MAGIC_US):
            break
    else:
        raise ValueError(f"{path} is not a classic pcap file (magic {data[:4].hex()})")
    scale = 1 if magic == PCAP_MAGIC_NS else 1000
    if struct.unpack_from(endian + "I", data, 20)[0] != LINKTYPE_ETHERNET:
        raise ValueError(f"{path} does not hold Ethernet frames")
    record = struct.Struct(endian + "IIII")
    out, off = [], 24
    while off + record.size <= len(data):
        sec, frac, incl, _orig = record.unpack_from(data, off)
        off += record.size
        if off + incl > len(data):
            break                        # a record cut short by a crash: ignore it
        out.append((sec * 1_000_000_000 + frac * scale, data[off:off + incl]))
        off += incl
    return out


def stamp_packets(frames, port=862):
    """The IPv4/UDP and IPv6/UDP packets to or from `port` among (ts_ns, frame) pairs, as
    StampPackets (`ttl` is the Hop Limit of an IPv6 one)."""
    out = []
    for ts_ns, frame in frames:
        udp = packets.parse_udp(frame)
        if udp is None or port not in (udp.sport, udp.dport):
            continue
        out.append(StampPacket(ts_ns, udp.src, udp.dst, udp.sport, udp.dport, udp.ttl,
                               packets.stamp_seq(udp, port), udp.payload))
    return out


def stamp_delays(sender_pkts, reflector_pkts, sender_addr=None, port=862, authenticated=False):
    """{PacketKey: Delays} for every test packet `sender_addr` sent, in sending order.

    sender_pkts and reflector_pkts are stamp_packets() of the captures on the
    sender's and the reflector's interface. Requests are matched by their
    Sequence Number, replies by the Session-Sender Sequence Number (payload
    bytes 24..27 of an unauthenticated reflector packet, 48..51 of an
    authenticated one). The first copy counts.
    """
    sender_addr = sender_addr or SENDER_ADDR
    seq_at = 48 if authenticated else 24

    def first(pkts, want, key):
        out = {}
        for p in pkts:
            if want(p) and p.seq is not None and (k := key(p)) is not None:
                out.setdefault(k, p.ts_ns)
        return out

    def request(p):
        return p.src == sender_addr and p.dport == port

    def reply(p):
        return p.dst == sender_addr and p.sport == port and len(p.payload) >= seq_at + 4

    def request_key(p):
        return PacketKey(p.src, p.sport, p.dst, p.dport, p.seq)

    def reply_key(p):
        return PacketKey(p.dst, p.dport, p.src, p.sport, struct.unpack_from("!I", p.payload, seq_at)[0])

    sent, arrived = first(sender_pkts, request, request_key), first(reflector_pkts, request, request_key)
    replied, returned = first(reflector_pkts, reply, reply_key), first(sender_pkts, reply, reply_key)
    out = {}
    for key, t1 in sent.items():
        t2, t3, t4 = arrived.get(key), replied.get(key), returned.get(key)
        out[key] = Delays(t2 - t1 if t2 is not None else None,
                          t4 - t3 if t3 is not None and t4 is not None else None)
    return out


if __name__ == "__main__":
    main()
