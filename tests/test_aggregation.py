"""The exporter's aggregation in process (fast layer): records in, a scrape out.

The same Aggregator the exporter runs, fed encoded messages and rendered with
its own metrics(), parsed back with prometheus-client's parser: cumulative
counters across restarts of their source, delays, the session bound, the
pipeline counts. No process, socket or root.
"""

import math

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from stamp_bpf.common import histogram, records
from stamp_bpf.exporter.aggregator import Aggregator
from stamp_bpf.exporter.cumulative import CumulativeCounts
from stamp_bpf.supervisor import commands, config

pytestmark = pytest.mark.unit

MS = 1_000_000
BASE = 1_700_000_000 * 1_000_000_000
A = (("reflector", "10.0.0.2:862"), ("sender", "10.0.0.1:862"))


def aggregator(**kw):
    return Aggregator(histogram.default_buckets(), structlog.get_logger(), **kw)


def packet(seq, counts, near=3 * MS, far=7 * MS, outcome=records.OUTCOME_RECEIVED):
    t1 = BASE + seq * 10 * MS
    t2, t3 = t1 + near, t1 + near + 20_000
    return records.SenderPacket("10.0.0.2", 862, "10.0.0.1", 862, outcome, False, records.TS_BPF,
                                254, seq, seq, t1, t2, t3, t3 + far, 0, 0, *counts)


def feed(agg, *batches, now=1.0):
    for batch in batches:
        agg.handle(records.encode(batch), now)


def scrape(agg):
    out = {}
    for fam in text_string_to_metric_families(agg.metrics().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_follow_the_latest_cumulative_counts_of_a_session():
    agg = aggregator()
    feed(agg, [packet(0, (1, 1, 0, 0, 0, 0)), packet(1, (2, 2, 0, 0, 0, 0))],
         [packet(2, (4, 2, 1, 0, 0, 0), outcome=records.OUTCOME_LOST)])
    got = scrape(agg)
    assert got[("stamp_packets_sent_total", A)] == 4
    assert got[("stamp_packets_lost_total", A)] == 1
    near = tuple(sorted(A + (("direction", "near_end"),)))
    assert got[("stamp_delay_seconds_count", near)] == 2, "A lost packet adds no delay."
    assert math.isclose(got[("stamp_delay_seconds_sum", near)], 0.006)
    assert agg.pipeline.received == 3


def test_counters_carry_on_across_a_restart_of_their_source():
    agg = aggregator()
    feed(agg, [packet(i, (i + 1, i + 1, 0, 0, 0, 0)) for i in range(110)])
    feed(agg, [packet(i, (i + 1, i + 1, 0, 0, 0, 0)) for i in range(150)])   # restarted from 0
    got = scrape(agg)
    assert got[("stamp_packets_sent_total", A)] == 260, \
        "110 before the restart and 150 after: Prometheus must never see a decrease."


def test_cumulative_counts_detect_a_restart_by_any_count_going_down():
    c = CumulativeCounts(("a", "b"))
    assert c.update((5, 3)) is None and c.totals() == (5, 3)
    assert c.update((6, 1)) == (5, 3), "b went down: a restart, even though a grew."
    assert c.totals() == (11, 4)
    assert c.update((7, 2)) is None and c.totals() == (12, 5)


def test_negative_delays_keep_every_sum_growing_and_the_signed_mean_right():
    agg = aggregator()
    nears = [2 * MS, -1 * MS, -3 * MS, 4 * MS]
    feed(agg, [packet(i, (i + 1, i + 1, 0, 0, 0, 0), near=d) for i, d in enumerate(nears)])
    got = scrape(agg)
    lab = tuple(sorted(A + (("direction", "near_end"),)))
    pos_sum, pos_n = got[("stamp_delay_seconds_sum", lab)], got[("stamp_delay_seconds_count", lab)]
    neg_sum = got[("stamp_delay_negative_seconds_sum", lab)]
    neg_n = got[("stamp_delay_negative_seconds_count", lab)]
    assert (pos_n, neg_n) == (2, 2) and math.isclose(pos_sum, 0.006) and math.isclose(neg_sum, 0.004)
    assert math.isclose((pos_sum - neg_sum) / (pos_n + neg_n), sum(nears) / 4 / 1e9), \
        "docs/metrics.md's signed mean."
    assert got[("stamp_delay_last_seconds", lab)] == 0.004
    le_10us = tuple(sorted(lab + (("le", "1e-05"),)))
    assert got[("stamp_delay_seconds_bucket", le_10us)] == 0, "No negative delay in the buckets."


def reflected(port, n):
    return records.ReflectorPacket("10.0.0.1", port, "10.0.0.2", 862, records.TS_BPF, 64, n,
                                   BASE, BASE + MS, BASE + 2 * MS, n)


def test_reflector_sessions_are_bounded_and_the_overflow_counted():
    agg = aggregator(max_reflector_sessions=2)
    feed(agg, [reflected(p, 1) for p in (1, 2, 3, 4)], [reflected(1, 2)])
    got = scrape(agg)
    assert got[("stamp_exporter_sessions", (("side", "reflector"),))] == 2
    assert got[("stamp_records_dropped_total", (("stage", "session_limit"),))] == 2


def test_malformed_messages_are_counted_not_raised():
    agg = aggregator()
    agg.handle(b"SB\x02\x01\x01\x00\x00\x00", 1.0)
    agg.handle(b"garbage", 1.0)
    assert scrape(agg)[("stamp_records_dropped_total", (("stage", "malformed"),))] == 2


def test_idle_sessions_expire():
    agg = aggregator(idle_timeout=10)
    feed(agg, [packet(0, (1, 1, 0, 0, 0, 0))], now=1.0)
    agg.expire(5.0)
    assert len(agg.sender.table) == 1
    agg.expire(12.0)
    assert len(agg.sender.table) == 0


# --- the supervisor's command building -------------------------------------------------

def test_the_builder_passes_static_reflectors_and_dns_together():
    cfg = config.load(None, ["sender.reflectorIPs=10.0.0.9", "sender.reflectorDNS=r.example.org",
                             "reflector.enabled=false", "exporter.serviceTimeout=60"])
    cmds = commands.build(cfg, "/b", "json")
    assert cmds["sender"][1:6] == ["eth0", "10.0.0.9", "--reflector-dns", "r.example.org",
                                   "--dns-interval"]
    assert "--service-timeout" in cmds["exporter"] and "--max-reflector-sessions" not in \
        cmds["exporter"], "A sender-only host's exporter keeps no reflector sessions."
    assert set(cmds) == {"exporter", "sender"}


@pytest.mark.parametrize("value,text", [(1.0, "1"), (0.0001, "0.0001"), (1e-05, "1e-05"),
                                        (0.1234567, "0.1234567"), (2e6, "2e+06"), (30, "30")])
def test_numbers_are_written_as_helm_writes_them_never_rounded(value, text):
    cfg = config.load(None, ["sender.reflectorIPs=10.0.0.9", f"sender.interval={value}"])
    args = commands.sender_args(cfg, "json")
    assert args[args.index("--interval") + 1] == text


# --- the health checks (the exporter's /healthz paths) --------------------------------

def test_health_checks_the_loop_and_the_services_reports_apart():
    from stamp_bpf.exporter.server import Health
    clock, last = [100.0], [None]
    heartbeat = [100.0]
    h = Health(heartbeat, lambda: last[0], service_timeout=60, now=lambda: clock[0])
    assert h.check("/healthz/exporter") == (True, [])
    assert not h.check("/healthz/service")[0], "No record from the service yet."
    last[0] = 101.0
    clock[0] = 150.0
    heartbeat[0] = 150.0
    assert h.check("/healthz") == (True, [])
    clock[0] = heartbeat[0] = 162.0
    ok, problems = h.check("/healthz")
    assert not ok and "for 61 s" in problems[0], problems
    assert h.check("/healthz/exporter")[0], "The exporter's own check ignores the service."
    heartbeat[0] = 150.0
    assert len(h.check("/healthz")[1]) == 2, "Both problems are named."
    off = Health([clock[0]], lambda: None, service_timeout=0, now=lambda: clock[0])
    assert off.check("/healthz") == (True, []), "Without --service-timeout only the loop counts."


def test_ipv6_and_ipv4_sessions_of_one_sender_are_separate_series_with_bracketed_labels():
    agg = aggregator()
    v4 = packet(0, (1, 1, 0, 0, 0, 0))
    v6 = v4._replace(reflector="2001:db8::2", sender="2001:db8::1")
    ll = v4._replace(reflector="fe80::2", sender="fe80::1", sent=3)
    refl = records.ReflectorPacket("2001:db8::1", 862, "2001:db8::2", 862, records.TS_BPF, 64,
                                   0, BASE, BASE + 3 * MS, BASE + 4 * MS, 1)
    feed(agg, [v4, v6, ll], [refl])
    got = scrape(agg)
    v6_labels = (("reflector", "[2001:db8::2]:862"), ("sender", "[2001:db8::1]:862"))
    ll_labels = (("reflector", "[fe80::2]:862"), ("sender", "[fe80::1]:862"))
    assert got[("stamp_packets_sent_total", A)] == 1 and \
        got[("stamp_packets_sent_total", v6_labels)] == 1 and \
        got[("stamp_packets_sent_total", ll_labels)] == 3, \
        f"IPv4, IPv6 and link-local sessions must be three series, IPv6 written [addr]:port: " \
        f"{sorted(k for k in got if k[0] == 'stamp_packets_sent_total')}."
    assert got[("stamp_reflector_packets_reflected_total",
                (("reflector", "[2001:db8::2]:862"), ("sender", "[2001:db8::1]:862")))] == 1, \
        "The reflector's IPv6 session must be labelled [addr]:port as well."
