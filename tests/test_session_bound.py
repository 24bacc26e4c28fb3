"""Reflector-side sessions are bounded: in the reflector and in the exporter.

Anyone can send to the reflector's port, with any source address and port, so
the sessions (and their series) the reflector and the exporter keep are
bounded; what does not fit is counted in
stamp_records_dropped_total{stage="session_limit"}.
"""

import shutil
import sys
import tempfile

import pytest

from stamp_bpf.common import recordpipe, records
from stamp_bpf.reflector.sessions import ReflectorSessions

from conftest import reflector
from test_exporter import ExporterProcess, key

BASE = 1_700_000_000 * 1_000_000_000


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="stb-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.unit
def test_the_reflectors_session_table_keeps_at_most_max_sessions():
    t = ReflectorSessions(max_sessions=2)
    assert t.get("10.0.0.1", 862)[1] and t.get("10.0.0.2", 862)[1]
    assert t.get("10.0.0.3", 862) == (None, False), "A third sender does not fit."
    assert t.get("10.0.0.3", 863) == (None, False)
    assert t.overflow == 2 and len(t) == 2
    s, new = t.get("10.0.0.1", 862)
    assert s is not None and not new, "Known senders go on being counted."


def refl_packet(sender_port, seq):
    return records.ReflectorPacket("10.0.0.1", sender_port, "10.0.0.2", 862, records.TS_BPF, 64,
                                   seq, BASE, BASE + 1000, BASE + 2000, seq)


def test_the_exporter_keeps_at_most_max_reflector_sessions(short_dir):
    exp = ExporterProcess(short_dir, "--max-reflector-sessions", "3")
    try:
        with recordpipe.RecordPusher(exp.endpoint) as pusher:
            pusher.push([refl_packet(1000 + i, 1) for i in range(5)])     # 5 senders, room for 3
            pusher.push([refl_packet(1000, 2), refl_packet(1004, 2)])    # one known, one not
            pusher.push([records.ServiceStats(records.ROLE_REFLECTOR, records.TS_BPF, True, 0,
                                              0, 0, 7, 42, dropped_sessions=11)])
        got = exp.wait_for("stamp_records_received_total", {}, 8)
        assert got[key("stamp_exporter_sessions", side="reflector")] == 3
        assert got[key("stamp_records_dropped_total", stage="session_limit")] == 3 + 11, \
            "Three records beyond the bound here, plus the eleven the reflector did not send."
        reflected = {dict(lab)["sender"]: v for (n, lab), v in got.items()
                     if n == "stamp_reflector_packets_reflected_total"}
        assert reflected == {"10.0.0.1:1000": 2, "10.0.0.1:1001": 1, "10.0.0.1:1002": 1}, \
            f"The first three senders have series, and only they: {reflected}"
        assert [e for e in exp.logs() if e["event"] == "sessions_full"], "A full table is logged."
    finally:
        exp.stop()


SEND = """
import socket, struct, sys
dst, n = sys.argv[1], int(sys.argv[2])
for port in range(40000, 40000 + n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.sendto(struct.pack("!I", port) + bytes(40), (dst, 862))
    s.close()
"""


def test_the_reflector_reflects_every_sender_but_records_at_most_max_sessions(
        topology, service, short_dir):
    topo = topology("direct")
    exp = ExporterProcess(short_dir)
    try:
        refl = reflector(service, topo, "--max-sessions", "3", "--zmq", exp.endpoint)
        topo.run(topo.sender, [sys.executable, "-c", SEND, topo.reflector.addr, "5"], check=True,
                 timeout=30)
        got = exp.wait_for("stamp_exporter_sessions", {"side": "reflector"}, 3, timeout=20)
        exp.wait_for("stamp_records_dropped_total", {"stage": "session_limit"}, 2, timeout=20)
        assert refl.stop() == 0
        summary = refl.events("summary")[-1]
        assert summary["sessions_overflow"] == 2, f"Two senders did not fit: {summary}"
        assert summary["counters"]["reflected"] == 5, "All five packets were reflected anyway."
        assert len(summary["sessions"]) == 3
        assert got[key("stamp_exporter_sessions", side="reflector")] == 3
    finally:
        exp.stop()
