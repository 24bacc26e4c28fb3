"""End to end: reflector, sender and exporter as three processes, real BPF, real ZeroMQ.

    [sender ns] --veth-- [middle ns: link emulator] --veth-- [reflector ns]
    stamp-sender          fwd 3 ms, back 7 ms,             stamp-reflector
          \\               +-0.3 ms jitter, drops, one late         /
           `---- ipc:// records ----> stamp-exporter (this ns) <---'

The scrape over HTTP must equal the sender's final JSON summary: every counter
exactly, each histogram's count and sum (avg_ns x count, to the rounding of
avg_ns), last delay and jitter; the reflector's counts must equal what crossed
the forward link, its mean forward delay the sender's near-end mean; and the sender's histogram file, made with the same
--hist BINS FLOOR CEIL, must hold the same counts as the exporter's buckets, and
so must the reflector's.
A second run shows the services measuring on while the exporter starts late, is
flooded with garbage, and is killed and restarted: the counts come out right.
"""

import math
import shutil
import signal
import tempfile
import time

import pytest

from test_exporter import ExporterProcess

COUNT = 40
DROPPED_FWD = (3, 17)
DROPPED_BACK = (9,)
LATE_BACK = 22          # held 450 ms on the way back: after -w 0.3, inside the late window
HIST = ("28", "25", "75")
DIRECTIONS = ("near_end", "far_end", "round_trip")


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="ste-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def values(samples, name, **labels):
    """Samples of `name` whose labels include `labels`, as {le or '': value}."""
    out = {}
    for (n, lab), v in samples.items():
        d = dict(lab)
        if n == name and all(d.get(k) == x for k, x in labels.items()):
            out[d.get("le", "")] = v
    return out


def read_histfile(path):
    """{direction: [count per bin]} of a histogram file with one session."""
    out = {}
    for line in open(path):
        if not line.startswith("#"):
            _, direction, _, _, n = line.rstrip("\n").split("\t")
            out.setdefault(direction, []).append(int(n))
    return out


def test_scrape_equals_the_senders_summary(topology, service, short_dir):
    emu = ["--fwd-delay", "3ms", "--back-delay", "7ms", "--jitter", "0.3ms", "--seed", "3",
           "--drop", "fwd:" + ",".join(map(str, DROPPED_FWD)),
           "--drop", "back:" + ",".join(map(str, DROPPED_BACK)),
           "--delay-seq", f"back:{LATE_BACK}=450ms"]
    topo = topology("emulated", emulator_args=emu)
    exp = ExporterProcess(short_dir, "--hist", *HIST)
    try:
        zmq = ["--zmq", exp.endpoint]
        refl_histpath = f"{short_dir}/reflector-hist.tsv"
        refl = service(topo, topo.reflector, "stamp-reflector", topo.reflector.ifname, *zmq,
                       "--output", "--hist", *HIST, "--histpath", refl_histpath,
                       ready="reflecting")
        histpath = f"{short_dir}/sender-hist.tsv"
        snd = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                      "-c", COUNT, "-i", "0.05", "-w", "0.3", "--hist", *HIST,
                      "--histpath", histpath, *zmq)
        assert snd.wait_exit(120) == 0, f"The sender failed:\n{snd.text()[-3000:]}"
        assert refl.stop() == 0, "The reflector must stop cleanly on SIGTERM."
        (summary,) = snd.summary()["sessions"]
        session = {"reflector": f"{topo.reflector.addr}:862"}
        got = exp.wait_for("stamp_packets_sent_total",
                           dict(session, sender=f"{topo.sender.addr}:862"), COUNT)
        deadline = time.monotonic() + 10     # the reflector's last ServiceStats
        while not values(got, "stamp_clock_synchronized", role="reflector") \
                and time.monotonic() < deadline:
            time.sleep(0.2)
            got = exp.samples()
    finally:
        exp.stop()

    def one(name, **labels):
        v = values(got, name, **session, **labels)
        assert len(v) == 1, f"The scrape must have exactly one {name}{labels}, it has {v}."
        return list(v.values())[0]

    # Counters: exactly the summary.
    assert summary["sent"] == COUNT and summary["lost"] == len(DROPPED_FWD) + len(DROPPED_BACK) \
        and summary["late"] == 1, f"The emulated link did not do what was asked: {summary}."
    for metric, field in (("sent", "sent"), ("received", "received"), ("lost", "lost"),
                          ("late", "late"), ("duplicate", "duplicates"), ("reordered", "reordered")):
        assert one(f"stamp_packets_{metric}_total") == summary[field], \
            f"stamp_packets_{metric}_total must equal the summary's {field} ({summary[field]})."
    # Histograms: count, sum, last and jitter agree with the summary's delay statistics.
    replies = summary["received"] + summary["late"]
    files = read_histfile(histpath)
    for d in DIRECTIONS:
        s = summary[d]
        count = one("stamp_delay_seconds_count", direction=d)
        assert count == replies, f"{d}: the histogram counts every reply, {replies}, not {count}."
        total = one("stamp_delay_seconds_sum", direction=d)
        assert abs(total * 1e9 - s["avg_ns"] * count) <= count, \
            f"{d}: the histogram sum {total} s must be avg_ns x count = {s['avg_ns'] * count} ns."
        assert round(one("stamp_delay_last_seconds", direction=d) * 1e9) == s["last_ns"], \
            f"{d}: the last delay must be the summary's last_ns {s['last_ns']}."
        assert abs(one("stamp_jitter_seconds", direction=d) * 1e9 - s["jitter_ns"]) <= 1, \
            f"{d}: the jitter must be the summary's jitter_ns {s['jitter_ns']} (RFC 3550)."
        buckets = values(got, "stamp_delay_seconds_bucket", **session, direction=d)
        cumulative = [buckets[le] for le in sorted(buckets, key=float)]
        from_file = [sum(files[d][:i + 1]) for i in range(len(files[d]))]
        assert cumulative == from_file, \
            f"{d}: the exporter's buckets {cumulative} must be the running sum of the sender's " \
            f"histogram file bins {from_file} (the same --hist {' '.join(HIST)})."
        lowest = min(float(le) for le, c in buckets.items() if c > 0)
        assert s["min_ns"] <= lowest * 1e9, f"{d}: no delay may sit below the summary's min."
    # Reflector side: what crossed the forward link.
    reflected = COUNT - len(DROPPED_FWD)
    rs = {"sender": f"{topo.sender.addr}:862"}
    assert list(values(got, "stamp_reflector_packets_reflected_total", **rs).values()) == [reflected], \
        f"The reflector reflected the {reflected} packets the link let through."
    assert list(values(got, "stamp_reflector_delay_seconds_count", **rs).values()) == [reflected]
    buckets = values(got, "stamp_reflector_delay_seconds_bucket", **rs, direction="near_end")
    refl_file = read_histfile(refl_histpath)["near_end"]
    assert [buckets[le] for le in sorted(buckets, key=float)] == \
        [sum(refl_file[:i + 1]) for i in range(len(refl_file))], \
        "The reflector's histogram file and the exporter's reflector buckets must agree."
    for name in ("stamp_session_info", "stamp_reflector_session_info"):
        assert [dict(k[1]).get("timestamping") for k in got if k[0] == name] == ["bpf"], \
            f"{name} must say the timestamps were taken by BPF."
    fwd_mean = list(values(got, "stamp_reflector_delay_seconds_sum", **rs).values())[0] / reflected
    sender_mean = summary["near_end"]["avg_ns"] / 1e9
    assert math.isclose(fwd_mean, sender_mean, abs_tol=50e-6), \
        f"The reflector's mean forward delay {fwd_mean} s must be the sender's near-end mean " \
        f"{sender_mean} s: the same T1 and T2, one packet more (seq {DROPPED_BACK[0]})."
    # Health: nothing dropped, both roles reported.
    for stage in ("service_queue", "ring_buffer", "malformed"):
        assert values(got, "stamp_records_dropped_total", stage=stage) == {"": 0}, \
            f"No record may be dropped at stage {stage}."
    for role in ("sender", "reflector"):
        assert values(got, "stamp_clock_synchronized", role=role), f"The {role} reported its clock."


def test_services_keep_measuring_through_exporter_faults(topology, service, short_dir):
    """Exporter started late, flooded with garbage, SIGKILLed and restarted mid-run."""
    import random
    import threading

    import zmq

    topo = topology("direct")
    endpoint = f"ipc://{short_dir}/records.sock"
    zmq_args = ["--zmq", endpoint]
    refl = service(topo, topo.reflector, "stamp-reflector", topo.reflector.ifname, *zmq_args,
                   ready="reflecting")
    count = 80
    snd = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                  "-c", count, "-i", "0.05", "-w", "0.3", *zmq_args)
    snd.wait_event("session_started")
    time.sleep(0.5)                                    # measuring with no exporter at all
    first = ExporterProcess(short_dir, endpoint=endpoint)
    stop, flood = threading.Event(), [0]

    def garbage():
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 0
        sock.connect(endpoint)
        rnd = random.Random(5)
        while not stop.is_set():
            try:
                sock.send(b"\xff" + rnd.randbytes(rnd.randrange(0, 120)), zmq.NOBLOCK)
                flood[0] += 1
            except zmq.Again:
                pass
            time.sleep(0.0005)
        sock.close()
        ctx.term()

    flooder = threading.Thread(target=garbage, daemon=True)
    flooder.start()
    second = None
    try:
        first.wait_for("stamp_exporter_sessions", {"side": "sender"}, 1)
        time.sleep(0.5)
        first.stop(signal.SIGKILL)
        time.sleep(0.5)                                # measuring while the exporter is down
        second = ExporterProcess(short_dir, endpoint=endpoint)
        assert snd.wait_exit(120) == 0, f"The sender failed:\n{snd.text()[-3000:]}"
        stop.set()
        flooder.join(5)
        (summary,) = snd.summary()["sessions"]
        session = {"reflector": f"{topo.reflector.addr}:862", "sender": f"{topo.sender.addr}:862"}
        got = second.wait_for("stamp_packets_sent_total", session, count)
        assert refl.stop() == 0
    finally:
        stop.set()
        first.stop(signal.SIGKILL)
        if second:
            second.stop()
    assert summary["sent"] == count and summary["received"] == count, \
        f"The sender must keep measuring through the exporter's faults: {summary}."
    for metric, field in (("received", "received"), ("lost", "lost"), ("late", "late")):
        assert list(values(got, f"stamp_packets_{metric}_total", **session).values()) \
            == [summary[field]], f"After the restart stamp_packets_{metric}_total must be " \
                                 f"the sender's {field} ({summary[field]})."
    reflected = values(got, "stamp_reflector_packets_reflected_total",
                       sender=f"{topo.sender.addr}:862")
    assert list(reflected.values()) == [count], \
        f"The reflector's cumulative count must come through the restart: {reflected}."
    assert snd.summary()["records_dropped"] == 0, "The queue must cover a one-second outage."
    malformed = list(values(got, "stamp_records_dropped_total", stage="malformed").values())[0]
    assert 0 < malformed <= flood[0], \
        f"The garbage reaching the second exporter must be counted as malformed ({malformed})."
    assert second.proc.poll() is None or second.proc.returncode == 0
    warned = [e["reason"] for e in second.logs() if e["event"] == "malformed_records"]
    assert "bad_magic" in warned and len(warned) == len(set(warned)), \
        f"Without --debug, each kind of garbage is logged once: {warned}."
