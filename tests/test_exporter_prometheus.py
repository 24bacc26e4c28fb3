"""A real Prometheus server scrapes stamp-exporter on loopback; its HTTP API gives the values back.

Quantiles are checked against Prometheus' own rule for histogram_quantile:
linear interpolation inside the bucket that holds the rank.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from stamp_bpf.common import recordpipe, records

from test_exporter import MS, US, A, exporter_factory, folder, sender_packet  # noqa: F401

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian package prometheus is not installed "
                                                           "(scripts/setup.sh installs it)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """A real Prometheus scraping `target_ports` on loopback every second, evaluating
    `rule_files` every second."""

    def __init__(self, folder, target_ports, rule_files=()):
        self.port = free_port()
        ports = [target_ports] if isinstance(target_ports, int) else target_ports
        config = os.path.join(folder, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    f"rule_files: {json.dumps([str(r) for r in rule_files])}\n"
                    "scrape_configs:\n  - job_name: stamp\n    static_configs:\n"
                    f"      - targets: {json.dumps([f'127.0.0.1:{p}' for p in ports])}\n")
        self.log = open(os.path.join(folder, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder}/tsdb",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def api(self, path):
        """The `data` of a GET on the HTTP API, e.g. api("alerts")."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", f"Prometheus answered {path} with {body}"
        return body["data"]

    def query(self, expr):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", f"Prometheus rejected {expr}: {body}"
        return {tuple(sorted(x["metric"].items())): float(x["value"][1]) for x in body["data"]["result"]}

    def wait_value(self, expr, want, timeout=60):
        """Poll until expr has one series equal to want (1e-9 relative); return its value."""
        deadline, got = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {open(self.log.name).read()[-2000:]}")
            try:
                got = self.query(expr)
            except OSError:
                got = None          # not listening yet
            if got and len(got) == 1 and math.isclose(list(got.values())[0], want, rel_tol=1e-9):
                return want
            time.sleep(0.5)
        raise AssertionError(f"Prometheus should return {want} for {expr}; last answer {got}.")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def expected_quantile(q, bounds, counts):
    """Prometheus' histogram_quantile for cumulative `counts` at upper `bounds` (+Inf last)."""
    rank = q * counts[-1]
    for i, (b, c) in enumerate(zip(bounds, counts)):
        if c >= rank:
            lower = bounds[i - 1] if i else 0.0
            below = counts[i - 1] if i else 0
            return lower + (b - lower) * (rank - below) / (c - below)
    raise AssertionError("rank beyond +Inf")


def test_prometheus_scrapes_quantiles_and_loss(exporter_factory, folder):
    exp = exporter_factory()
    # 60 packets near_end 3 ms, 40 at 7 ms; far_end all 12 ms; then 7 lost.
    stream, n = [], 0
    for i in range(100):
        near = 3 * MS if i < 60 else 7 * MS
        n += 1
        stream.append(sender_packet(i, records.OUTCOME_RECEIVED, near, 12 * MS, (n, n, 0, 0, 0, 0)))
    for i in range(100, 107):
        n += 1
        stream.append(sender_packet(i, records.OUTCOME_LOST, None, None, (n, 100, n - 100, 0, 0, 0)))
    with recordpipe.RecordPusher(exp.endpoint) as pusher:
        assert pusher.push(stream)
    exp.wait_for("stamp_records_received_total", {}, 107)

    prom = PrometheusServer(folder, exp.port)
    try:
        sel = 'reflector="10.0.0.2:862",sender="10.0.0.1:862"'
        prom.wait_value(f"stamp_packets_lost_total{{{sel}}}", 7)
        prom.wait_value(f"stamp_packets_sent_total{{{sel}}}", 107)
        prom.wait_value(f"stamp_packets_received_total{{{sel}}}", 100)
        bounds = [10e-6 * 2 ** k for k in range(21)] + [math.inf]
        near = [0 if b < 0.003 else 60 if b < 0.007 else 100 for b in bounds]
        for q in (0.5, 0.9, 0.99):
            want = expected_quantile(q, bounds, near)
            prom.wait_value(f'histogram_quantile({q}, stamp_delay_seconds_bucket{{{sel},'
                            f'direction="near_end"}})', want)
        assert math.isclose(expected_quantile(0.5, bounds, near), 0.00256 + 0.00256 * 50 / 60), \
            "The median falls in (2.56 ms, 5.12 ms], five sixths of the way."
        prom.wait_value(f'stamp_delay_seconds_sum{{{sel},direction="far_end"}}', 1.2)
        up = prom.query('up{job="stamp"}')
        assert list(up.values()) == [1.0], f"Prometheus must see the exporter up: {up}."
    finally:
        prom.stop()


SIGNED_MEAN = (  # docs/metrics.md, "mean signed one-way delay (forward)"
    '(rate(stamp_delay_seconds_sum{direction="near_end"}[5m]) - '
    'rate(stamp_delay_negative_seconds_sum{direction="near_end"}[5m]))'
    ' / (rate(stamp_delay_seconds_count{direction="near_end"}[5m]) + '
    'rate(stamp_delay_negative_seconds_count{direction="near_end"}[5m]))')
NEGATIVE_SHARE = (
    'rate(stamp_delay_negative_seconds_count{direction="near_end"}[5m])'
    ' / (rate(stamp_delay_seconds_count{direction="near_end"}[5m]) + '
    'rate(stamp_delay_negative_seconds_count{direction="near_end"}[5m]))')


def test_the_documented_signed_mean_is_right_when_clocks_disagree(exporter_factory, folder):
    """Every second, three replies with forward delays +2 ms, -4 ms and -1 ms (the
    reflector's clock behind): Prometheus must give the documented signed mean, -1 ms,
    and the share of negative delays, 2/3; and see no counter reset on the way."""
    exp = exporter_factory()
    prom = PrometheusServer(folder, exp.port)
    try:
        n = 0
        deadline = time.monotonic() + 60
        with recordpipe.RecordPusher(exp.endpoint) as pusher:
            while True:
                batch = []
                for d in (2 * MS, -4 * MS, -1 * MS):
                    n += 1
                    batch.append(sender_packet(n, records.OUTCOME_RECEIVED, d, 5 * MS,
                                               (n, n, 0, 0, 0, 0)))
                pusher.push(batch)
                time.sleep(1)
                mean = prom.query(SIGNED_MEAN)
                if len(mean) == 1 and not math.isnan(list(mean.values())[0]) and n >= 15:
                    break
                assert time.monotonic() < deadline, f"Prometheus never computed the mean: {mean}"
            assert math.isclose(list(mean.values())[0], -0.001, rel_tol=1e-6), \
                f"The signed mean of +2, -4, -1 ms is -1 ms; Prometheus says {mean}."
            share = list(prom.query(NEGATIVE_SHARE).values())[0]
            assert math.isclose(share, 2 / 3, rel_tol=1e-6), f"Two of three are negative: {share}"
            resets = prom.query('sum(resets(stamp_delay_seconds_sum[5m])) + '
                                'sum(resets(stamp_delay_negative_seconds_sum[5m]))')
            assert list(resets.values()) == [0.0], f"No _sum may ever look reset: {resets}"
    finally:
        prom.stop()
