"""--hist BINS FLOOR CEIL: edges, bin index, Prometheus buckets, validation, the histogram file."""

import argparse
import math
import threading

import pytest

from stamp_bpf.common import histfile, histogram

# The fast layer: no root, no namespaces, no BPF.
pytestmark = pytest.mark.unit


def test_default_layout_spans_316ns_to_31_6ms():
    lay = histogram.HistLayout(28, 25, 75)
    edges = lay.edges_seconds()
    assert len(edges) == 27, "28 bins have 27 finite edges."
    assert math.isclose(edges[0], 316.2277660e-9, rel_tol=1e-9), f"FLOOR 25 is 316 ns, got {edges[0]}."
    assert math.isclose(edges[-1], 31.6227766e-3, rel_tol=1e-9), f"CEIL 75 is 31.6 ms, got {edges[-1]}."
    ratios = {round(b / a, 9) for a, b in zip(edges, edges[1:])}
    assert len(ratios) == 1, "The regular bins must be log-spaced (a constant ratio)."
    assert lay.prometheus_buckets() == edges + [math.inf], "Buckets are the finite edges plus +Inf."


@pytest.mark.parametrize("delay_ns, index", [
    (-1_000_000, 0), (0, 0), (316, 0), (317, 1), (1_000, 3), (31_622_776, 26),
    (31_622_777, 27), (10**12, 27),
])
def test_bin_index(delay_ns, index):
    lay = histogram.HistLayout(28, 25, 75)
    assert lay.bin_index(delay_ns) == index, f"{delay_ns} ns belongs in bin {index}."
    lo, hi = lay.bin_edges_seconds(index)
    assert lo <= delay_ns / 1e9 < hi or (index == 0 and delay_ns < 0), \
        f"Bin {index} is [{lo}, {hi}) s and must hold {delay_ns} ns."


def test_three_bins_is_underflow_one_bin_overflow():
    lay = histogram.HistLayout(3, 30, 40)
    assert lay.edges_seconds() == [1e-6, 1e-5], "3 bins have exactly the FLOOR and CEIL edges."
    assert [lay.bin_index(n) for n in (999, 1000, 9999, 10000)] == [0, 1, 1, 2]


def test_default_exporter_buckets_are_10us_to_about_10s():
    b = histogram.default_buckets()
    assert b[0] == 10e-6 and 9 < b[-2] < 11 and b[-1] == math.inf, f"Got {b[0]} .. {b[-2]}."


@pytest.mark.parametrize("argv, message", [
    (["--hist", "2", "25", "75"], "BINS must be an integer from 3"),
    (["--hist", "x", "25", "75"], "BINS must be an integer"),
    (["--hist", "28", "75", "25"], "FLOOR (75) must be below CEIL (25)"),
    (["--hist", "28", "25", "nan"], "CEIL must be a number"),
    (["--hist", "28", "-5", "75"], "FLOOR must be a number from 0"),
    (["--histpath", "/tmp/x"], "--histpath needs --hist"),
])
def test_bad_hist_flags_end_in_one_clear_line(argv, message, capsys):
    parser = argparse.ArgumentParser(prog="stamp-sender")
    histogram.add_arguments(parser, histpath=True)
    with pytest.raises(SystemExit) as e:
        histogram.from_args(parser, parser.parse_args(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1], f"Expected '{message}' in {err}."


def test_good_hist_flags():
    parser = argparse.ArgumentParser()
    histogram.add_arguments(parser)
    assert histogram.from_args(parser, parser.parse_args([])) is None
    lay = histogram.from_args(parser, parser.parse_args(["--hist", "10", "20", "60.5"]))
    assert (lay.bins, lay.floor, lay.ceil) == (10, 20.0, 60.5)


def _parse(path):
    rows = [line.rstrip("\n").split("\t") for line in open(path) if not line.startswith("#")]
    return [(s, d, float(lo), float(hi), int(n)) for s, d, lo, hi, n in rows]


def test_histogram_file_lists_edges_and_counts_per_session(tmp_path):
    path = tmp_path / "sub" / "hist.tsv"
    f = histfile.HistogramFile(str(path), 5, 30, 60, interval=3600)
    for ns in (-4, 500, 5_000, 5_000, 10**9):
        f.observe("10.0.0.2:862", "near_end", ns)
    f.observe("10.0.0.3:862", "round_trip", 50_000)
    f.maybe_flush()
    assert not path.exists(), "maybe_flush must wait for the interval."
    assert f.flush() and path.exists()
    rows = _parse(path)
    a = [r for r in rows if r[0] == "10.0.0.2:862"]
    assert [r[4] for r in a] == [2, 2, 0, 0, 1], f"Counts per bin are wrong: {a}."
    assert a[0][2] == -math.inf and a[-1][3] == math.inf, "The outer bins are open-ended."
    assert math.isclose(a[1][2], 1e-6) and math.isclose(a[1][3], 1e-5), f"Bin 1 is 1..10 us: {a[1]}."
    b = [r for r in rows if r[0] == "10.0.0.3:862"]
    assert [r[4] for r in b] == [0, 0, 1, 0, 0] and b[0][1] == "round_trip"
    assert [p.name for p in path.parent.iterdir()] == ["hist.tsv"], "No temporary file may be left."


def test_ipv6_sessions_are_written_with_bracketed_addresses(tmp_path):
    from stamp_bpf.sender.session import SenderSession
    s6 = SenderSession("2001:db8::2", 862, "2001:db8::1", 862, 0, 1.0, 1.0, 1.0, 0)
    s4 = SenderSession("10.0.0.2", 862, "10.0.0.1", 862, 0, 1.0, 1.0, 1.0, 0)
    path = tmp_path / "hist.tsv"
    f = histfile.HistogramFile(str(path), 5, 30, 60, interval=3600)
    f.observe(s6.label, "near_end", 5_000)
    f.observe(s4.label, "near_end", 5_000)
    assert f.flush()
    sessions = sorted({r[0] for r in _parse(path)})
    assert sessions == ["10.0.0.2:862", "[2001:db8::2]:862"], \
        f"An IPv6 session is [addr]:port in the histogram file, beside IPv4 ones: {sessions}."
    assert all(r[0].rpartition(":")[2] == "862" for r in _parse(path)), \
        "The last colon of a session always separates its port."


def test_reader_never_sees_half_a_file(tmp_path):
    path = tmp_path / "hist.tsv"
    f = histfile.HistogramFile(str(path), 200, 25, 75, interval=0)
    for i in range(50):
        f.observe(f"10.0.{i}.1:862", "near_end", 1000 * i)
    f.flush()
    stop, bad = threading.Event(), []

    def read():
        while not stop.is_set():
            text = path.read_text()
            if not text.endswith("\n") or text.count("\n") != 3 + 50 * 200:
                bad.append(len(text))

    t = threading.Thread(target=read)
    t.start()
    for _ in range(30):
        f.flush()
    stop.set()
    t.join()
    assert not bad, f"A reader saw {len(bad)} partial files."


def test_unwritable_path_is_logged_once_not_raised(tmp_path):
    (tmp_path / "file").write_text("")
    events = []

    class Log:
        def error(self, event, **kw):
            events.append(event)

        info = error

    f = histfile.HistogramFile(str(tmp_path / "file" / "hist.tsv"), 5, 25, 75, log=Log())
    assert f.flush() is False and f.flush() is False
    assert events == ["histogram_write_failed"], f"One log line expected, got {events}."
