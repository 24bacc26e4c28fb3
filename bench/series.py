"""series: what one node exports with --max-peers 16 and with the full mesh, from real exporters.

For N = 10, 100 and 1,000 simulated nodes, the node's peers are chosen as the
sender chooses them (stamp_bpf.sender.peers on N addresses); the node's two
exporters, run as the chart runs them (the reflector's with
--no-reflector-histogram), are fed one reply per session they would see, and
scraped: the series per node are the samples of both scrapes. Then the
scrape time of the sender's exporter at K = 16, and what one snapshot of the
/ page's history costs (under the lock) at 1,000 sessions.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import table

from stamp_bpf.common import histogram, logs, recordpipe, records
from stamp_bpf.exporter.aggregator import Aggregator
from stamp_bpf.sender import peers

PART = "series"
K = 16
BASE = 1_795_000_000_000_000_000
EXE = os.path.join(os.path.dirname(sys.executable), "stamp-exporter")


def node_names(n):
    return [f"10.{i // 250}.{i % 250}.7" for i in range(n)]


def sender_records(me, chosen):
    out = []
    for j, peer in enumerate(chosen):
        t1 = BASE + j * 1000
        out.append(records.SenderPacket(peer, 862, me, 862, records.OUTCOME_RECEIVED, False,
                                        records.TS_BPF, 255, 0, 0, t1, t1 + 3_000_000, t1 + 3_020_000,
                                        t1 + 6_020_000, 0x8001, 0x8001, 1, 1, 0, 0, 0, 0))
    return out


def reflector_records(me, senders):
    return [records.ReflectorPacket(s, 862, me, 862, records.TS_BPF, 255, 0, BASE, BASE + 3_000_000, 0, 1)
            for s in senders]


def service(role):
    return records.ServiceStats(role, records.TS_BPF, True, 1000, 0, 0, 10, os.getpid())


class Exporter:
    def __init__(self, tmp, name, *args):
        self.endpoint = f"ipc://{tmp}/{name}.sock"
        self.log = os.path.join(tmp, f"{name}.log")
        self.proc = subprocess.Popen([EXE, "--listen", "127.0.0.1:0", "--zmq", self.endpoint,
                                      "--log-format", "json", "--node-name", name, *args],
                                     stdout=open(self.log, "w"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(self.log) as f:
                line = f.readline()
            if line.endswith("\n"):
                self.port = int(line.split('"listen": "')[1].split('"')[0].rsplit(":", 1)[1])
                return
            time.sleep(0.05)
        raise RuntimeError(f"stamp-exporter {name} did not start")

    def scrape(self):
        t0 = time.perf_counter()
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30).read()
        return time.perf_counter() - t0, body.decode()

    def feed(self, recs, stats, want_sessions, side):
        with recordpipe.RecordPusher(self.endpoint, hwm=100_000) as pusher:
            time.sleep(0.2)
            for i in range(0, len(recs), 256):
                pusher.push(recs[i:i + 256])
            pusher.push([stats])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.scrape()[1]
            if f'stamp_exporter_sessions{{side="{side}"}} {float(want_sessions)}' in text:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the exporter did not get {want_sessions} {side} sessions")

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def samples(text):
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def node_series(tmp, n, k):
    """(series of the node's two exporters, its sender sessions, its reflector sessions,
    sender exporter scrape times)."""
    names = node_names(n)
    me = names[0]
    chosen = peers.choose(me, names, k)
    senders = [u for u in names if u != me and me in peers.choose(u, names, k)]
    snd = Exporter(tmp, f"s{n}-{k}")
    refl = Exporter(tmp, f"r{n}-{k}", "--no-reflector-histogram")
    try:
        snd.feed(sender_records(me, chosen), service(records.ROLE_SENDER), len(chosen), "sender")
        refl.feed(reflector_records(me, senders), service(records.ROLE_REFLECTOR), len(senders),
                  "reflector")
        total = samples(snd.scrape()[1]) + samples(refl.scrape()[1])
        times = sorted(snd.scrape()[0] for _ in range(20))
        return total, len(chosen), len(senders), times
    finally:
        snd.close()
        refl.close()


def snapshot_cost(sessions=1000):
    agg = Aggregator(histogram.default_buckets(), logs.configure("bench", fmt="json",
                                                                 stream=open(os.devnull, "w")))
    agg.handle(records.encode(sender_records("10.255.0.1", [f"10.{s >> 8}.{s & 255}.2"
                                                            for s in range(sessions)])), 0.0)
    agg.history.snapshot()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        agg.history.snapshot()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(log=print):
    rows = []
    with tempfile.TemporaryDirectory(prefix="stamp-series-") as tmp:
        for n in (10, 100, 1000):
            for k, label in ((K, f"K={K}"), (peers.ALL, "full mesh")):
                total, out, into, times = node_series(tmp, n, k)
                log(f"series: N={n} {label}: {total} series ({out} sessions out, {into} in)")
                rows.append(table.row(PART, f"series per node, N={n:,}, {label}", total, "series",
                                      note=f"{out} sender sessions, {into} reflector sessions; "
                                           f"formula min(K, N-1)*97 + exporters' own = "
                                           f"{peers.series_per_node(k, n)} + "
                                           f"{total - peers.series_per_node(k, n)}"))
                if k == K and n == 1000:
                    rows.append(table.row(PART, f"sender exporter scrape at K={K}, wall median",
                                          statistics.median(times) * 1000, "ms", "<", 10.0,
                                          note=f"max {times[-1] * 1000:.1f} ms of 20"))
    cost = snapshot_cost()
    rows.append(table.row(PART, "/ page history snapshot, 1,000 sessions (under the lock)",
                          cost * 1000, "ms", "<", 50.0, note="once per --history-interval (10 s)"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r.figure:60} {table.fmt(r.value):>10} {r.unit:7} {r.target:12} {table.verdict(r)}  {r.note}")
