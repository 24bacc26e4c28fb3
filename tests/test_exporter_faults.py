"""stamp-exporter under faults: started late, killed and restarted mid-stream, flooded with garbage."""

import os
import random
import signal
import threading
import time

import zmq

from stamp_bpf.common import recordpipe, records

from test_exporter import MS, SESSION_A, A, exporter_factory, folder, sender_packet  # noqa: F401


class Feeder(threading.Thread):
    """A stand-in sender: one received packet every `period` s, with cumulative counters."""

    def __init__(self, endpoint, period=0.004):
        super().__init__(daemon=True)
        self.pusher = recordpipe.RecordPusher(endpoint)
        self.period = period
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        while not self.stop.is_set():
            n = self.sent + 1
            self.pusher.push([sender_packet(self.sent, records.OUTCOME_RECEIVED, 3 * MS, 5 * MS,
                                            (n, n, 0, 0, 0, 0))])
            self.sent = n
            time.sleep(self.period)

    def finish(self):
        self.stop.set()
        self.join(5)
        n = self.sent
        self.pusher.push([records.SessionStats("10.0.0.2", 862, "10.0.0.1", 862,
                                               n, n, 0, 0, 0, 0, True)])
        return n


def test_exporter_started_after_the_services_gets_the_queued_records(exporter_factory, folder):
    endpoint = f"ipc://{folder}/records.sock"
    with recordpipe.RecordPusher(endpoint) as pusher:
        for row in SESSION_A:
            assert pusher.push([sender_packet(*row)]), "With no exporter, records must queue."
        assert not os.path.exists(f"{folder}/records.sock")
        exp = exporter_factory(endpoint=endpoint)
        got = exp.wait_for("stamp_records_received_total", {}, len(SESSION_A))
    assert got[("stamp_packets_sent_total", tuple(sorted(A.items())))] == 5, \
        "Records queued before the exporter started must all be aggregated."


def test_kill_and_restart_mid_stream_keeps_counters_exact(exporter_factory, folder):
    endpoint = f"ipc://{folder}/records.sock"
    first = exporter_factory(endpoint=endpoint)
    feeder = Feeder(endpoint)
    feeder.start()
    try:
        first.wait_for("stamp_exporter_sessions", {"side": "sender"}, 1)
        time.sleep(0.3)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        time.sleep(0.5)                                  # the feeder keeps measuring meanwhile
        second = exporter_factory(endpoint=endpoint)
        second.wait_for("stamp_exporter_sessions", {"side": "sender"}, 1)
        time.sleep(0.3)
    finally:
        sent = feeder.finish()
    got = second.wait_for("stamp_packets_sent_total", A, sent)
    assert got[("stamp_packets_received_total", tuple(sorted(A.items())))] == sent, \
        "After a restart the counters must equal the service's cumulative counts."
    assert feeder.pusher.dropped == 0, \
        f"The queue holds 10,000 messages; nothing may be dropped in a 1 s outage ({feeder.pusher.dropped})."
    near = dict(A, direction="near_end")
    count = got[("stamp_delay_seconds_count", tuple(sorted(near.items())))]
    assert 0 < count <= sent, f"The restarted exporter's histogram counts what it received ({count})."
    feeder.pusher.close()


def test_garbage_flood_is_counted_and_the_exporter_keeps_serving(exporter_factory):
    exp = exporter_factory("--debug")
    rnd = random.Random(7)
    good = records.encode([sender_packet(*SESSION_A[0])])
    crafted = {  # one of each reason
        "bad_magic": b"XX" + good[2:],
        "unknown_version": good[:2] + b"\x07" + good[3:],
        "unknown_kind": good[:3] + b"\x63" + good[4:],
        "bad_length": good + b"\x00",
        "empty": good[:4] + b"\x00\x00" + good[6:8],
    }
    bad_outcome = records.encode([sender_packet(*SESSION_A[0])._replace(outcome=9)])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 2000
    sock.connect(exp.endpoint)
    garbage = 0
    try:
        for i in range(3000):
            msg = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 200)))
            if msg.startswith(b"SB"):
                continue
            sock.send(msg)
            garbage += 1
            if i % 500 == 0:
                sock.send(good)
                assert exp.get("/healthz")[0] == 200, "The exporter must keep serving under a flood."
        for msg in crafted.values():
            sock.send(msg)
        sock.send(bad_outcome)
        sock.send_multipart([good, b"trailing frame"])
        sock.send(good)
    finally:
        sock.close()
        ctx.term()
    malformed = garbage + len(crafted) + 1 + 1
    got = exp.wait_for("stamp_records_dropped_total", {"stage": "malformed"}, malformed)
    assert got[("stamp_records_received_total", ())] == 6 + 1 + 1, \
        "Valid messages between the garbage must all be aggregated."
    logged = [e for e in exp.logs() if e["event"] == "malformed_records"]
    reasons = [e["reason"] for e in logged if e["level"] == "warning"]
    assert sorted(reasons) == sorted(set(reasons)), f"Each reason must be warned once: {reasons}."
    assert len(logged) == malformed, \
        f"With --debug every malformed message is logged: {len(logged)} of {malformed}."
    assert set(crafted) | {"bad_outcome"} <= set(reasons), f"Every reason must be logged: {reasons}."
    assert exp.proc.poll() is None, "The exporter must still run."
