"""stamp-exporter as a process: a synthetic record stream in, exact metrics out over HTTP.

The ExporterProcess harness here is shared by the other test_exporter_* files.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stamp_bpf.common import recordpipe, records

EXE = os.path.join(os.path.dirname(sys.executable), "stamp-exporter")
BASE = 1_795_000_000_000_000_000        # ns since the epoch, November 2026
MS = 1_000_000
US = 1_000


class ExporterProcess:
    """A real stamp-exporter on a random loopback port, logging JSON to a file."""

    def __init__(self, folder, *args, endpoint=None):
        self.endpoint = endpoint or f"ipc://{folder}/records.sock"
        self.logpath = os.path.join(folder, f"exporter-{time.monotonic_ns()}.log")
        self._log = open(self.logpath, "w")
        self.proc = subprocess.Popen(
            [EXE, "--listen", "127.0.0.1:0", "--zmq", self.endpoint, "--log-format", "json", *args],
            stdout=self._log, stderr=subprocess.STDOUT)
        started = self.wait_log("started", timeout=20)
        self.port = int(started["listen"].rsplit(":", 1)[1])

    def logs(self):
        with open(self.logpath) as f:
            return [json.loads(line) for line in f if line.startswith("{")]

    def wait_log(self, event, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.logs():
                if e.get("event") == event:
                    return e
            if self.proc.poll() is not None:
                raise AssertionError(f"stamp-exporter exited with {self.proc.returncode} before "
                                     f"logging {event!r}: {open(self.logpath).read()}")
            time.sleep(0.05)
        raise AssertionError(f"stamp-exporter did not log {event!r} within {timeout} s.")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()

    def scrape(self):
        return self.get("/metrics")[2]

    def samples(self):
        """{(sample name, sorted label items): value} of one scrape."""
        out = {}
        for fam in text_string_to_metric_families(self.scrape()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def wait_for(self, name, labels, value, timeout=10):
        """Scrape until sample `name{labels}` equals value; return the last samples."""
        key = (name, tuple(sorted(labels.items())))
        deadline = time.monotonic() + timeout
        while True:
            got = self.samples()
            if got.get(key) == value or time.monotonic() > deadline:
                assert got.get(key) == value, \
                    f"{name}{labels} should reach {value} within {timeout} s, it is {got.get(key)}."
                return got
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def folder():
    """A short temporary folder (ipc:// paths are limited to about 100 bytes)."""
    path = tempfile.mkdtemp(prefix="stx-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def exporter_factory(folder):
    started = []

    def start(*args, **kw):
        e = ExporterProcess(folder, *args, **kw)
        started.append(e)
        return e
    yield start
    for e in started:
        e.stop(signal.SIGKILL)


def sender_packet(seq, outcome, near_ns, far_ns, counters, reflector="10.0.0.2", port=862,
                  turnaround_ns=20 * US):
    """A SenderPacket whose delays are near_ns and far_ns (None: a lost packet, only T1)."""
    t1 = BASE + seq * 10 * MS
    if near_ns is None:
        return records.SenderPacket(reflector, port, "10.0.0.1", 862, outcome, False,
                                    records.TS_BPF, 0, seq, 0, t1, 0, 0, 0, 0, 0, *counters)
    t2 = t1 + near_ns
    t3 = t2 + turnaround_ns
    t4 = t3 + far_ns
    return records.SenderPacket(reflector, port, "10.0.0.1", 862, outcome, outcome == 0 and seq == 3,
                                records.TS_BPF, 254, seq, seq, t1, t2, t3, t4, 0x8001, 0x8001,
                                *counters)


R, L, LATE, DUP = (records.OUTCOME_RECEIVED, records.OUTCOME_LOST, records.OUTCOME_LATE,
                   records.OUTCOME_DUPLICATE)
SESSION_A = [  # (seq, outcome, near, far, (sent, received, lost, late, duplicates, reordered))
    (0, R, 3 * MS, 7 * MS, (1, 1, 0, 0, 0, 0)),
    (1, R, 3500 * US, 6500 * US, (2, 2, 0, 0, 0, 0)),
    (2, L, None, None, (4, 2, 1, 0, 0, 0)),
    (3, R, -200 * US, 13200 * US, (4, 3, 1, 0, 0, 1)),
    (4, LATE, 900 * MS, 900 * MS, (5, 3, 1, 1, 0, 1)),
    (3, DUP, 1 * MS, 1 * MS, (5, 3, 1, 1, 1, 1)),
]
A = {"reflector": "10.0.0.2:862", "sender": "10.0.0.1:862"}
B = {"reflector": "10.0.0.3:863", "sender": "10.0.0.1:862"}


def synthetic_stream():
    """Messages of every kind with hand-checked expectations (see test_synthetic_stream)."""
    a = [sender_packet(*row) for row in SESSION_A]
    b = [sender_packet(0, R, 40 * US, 60 * US, (1, 1, 0, 0, 0, 0), reflector="10.0.0.3", port=863)]
    stats = [records.SessionStats("10.0.0.2", 862, "10.0.0.1", 862, 7, 3, 2, 1, 1, 1, False)]
    refl = [records.ReflectorPacket("10.0.0.1", 862, "10.0.0.2", 862, records.TS_USER, 64, i,
                                    BASE + i * 10 * MS, BASE + i * 10 * MS + d, 0, i + 1)
            for i, d in enumerate((3 * MS, 3500 * US, -200 * US))]
    services = [records.ServiceStats(records.ROLE_SENDER, records.TS_BPF, True, 2500, 5, 7, 100, 11),
                records.ServiceStats(records.ROLE_SENDER, records.TS_BPF, False, 9000, 10, 0, 50, 12),
                records.ServiceStats(records.ROLE_REFLECTOR, records.TS_BPF, True, -1, 1, 0, 3, 13)]
    sup = [records.SupervisorStats("sender", True, 2, 11),
           records.SupervisorStats("reflector", False, 5, 0)]
    return [a[:3], a[3:], b, stats, refl, services, sup]


def key(name, **labels):
    return (name, tuple(sorted(labels.items())))


def test_synthetic_stream_gives_exact_metrics(exporter_factory):
    exp = exporter_factory()
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        for msg in synthetic_stream():
            assert pusher.push(msg), "The exporter is up, so nothing may be dropped."
    n = sum(len(m) for m in synthetic_stream())
    got = exp.wait_for("stamp_records_received_total", {}, n)

    def val(name, **labels):
        k = key(name, **labels)
        assert k in got, f"The scrape has no {name}{labels}."
        return got[k]

    # Counters follow the latest cumulative values, the SessionStats record last.
    for name, want in (("sent", 7), ("received", 3), ("lost", 2), ("late", 1),
                       ("duplicate", 1), ("reordered", 1)):
        assert val(f"stamp_packets_{name}_total", **A) == want, \
            f"stamp_packets_{name}_total of session A must be {want}."
    assert val("stamp_packets_sent_total", **B) == 1, "Session B is its own series."
    assert val("stamp_session_info", **A, timestamping="bpf") == 1, \
        "The session's timestamping (bpf or user) must be exported as a label."
    # Received and late packets, as in the sender's summary; not lost ones, not duplicates:
    # near 3, 3.5, -0.2, 900 ms; far 7, 6.5, 13.2, 900 ms; round trip 10, 10, 13, 1800 ms.
    # Delays >= 0 in stamp_delay_seconds, |d| of negative ones in stamp_delay_negative_seconds.
    for d, total, n_neg, neg_sum, last, jitter_us in (
            ("near_end", 0.9063, 1, 0.0002, 0.9, 56506.7626953125),
            ("far_end", 0.9267, 0, 0.0, 0.9, 55845.0439453125),
            ("round_trip", 1.833, 0, 0.0, 1.8, 111863.28125)):
        lab = dict(A, direction=d)
        pos_n, neg_n = (val("stamp_delay_seconds_count", **lab),
                        val("stamp_delay_negative_seconds_count", **lab))
        assert (pos_n, neg_n) == (4 - n_neg, n_neg), \
            f"{d}: the 3 received packets and the late one count, the duplicate does not; " \
            f"{n_neg} of them negative."
        pos_sum = val("stamp_delay_seconds_sum", **lab)
        assert math.isclose(val("stamp_delay_negative_seconds_sum", **lab), neg_sum, abs_tol=1e-12)
        assert math.isclose(pos_sum - neg_sum, total, abs_tol=1e-9), \
            f"{d}: the signed sum (positive sum minus negative magnitudes) must be {total} s."
        assert math.isclose(val("stamp_delay_last_seconds", **lab), last, abs_tol=1e-12), \
            f"{d}: the last delay is {last} s."
        assert math.isclose(val("stamp_jitter_seconds", **lab), jitter_us * 1e-6, rel_tol=1e-9), \
            f"{d}: RFC 3550 jitter of this sequence is {jitter_us} us."
    near = dict(A, direction="near_end")
    buckets = [(le, val("stamp_delay_seconds_bucket", **near, le=le))
               for le in ("1e-05", "0.00256", "0.00512", "+Inf")]
    assert buckets == [("1e-05", 0), ("0.00256", 0), ("0.00512", 2), ("+Inf", 3)], \
        f"near_end buckets: 3 and 3.5 ms at le=0.00512, 900 ms in +Inf; got {buckets}."
    far_b = dict(B, direction="far_end")
    assert val("stamp_delay_seconds_bucket", **far_b, le="4e-05") == 0 and \
        val("stamp_delay_seconds_bucket", **far_b, le="8e-05") == 1, "60 us falls in (40 us, 80 us]."
    # Reflector side.
    rs = {"sender": "10.0.0.1:862", "reflector": "10.0.0.2:862"}
    assert val("stamp_reflector_packets_reflected_total", **rs) == 3
    assert val("stamp_reflector_session_info", **rs, timestamping="user") == 1
    rn = dict(rs, direction="near_end")
    assert val("stamp_reflector_delay_seconds_count", **rn) == 2
    assert math.isclose(val("stamp_reflector_delay_seconds_sum", **rn), 0.0065, abs_tol=1e-12)
    assert val("stamp_reflector_delay_negative_seconds_count", **rn) == 1
    assert math.isclose(val("stamp_reflector_delay_negative_seconds_sum", **rn), 0.0002,
                        abs_tol=1e-12)
    # Health.
    assert val("stamp_records_dropped_total", stage="service_queue") == 16, \
        "Queue drops are summed over the three processes: 5 + 10 + 1."
    assert val("stamp_records_dropped_total", stage="ring_buffer") == 7
    assert val("stamp_records_sent_total", role="sender") == 150, "Records sent: 100 + 50."
    assert val("stamp_records_sent_total", role="reflector") == 3
    assert val("stamp_records_dropped_total", stage="malformed") == 0
    assert val("stamp_clock_synchronized", role="sender") == 0, \
        "One of the two senders is not synchronized, so the role is not."
    assert val("stamp_clock_synchronized", role="reflector") == 1
    assert math.isclose(val("stamp_clock_estimated_error_seconds", role="sender"), 9e-6), \
        "The sender role reports its largest clock error."
    assert key("stamp_clock_estimated_error_seconds", role="reflector") not in got, \
        "An unknown clock error (-1) must not be exported as a number."
    assert val("stamp_supervisor_up", service="sender") == 1
    assert val("stamp_supervisor_up", service="reflector") == 0
    assert val("stamp_supervisor_restarts_total", service="reflector") == 5
    assert val("stamp_build_info", version=__import__("stamp_bpf").__version__) == 1
    assert val("stamp_exporter_sessions", side="sender") == 2


def test_promtool_accepts_the_scrape(exporter_factory):
    exp = exporter_factory()
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        for msg in synthetic_stream():
            pusher.push(msg)
    exp.wait_for("stamp_exporter_sessions", {"side": "reflector"}, 1)
    r = subprocess.run(["promtool", "check", "metrics"], input=exp.scrape(), text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        f"promtool check metrics must report no problem; it said: {r.stdout}{r.stderr}"


def test_idle_sessions_are_removed(exporter_factory):
    exp = exporter_factory("--idle-timeout", "1")
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        pusher.push(synthetic_stream()[0])
        pusher.push(synthetic_stream()[5])     # three processes' ServiceStats
        pusher.push([records.SessionStats("10.0.0.2", 862, "10.0.0.1", 862, 7, 3, 2, 1, 1, 1, True)])
        exp.wait_for("stamp_exporter_sessions", {"side": "sender"}, 1)
        time.sleep(2.5)
        got = exp.samples()
    assert not [k for k in got if k[0].startswith("stamp_clock_")], \
        "Services silent for longer than --idle-timeout must have no clock series left."
    assert got[key("stamp_records_dropped_total", stage="service_queue")] == 16 and \
        got[key("stamp_records_sent_total", role="sender")] == 150, \
        "The counts of expired processes must stay in the totals, or the counters would go down."
    assert not [k for k in got if k[0].startswith("stamp_packets_") or k[0].startswith("stamp_delay")], \
        "A session silent for longer than --idle-timeout must have no series left."
    assert got[key("stamp_exporter_sessions", side="sender")] == 0
    assert any(e["event"] == "session_removed" and e["reflector"] == "10.0.0.2:862"
               for e in exp.logs()), "Removing a session must be logged."
    ended = [e for e in exp.logs() if e["event"] == "session_ended"]
    assert [(e["reflector"], e["sent"], e["lost"]) for e in ended] == [("10.0.0.2:862", 7, 2)], \
        f"The end of a session must be logged once with its counts: {ended}."


def test_hist_flag_sets_the_bucket_bounds(exporter_factory):
    exp = exporter_factory("--hist", "5", "30", "60")
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        pusher.push(synthetic_stream()[2])   # session B: near 40 us, far 60 us
    got = exp.wait_for("stamp_exporter_sessions", {"side": "sender"}, 1)
    les = sorted({dict(k[1])["le"] for k in got if k[0] == "stamp_delay_seconds_bucket"},
                 key=float)
    assert les == ["1e-06", "1e-05", "0.0001", "0.001", "+Inf"], \
        f"--hist 5 30 60 means edges 1 us, 10 us, 100 us, 1 ms, then +Inf; got {les}."
    assert got[key("stamp_delay_seconds_bucket", **B, direction="near_end", le="1e-05")] == 0
    assert got[key("stamp_delay_seconds_bucket", **B, direction="near_end", le="0.0001")] == 1


def test_healthz_index_and_unknown_paths(exporter_factory):
    exp = exporter_factory()
    assert exp.get("/healthz")[::2] == (200, "ok\n"), "/healthz must answer 200 ok."
    status, ctype, _ = exp.get("/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), f"Content-Type {ctype}."
    assert "/metrics" in exp.get("/")[2]
    with pytest.raises(urllib.error.HTTPError) as e:
        exp.get("/nope")
    assert e.value.code == 404


def test_sigterm_stops_cleanly_and_removes_the_ipc_socket(exporter_factory, folder):
    exp = exporter_factory()
    assert os.path.exists(f"{folder}/records.sock")
    assert exp.stop() == 0, "SIGTERM must end stamp-exporter with status 0."
    assert exp.logs()[-1]["event"] == "stopped"
    assert not os.path.exists(f"{folder}/records.sock"), "The ipc socket file must be removed."


def _busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("args, message", [
    (["--listen", "8080"], "--listen wants HOST:PORT"),
    (["--listen", "127.0.0.1:99999"], "--listen wants HOST:PORT"),
    (["--hist", "2", "25", "75"], "BINS must be an integer from 3"),
    (["--hist", "28", "75", "25"], "must be below CEIL"),
    (["--idle-timeout", "0"], "--idle-timeout must be a positive number"),
    (["--zmq", "bogus://x"], "cannot bind 'bogus://x'"),
    (["--listen", "127.0.0.1:{busy}"], "cannot listen on 127.0.0.1:"),
])
def test_bad_flags_end_in_one_clear_line(args, message, folder):
    busy = _busy_port()
    try:
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in args]
        if "--zmq" not in args:
            args += ["--zmq", f"ipc://{folder}/r.sock"]
        r = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and message in lines[-1], \
        f"stamp-exporter {' '.join(args)} must fail with '{message}'; stderr was {r.stderr!r}."
    assert len([x for x in lines if "error" in x]) == 1 and "Traceback" not in r.stderr, \
        f"The failure must be one line, not a traceback: {r.stderr!r}."


def monotonic_samples(text):
    """{(sample, labels): value} of the counter, histogram and summary samples of a scrape."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.type in ("counter", "histogram", "summary"):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_no_counter_or_histogram_sample_ever_decreases_with_negative_delays(exporter_factory):
    """Clocks drift apart, then step: one-way delays go from +3 ms to -5 ms. Scraped after
    every batch, no counter, bucket, _count or _sum (of a histogram or a summary) may go
    down: rate() would see a reset."""
    exp = exporter_factory()
    previous, seen_negative, seq = {}, False, 0
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        for batch in range(8):
            near = [3 * MS - (batch * 4 + i) * 250 * US for i in range(4)]    # 3 ms .. -4.75 ms
            snd, refl = [], []
            for d in near:
                seq += 1
                snd.append(sender_packet(seq, R, d, 2 * MS - d, (seq, seq, 0, 0, 0, 0)))
                refl.append(records.ReflectorPacket("10.0.0.1", 862, "10.0.0.2", 862,
                                                    records.TS_BPF, 64, seq, BASE + seq * MS,
                                                    BASE + seq * MS + d, 0, seq))
            pusher.push(snd)
            pusher.push(refl)
            exp.wait_for("stamp_records_received_total", {}, 2 * seq)
            now = monotonic_samples(exp.scrape())
            for k, v in previous.items():
                assert now.get(k, 0) >= v, f"{k[0]}{dict(k[1])} went down from {v} to {now.get(k)}."
            seen_negative |= any(k[0] == "stamp_delay_negative_seconds_count" and v > 0
                                 for k, v in now.items())
            previous = now
    assert seen_negative, "The stream must have gone negative for this test to mean anything."
    near = dict(A, direction="near_end")
    total = (previous[key("stamp_delay_seconds_sum", **near)]
             - previous[key("stamp_delay_negative_seconds_sum", **near)])
    count = (previous[key("stamp_delay_seconds_count", **near)]
             + previous[key("stamp_delay_negative_seconds_count", **near)])
    want = sum(3 * MS - k * 250 * US for k in range(32)) / 1e9
    assert count == 32 and math.isclose(total, want, abs_tol=1e-9), \
        f"The documented signed mean's parts: {count} delays summing to {total} s, want {want} s."


def status_of(exp, path):
    try:
        return exp.get(path)[0]
    except urllib.error.HTTPError as e:
        return e.code


def test_healthz_fails_when_the_service_stops_reporting(exporter_factory):
    """--service-timeout 6: /healthz and /healthz/service answer 503 before the first
    ServiceStats and once none came for 6 s (a stuck sender), /healthz/exporter stays 200;
    a new record heals it."""
    exp = exporter_factory("--service-timeout", "6")
    stats = [records.ServiceStats(records.ROLE_SENDER, records.TS_BPF, True, 0, 0, 0, 1, 77)]
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        assert [status_of(exp, p) for p in ("/healthz", "/healthz/service", "/healthz/exporter")] \
            == [503, 503, 200], "Until the service's first record, it is not known to be alive."
        deadline, n = time.monotonic() + 9, 0
        while time.monotonic() < deadline:         # a live service: a record every 1 s
            pusher.push(stats)
            n += 1
            time.sleep(1)
            assert status_of(exp, "/healthz") == 200, "A reporting service keeps /healthz at 200."
        time.sleep(7)                              # the service is stuck: no record for 7 s
        assert status_of(exp, "/healthz/service") == 503
        assert status_of(exp, "/healthz") == 503, "/healthz covers the service too."
        assert status_of(exp, "/healthz/exporter") == 200, \
            "The exporter itself is fine: its own probe must not restart it."
        with pytest.raises(urllib.error.HTTPError) as e:
            exp.get("/healthz")
        assert b"no health record from the service" in e.value.read()
        pusher.push(stats)
        exp.wait_for("stamp_records_received_total", {}, n + 1)
        assert status_of(exp, "/healthz") == 200, "A record from the service heals /healthz."


@pytest.mark.parametrize("value", ["-1", "3", "nan"])
def test_service_timeout_must_exceed_the_report_interval(folder, value):
    res = subprocess.run([EXE, "--service-timeout", value, "--zmq", f"ipc://{folder}/x.sock"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith(
        "stamp-exporter: error: --service-timeout"), res.stderr
