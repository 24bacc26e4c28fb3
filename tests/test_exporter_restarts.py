"""Sources that restart: the exported counters carry on from where the old process stopped.

A restarted sender, reflector, service process (same pid, as pid 1 in a container)
or supervisor counts from 0 again, while the exporter keeps running. Each
"process" below is its own ZeroMQ connection, closed when it "exits".
"""

from prometheus_client.parser import text_string_to_metric_families

from stamp_bpf.common import recordpipe, records

from test_exporter import MS, exporter_factory, folder, key, sender_packet  # noqa: F401

A = {"reflector": "10.0.0.2:862", "sender": "10.0.0.1:862"}
FAMILIES = ("sent", "received", "lost", "late", "duplicate", "reordered")
PID = 1         # every sender process of the pod is pid 1


def lifetime(n, restarts):
    """(messages, final counts) of one process lifetime with n test packets.

    Counts start from 0. Every 10th packet is lost, every 25th late, every 20th
    reordered, and every 30th has a duplicated reply; the reflector reflects every
    packet; ServiceStats come halfway and at the end; the supervisor reports
    `restarts` restarts one by one.
    """
    sent = received = lost = late = dup = reord = 0
    sender, reflector = [], []
    for seq in range(n):
        sent += 1
        reflector.append(records.ReflectorPacket(
            "10.0.0.1", 862, "10.0.0.2", 862, records.TS_BPF, 64, seq,
            1_795_000_000_000_000_000 + seq * 10 * MS, 1_795_000_000_000_000_000 + seq * 10 * MS
            + 3 * MS, 0, sent))
        if seq % 10 == 9:
            lost += 1
            sender.append(sender_packet(seq, records.OUTCOME_LOST, None, None,
                                        (sent, received, lost, late, dup, reord)))
            continue
        outcome = records.OUTCOME_LATE if seq % 25 == 24 else records.OUTCOME_RECEIVED
        late += outcome == records.OUTCOME_LATE
        received += outcome == records.OUTCOME_RECEIVED
        reord += seq % 20 == 3
        sender.append(sender_packet(seq, outcome, 3 * MS, 5 * MS,
                                    (sent, received, lost, late, dup, reord)))
        if seq % 30 == 11:
            dup += 1
            sender.append(sender_packet(seq, records.OUTCOME_DUPLICATE, 3 * MS, 5 * MS,
                                        (sent, received, lost, late, dup, reord)))
    counts = dict(zip(FAMILIES, (sent, received, lost, late, dup, reord)), reflected=n)
    msgs = [sender[i:i + 8] for i in range(0, len(sender), 8)]
    msgs += [reflector[i:i + 8] for i in range(0, len(reflector), 8)]
    msgs.append([records.SessionStats("10.0.0.2", 862, "10.0.0.1", 862, sent, received, lost,
                                      late, dup, reord, False)])
    for share in (n // 2, n):
        msgs.append([records.ServiceStats(records.ROLE_SENDER, records.TS_BPF, True, 1000,
                                          share // 10, share // 20, share, PID)])
    msgs += [[records.SupervisorStats("sender", True, r, 100 + r)] for r in range(restarts + 1)]
    counts.update(records_sent=n, service_queue=n // 10, ring_buffer=n // 20, restarts=restarts)
    return msgs, counts


def counters(exp):
    """{(sample name, labels): value} of every counter sample of one scrape."""
    out = {}
    for fam in text_string_to_metric_families(exp.scrape()):
        if fam.type == "counter":
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def expected(total):
    """The scrape samples of the summed lifetimes `total`."""
    want = {key(f"stamp_packets_{f}_total", **A): total[f] for f in FAMILIES}
    want[key("stamp_reflector_packets_reflected_total", sender=A["sender"],
             reflector=A["reflector"])] = total["reflected"]
    want[key("stamp_records_sent_total", role="sender")] = total["records_sent"]
    want[key("stamp_records_dropped_total", stage="service_queue")] = total["service_queue"]
    want[key("stamp_records_dropped_total", stage="ring_buffer")] = total["ring_buffer"]
    want[key("stamp_supervisor_restarts_total", service="sender")] = total["restarts"]
    return want


def test_counters_carry_on_over_restarts_the_scrapes_cannot_see(exporter_factory):
    exp = exporter_factory()
    # 110 packets, then a restart that counts to 150 (past 110) between two scrapes,
    # then one that counts to 40: the exported counters must be the sums.
    plan = [(110, 3), (150, 5), (40, 1)]
    total, received, scrapes = {}, 0, []
    for i, (n, restarts) in enumerate(plan):
        msgs, counts = lifetime(n, restarts)
        with recordpipe.RecordPusher(exp.endpoint) as pusher:   # one process, one connection
            for m in msgs:
                assert pusher.push(m), "The exporter is up, so nothing may be dropped."
        received += sum(len(m) for m in msgs)
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
        exp.wait_for("stamp_records_received_total", {}, received)
        scrapes.append(counters(exp))
        wrong = {f"{k[0]}{dict(k[1])}": (scrapes[-1].get(k), v)
                 for k, v in expected(total).items() if scrapes[-1].get(k) != v}
        assert not wrong, f"After {i} restarts the counters must be the sums of the " \
                          f"lifetimes; (got, want): {wrong}."
        if i == 0:
            assert not [e for e in exp.logs() if e["event"] == "source_restarted"], \
                "Counts that only grow within one process must not be taken for a restart."
    for before, after in zip(scrapes, scrapes[1:]):
        down = {k: (v, after.get(k)) for k, v in before.items() if not after.get(k, -1) >= v}
        assert not down, f"A counter went down, or vanished, across a restart: {down}."
    logged = [e for e in exp.logs() if e["event"] == "source_restarted"]
    sources = sorted(repr([e.get(k) for k in ("side", "role", "pid", "child")]) for e in logged)
    assert sources == sorted([repr(["sender", None, None, None]),
                              repr(["reflector", None, None, None]),
                              repr([None, "sender", PID, None]),
                              repr(["supervisor", None, None, "sender"])] * 2), \
        f"Each restart of each source must be logged once as source_restarted: {sources}."
    assert {e["service"] for e in logged} == {"exporter"}, "The log's service field is kept."
    first = [e for e in logged if e.get("side") == "sender"][0]
    assert (first["reflector"], first["before"]["sent"], first["now"]["sent"]) == \
        (A["reflector"], 110, 1), f"The event must name the session and its counts: {first}."


def test_any_count_going_down_is_a_restart(exporter_factory):
    """A new process whose first record the exporter sees has counted past the old
    `sent` (its first records were dropped, say) is still recognised when another
    count is below the old one: in a SessionStats record (session A) and in a
    SenderPacket record (session B)."""
    exp = exporter_factory()
    b = {"reflector": "10.0.0.3:863", "sender": A["sender"]}
    old = (5, 5, 0, 0, 0, 0)        # 5 sent, 5 received
    new = (7, 1, 6, 0, 0, 0)        # 7 sent, 1 received, 6 lost
    for counts in (old, new):
        with recordpipe.RecordPusher(exp.endpoint) as pusher:
            pusher.push([records.SessionStats("10.0.0.2", 862, "10.0.0.1", 862, *counts, False)])
            pusher.push([sender_packet(0, records.OUTCOME_RECEIVED, 3 * MS, 5 * MS, counts,
                                       reflector="10.0.0.3", port=863)])
    got = exp.wait_for("stamp_records_received_total", {}, 4)
    for session in (A, b):
        assert [got[key(f"stamp_packets_{f}_total", **session)]
                for f in ("sent", "received", "lost")] == [12, 6, 6], \
            f"Received going down means a new process: the counts of {session} must add up."
