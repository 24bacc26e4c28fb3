"""The exporter's / page: per session and direction, the recent delay smoke as inline SVG.

In process: the history's interval percentiles and loss are exact against Prometheus'
histogram_quantile rule, and the SVG carries them; a page view copies under the lock
and draws outside it. Then a real stamp-exporter fed over ZeroMQ, its page rendered by
headless Chromium (Debian's package), the screenshot kept in the test's folder.
"""

import html.parser
import math
import os
import shutil
import subprocess
import time

import pytest

from stamp_bpf.common import histogram, logs, recordpipe, records
from stamp_bpf.exporter import page
from stamp_bpf.exporter.aggregator import Aggregator

from test_exporter import MS, ExporterProcess, R, L, sender_packet, folder  # noqa: F401
from test_exporter_prometheus import expected_quantile

BOUNDS = [10e-6 * 2 ** k for k in range(21)] + [math.inf]


class SvgAttrs(html.parser.HTMLParser):
    """The data- attributes of every <svg> of a page."""

    def __init__(self, text):
        super().__init__()
        self.svgs = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.svgs.append(dict(attrs))


def graph(svgs, **want):
    got = [s for s in svgs if all(s.get(f"data-{k}") == v for k, v in want.items())]
    assert len(got) == 1, f"One graph should match {want}: {len(got)} of {len(svgs)}."
    return got[0]


def interval(seq0, n_near3ms, n_near7ms, lost, counts0):
    """Records of one interval: replies with near_end 3 ms or 7 ms, far_end 12 ms, then losses."""
    recs, sent, recv, nlost = [], *counts0
    for i in range(n_near3ms + n_near7ms):
        sent, recv = sent + 1, recv + 1
        near = 3 * MS if i < n_near3ms else 7 * MS
        recs.append(sender_packet(seq0 + i, R, near, 12 * MS, (sent, recv, nlost, 0, 0, 0)))
    for i in range(lost):
        sent, nlost = sent + 1, nlost + 1
        recs.append(sender_packet(seq0 + 1000 + i, L, None, None, (sent, recv, nlost, 0, 0, 0)))
    return recs, (sent, recv, nlost)


@pytest.mark.unit
def test_history_points_and_svg_carry_the_intervals_values():
    agg = Aggregator(histogram.default_buckets(),
                     logs.configure("test", fmt="json", stream=open(os.devnull, "w")), node_name="node-a")
    first, counts = interval(0, 1, 0, 0, (0, 0, 0))
    agg.handle(records.encode(first), 1.0)
    agg.history.snapshot()                      # the baseline
    second, counts = interval(10, 60, 40, 10, counts)
    agg.handle(records.encode(second), 2.0)
    agg.history.snapshot()
    text = page.render(agg).decode()
    svgs = SvgAttrs(text).svgs
    assert len(svgs) == 3, "One sender session: three graphs (near_end, far_end, round_trip)."
    near = graph(svgs, direction="near_end", sender="10.0.0.1:862", reflector="10.0.0.2:862")
    cum = [0 if b < 0.003 else 60 if b < 0.007 else 100 for b in BOUNDS]
    assert math.isclose(float(near["data-median-seconds"]), expected_quantile(0.5, BOUNDS, cum), rel_tol=1e-6), (
        "The median of the interval should be histogram_quantile's, from the interval's replies only "
        "(the first interval's one reply is not in it).")
    assert math.isclose(float(near["data-p95-seconds"]), expected_quantile(0.95, BOUNDS, cum), rel_tol=1e-6)
    assert math.isclose(float(near["data-loss"]), 10 / 110, rel_tol=1e-6), "Loss: 10 lost of 110 judged."
    far = graph(svgs, direction="far_end")
    assert math.isclose(float(far["data-median-seconds"]), expected_quantile(
        0.5, BOUNDS, [0 if b < 0.012 else 100 for b in BOUNDS]), rel_tol=1e-6)
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), (
        "The page must need no script and no external asset.")
    assert "loss 9.1% of 110" in text, "Each point should say its loss in a hover title."


@pytest.mark.unit
def test_history_goes_with_the_session_and_is_bounded():
    agg = Aggregator(histogram.default_buckets(),
                     logs.configure("test", fmt="json", stream=open(os.devnull, "w")))
    recs, counts = interval(0, 1, 0, 0, (0, 0, 0))
    agg.handle(records.encode(recs), 1.0)
    for i in range(agg.history.points + 20):
        recs, counts = interval(i * 10, 1, 0, 0, counts)
        agg.handle(records.encode(recs), 1.0)
        agg.history.snapshot()
    (track,) = agg.history.tracks.values()
    assert len(track.points) == agg.history.points, "A session keeps a bounded number of points."
    agg.expire(1000.0)
    agg.history.snapshot()
    assert not agg.history.tracks, "A session's history should go with its series."


def test_page_does_not_hold_the_lock_while_drawing(monkeypatch):
    """Drawing happens after the copy: the lock is free while svg() runs."""
    agg = Aggregator(histogram.default_buckets(),
                     logs.configure("test", fmt="json", stream=open(os.devnull, "w")))
    recs, counts = interval(0, 5, 0, 0, (0, 0, 0))
    agg.handle(records.encode(recs), 1.0)
    agg.history.snapshot()
    recs, counts = interval(10, 5, 0, 0, counts)
    agg.handle(records.encode(recs), 1.0)
    agg.history.snapshot()
    held = []
    real = page.svg
    monkeypatch.setattr(page, "svg", lambda *a, **k: held.append(agg.lock.locked()) or real(*a, **k))
    page.render(agg)
    assert held and not any(held), "svg() should run outside the aggregator's lock."


CHROMIUM = shutil.which("chromium")
# Screenshots are kept here after the run (CI can collect the folder).
ARTIFACTS = os.environ.get("STAMP_TEST_ARTIFACTS",
                           os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                        "test-artifacts"))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed (scripts/setup.sh)")
@pytest.mark.timeout(120)
def test_chromium_renders_the_page(folder, tmp_path):
    exp = ExporterProcess(folder, "--history-interval", "1", "--node-name", "node-a")
    try:
        counts = (0, 0, 0)
        with recordpipe.RecordPusher(exp.endpoint) as pusher:
            for k in range(8):      # 8 intervals, the median growing 3 ms -> 7 ms, loss in the last
                recs, counts = interval(k * 200, 100 - k * 10, k * 10, 5 if k == 7 else 0, counts)
                assert pusher.push(recs)
                time.sleep(1.1)
        text = exp.get("/")[2]
        svgs = SvgAttrs(text).svgs
        near = graph(svgs, direction="near_end")
        assert int(near["data-points"]) >= 5, f"Several intervals should be drawn: {near}."
        assert float(near["data-loss"]) > 0, "The last interval lost packets."
        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "exporter-page.png")
        if os.path.exists(shot):
            os.remove(shot)
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900",
             f"--screenshot={shot}", f"http://127.0.0.1:{exp.port}/"],
            capture_output=True, text=True, timeout=90)
        assert os.path.exists(shot) and os.path.getsize(shot) > 10_000, (
            f"Chromium should save a screenshot of the page: {dom.stderr[-2000:]}")
        dumped = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'chromium2'}", "--dump-dom", f"http://127.0.0.1:{exp.port}/"],
            capture_output=True, text=True, timeout=90).stdout
        rendered = SvgAttrs(dumped).svgs
        assert len(rendered) == 3 and graph(rendered, direction="near_end")["data-sender"] == "10.0.0.1:862", (
            "Chromium's DOM should hold the three graphs of the session with their values.")
        print(f"\nscreenshot: {shot}")
    finally:
        exp.stop()
