"""Statements of the docs that the code decides, checked against the code (fast layer)."""

import re
from pathlib import Path

import pytest

from stamp_bpf.sender import cli as sender_cli
from stamp_bpf.sender import service as sender_service

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_gives_the_shortest_interval_the_sender_accepts():
    floor_ms = float(re.search(r"\(down to ([\d.]+) ms", README).group(1))
    ok = sender_cli.parser().parse_args(["eth0", "10.0.0.2", "-i", str(floor_ms / 1000)])
    assert ok.interval == floor_ms / 1000
    with pytest.raises(SystemExit):
        sender_cli.parser().parse_args(["eth0", "10.0.0.2", "-i", str(floor_ms / 1000 * 0.9)])


def test_readme_gives_the_truth_tests_outlier_bound():
    bound_ns = int(re.search(r"^OUTLIER_NS = ([\d_]+)$", (ROOT / "tests" / "test_truth.py")
                             .read_text(), re.M).group(1))
    assert f"up to {bound_ns // 1000} µs off" in README, \
        f"README states the truth test's bound: one packet per run up to {bound_ns // 1000} µs."


def test_metrics_doc_gives_the_senders_batching():
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert f"one message per {sender_service.PUSH_BATCH}" in text.replace("\n", " ")
    assert f"per {sender_service.PUSH_EVERY_NS // 1_000_000} ms" in text


def test_cli_doc_has_no_planning_text():
    text = (ROOT / "docs" / "cli.md").read_text()
    assert "once they exist" not in text and "contract" not in text.lower()
