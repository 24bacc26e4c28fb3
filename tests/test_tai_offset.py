"""--timestamp-format ptp with the kernel's TAI offset at 0: a loud warning and a metric.

PTP timestamps are TAI; the kernel's offset is 0 until chrony, phc2sys or ntpd
sets it, and the timestamps are then 37 s off without a word. The service says
so at start, and the exporter exports stamp_ptp_tai_offset_missing{role}.
"""

import shutil
import tempfile

import pytest

from stamp_bpf.common import clock, recordpipe, records

from conftest import reflector
from test_exporter import ExporterProcess, key


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="stt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.unit
@pytest.mark.parametrize("ptp,tai,problem", [(True, 0, True), (True, 37, False), (False, 0, False)])
def test_only_ptp_timestamps_with_a_zero_offset_are_a_problem(ptp, tai, problem):
    got = clock.tai_offset_problem(ptp, clock.ClockState(True, 1e-6, tai))
    assert (got is not None) is problem
    if got:
        assert "leapsectz right/UTC" in got and "phc2sys" in got, "The warning says how to fix it."


def stats(role, pid, ptp, tai):
    return records.ServiceStats(role, records.TS_BPF, True, 1000, 0, 0, 1, pid,
                                ptp_format=ptp, tai_offset_s=tai)


def test_the_exporter_flags_a_ptp_service_without_a_tai_offset(short_dir):
    exp = ExporterProcess(short_dir)
    try:
        with recordpipe.RecordPusher(exp.endpoint) as pusher:
            pusher.push([stats(records.ROLE_SENDER, 10, True, 0),
                         stats(records.ROLE_REFLECTOR, 11, True, 37),
                         stats(records.ROLE_REFLECTOR, 12, False, 0)])
        got = exp.wait_for("stamp_records_received_total", {}, 3)
        assert got[key("stamp_ptp_tai_offset_missing", role="sender")] == 1
        assert got[key("stamp_ptp_tai_offset_missing", role="reflector")] == 0, \
            "An NTP-format service does not need the offset; the PTP one has 37 s."
        assert got[key("stamp_clock_tai_offset_seconds", role="sender")] == 0
    finally:
        exp.stop()


def test_a_ptp_reflector_warns_at_start_and_in_its_metrics(topology, service, short_dir):
    """On this host's real clock: with the offset at 0 (no chrony/ptp4l setting it, the
    usual case in a lab) the warning and metric must be there; with one, they must not."""
    tai = clock.read().tai_offset_s
    topo = topology("direct")
    exp = ExporterProcess(short_dir)
    try:
        refl = reflector(service, topo, "--timestamp-format", "ptp", "--zmq", exp.endpoint)
        warned = refl.events("tai_offset_missing")
        exp.wait_for("stamp_ptp_tai_offset_missing", {"role": "reflector"}, int(tai == 0),
                     timeout=20)
        assert bool(warned) is (tai == 0), f"TAI offset {tai}: warning {warned}"
        if warned:
            assert warned[0]["level"] == "warning" and "37 s" in warned[0]["reason"]
        refl.stop()
    finally:
        exp.stop()
