"""Fewer series: --buckets, --no-reflector-histogram, and sessions that end taking their
series with them within the idle timeout while sessions churn.
"""

import os
import random
import re
import subprocess

import pytest
from stamp_bpf.common import histogram, logs, recordpipe, records
from stamp_bpf.exporter.aggregator import Aggregator

from test_exporter import BASE, EXE, MS, R, exporter_factory, folder, key, sender_packet  # noqa: F401


def reflector_packet(sender, i, delay_ns):
    return records.ReflectorPacket(sender, 862, "10.0.0.2", 862, records.TS_BPF, 64, i,
                                   BASE + i * 10 * MS, BASE + i * 10 * MS + delay_ns, 0, i + 1)


def test_buckets_flag_sets_the_bounds_and_the_reflector_histogram_can_go(exporter_factory):
    exp = exporter_factory("--buckets", "0.001,0.005,0.02", "--no-reflector-histogram")
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        pusher.push([sender_packet(0, R, 3 * MS, 7 * MS, (1, 1, 0, 0, 0, 0))])
        pusher.push([reflector_packet("10.0.0.1", i, 3 * MS) for i in range(3)])
    got = exp.wait_for("stamp_reflector_packets_reflected_total",
                       {"sender": "10.0.0.1:862", "reflector": "10.0.0.2:862"}, 3)
    les = sorted({dict(k[1])["le"] for k in got if k[0] == "stamp_delay_seconds_bucket"}, key=float)
    assert les == ["0.001", "0.005", "0.02", "+Inf"], f"--buckets should give these bounds: {les}."
    assert got[key("stamp_delay_seconds_bucket", reflector="10.0.0.2:862", sender="10.0.0.1:862",
                   direction="near_end", le="0.005")] == 1
    refl = {k[0] for k in got if dict(k[1]).get("sender") == "10.0.0.1:862"
            and k[0].startswith("stamp_reflector_")}
    assert refl == {"stamp_reflector_packets_reflected_total", "stamp_reflector_session_info",
                    "stamp_reflector_delay_last_seconds", "stamp_reflector_jitter_seconds",
                    "stamp_reflector_delay_negative_seconds_sum", "stamp_reflector_delay_negative_seconds_count"}, (
        f"--no-reflector-histogram keeps the counters, last value and jitter only: {sorted(refl)}.")
    assert got[key("stamp_reflector_delay_last_seconds", sender="10.0.0.1:862", reflector="10.0.0.2:862",
                   direction="near_end")] == 0.003


@pytest.mark.parametrize("args, message", [
    (["--buckets", "0.01,0.001"], "strictly ascending"),
    (["--buckets", "a,b"], "seconds separated by commas"),
    (["--buckets", "0.001", "--hist", "28", "25", "75"], "give one of them"),
])
def test_bad_bucket_flags_end_in_one_clear_line(args, message, folder):
    r = subprocess.run([EXE, *args, "--zmq", f"ipc://{folder}/r.sock"], capture_output=True, text=True,
                       timeout=30)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and message in lines[-1] and "Traceback" not in r.stderr, (
        f"stamp-exporter {' '.join(args)} should end with one line saying {message!r}: {r.stderr!r}")


SAMPLE = re.compile(r'^(\w+)\{(?=[^}]*reflector="([^"]+)")(?=[^}]*sender="([^"]+)")')


def session_labels(agg):
    """{(side, sender, reflector)} of every per-session series of a scrape, and the count."""
    found, n = set(), 0
    for line in agg.metrics().decode().splitlines():
        m = SAMPLE.match(line)
        if m:
            n += 1
            side = "reflector" if m.group(1).startswith("stamp_reflector_") else "sender"
            found.add((side, m.group(3), m.group(2)))
    return found, n


@pytest.mark.unit
def test_series_of_ended_sessions_go_within_the_idle_timeout_under_churn():
    idle = 60.0
    agg = Aggregator(histogram.default_buckets(), logs.configure("t", fmt="json", stream=open(os.devnull, "w")),
                     idle_timeout=idle, reflector_histogram=False)
    rng = random.Random(13)
    pool = [f"10.1.{i // 200}.{i % 200 + 1}" for i in range(400)]
    live = set(pool[:16])
    last_seen, counts = {}, {}
    for minute in range(30):
        # Every minute 4 peers leave (DNS changed, node gone) and 4 join.
        gone = set(rng.sample(sorted(live), 4))
        live = (live - gone) | set(rng.sample([p for p in pool if p not in live], 4))
        for t in range(0, 60, 5):
            now = minute * 60.0 + t
            for peer in sorted(live):
                n = counts[peer] = counts.get(peer, 0) + 1
                agg.handle(records.encode([sender_packet(n, R, MS, MS, (n, n, 0, 0, 0, 0), reflector=peer)]), now)
                agg.handle(records.encode([records.ReflectorPacket(peer, 862, "10.0.0.1", 862, records.TS_BPF,
                                                                   64, n, 1, 2, 0, n)]), now)
                last_seen[peer] = now
            agg.expire(now)
            if t % 20:
                continue        # look three times a simulated minute
            found, n_series = session_labels(agg)
            want = {p for p, seen in last_seen.items() if now - seen <= idle}
            assert {f[2].split(":")[0] for f in found if f[0] == "sender"} == want, (
                f"At {now:.0f} s the sender series should be those of peers heard within {idle:.0f} s.")
            assert {f[1].split(":")[0] for f in found if f[0] == "reflector"} == want
            assert n_series == len(want) * (91 + 6), (
                f"{len(want)} sessions should give {len(want) * 97} series, not {n_series}.")
    assert len(last_seen) > 100, "The churn should have gone through many peers."
    # With 16 live and 4 leaving a minute, at most 16 + 4 * (idle / 60 + 1) sessions have series.
    assert len(want) <= 16 + 4 * 2
