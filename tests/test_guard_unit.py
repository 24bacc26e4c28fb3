"""The reflector's guard in user space: prefixes and allow files, the token
bucket's numbers and its user-space twin, the supervisor's allow file, the
DropCount record and the exporter's not-reflected family (fast layer)."""

import ipaddress
import os

import pytest
import structlog

from stamp_bpf.common import histogram, records
from stamp_bpf.exporter.aggregator import Aggregator
from stamp_bpf.reflector import guard
from stamp_bpf.supervisor import allowfile, config
from stamp_bpf.exporter import not_reflected

pytestmark = pytest.mark.unit


def test_prefixes_of_both_families_and_bare_addresses_are_taken():
    assert guard.prefix("10.0.0.0/8") == ipaddress.ip_network("10.0.0.0/8")
    assert guard.prefix(" 2001:db8::/32 ") == ipaddress.ip_network("2001:db8::/32")
    assert guard.prefix("192.0.2.7").prefixlen == 32, "A bare IPv4 address is a /32."
    assert guard.prefix("fd00::1").prefixlen == 128, "A bare IPv6 address is a /128."


@pytest.mark.parametrize("text,words", [
    ("10.0.0.1/8", ["did you mean 10.0.0.0/8"]),
    ("2001:db8::1/32", ["did you mean 2001:db8::/32"]),
    ("10.0.0.0/33", ["'10.0.0.0/33'", "10.0.0.0/8"]),
    ("example.org", ["'example.org'", "not an IPv4 or IPv6 prefix"]),
])
def test_a_bad_prefix_says_what_is_wrong_in_one_line(text, words):
    with pytest.raises(guard.GuardError) as exc:
        guard.prefix(text)
    assert "\n" not in str(exc.value)
    for w in words:
        assert w in str(exc.value), f"{exc.value} should mention {w!r}"


def test_allow_file_takes_comments_and_blank_lines_and_names_a_bad_line(tmp_path):
    path = tmp_path / "allow"
    path.write_text("# lab\n10.0.0.0/8   # the nodes\n\n  fd00::/8\n192.0.2.1\n")
    assert [str(n) for n in guard.read_allow_file(path)] == \
        ["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"]
    path.write_text("10.0.0.0/8\n10.0.0.300\n")
    with pytest.raises(guard.GuardError, match=r"line 2: '10\.0\.0\.300'"):
        guard.read_allow_file(path)
    path.write_text("# nobody\n\n")
    with pytest.raises(guard.GuardError, match="lists no prefix"):
        guard.read_allow_file(path)
    with pytest.raises(guard.GuardError, match="cannot read it"):
        guard.read_allow_file(tmp_path / "missing")


def test_a_reload_reports_the_change_and_a_bad_file_keeps_the_running_list(tmp_path):
    path = tmp_path / "allow"
    path.write_text("10.0.0.0/8\n198.51.100.0/24\n")
    allow = guard.AllowList([guard.prefix("fd00::/8")], str(path))
    assert allow.enabled and len(allow.prefixes) == 3, "--allow and the file's prefixes add up."
    path.write_text("10.0.0.0/8\n203.0.113.0/24\n")
    added, removed = allow.reload()
    assert [str(n) for n in added] == ["203.0.113.0/24"]
    assert [str(n) for n in removed] == ["198.51.100.0/24"]
    before = list(allow.prefixes)
    path.write_text("10.0.0.0/8\nnonsense\n")
    with pytest.raises(guard.GuardError):
        allow.reload()
    assert allow.prefixes == before, "A bad file at a reload changes nothing."
    assert allow.allows(ipaddress.ip_address("10.9.9.9"))
    assert not allow.allows(ipaddress.ip_address("198.51.100.1"))
    assert guard.AllowList([]).allows(ipaddress.ip_address("198.51.100.1")), \
        "No list at all admits everyone."


def test_the_file_watch_sees_a_replaced_file_as_kubelet_writes_it(tmp_path):
    path = tmp_path / "list"
    path.write_text("10.0.0.0/8\n")
    watch = guard.FileWatch(str(path))
    assert not watch.changed()
    tmp = tmp_path / "new"
    tmp.write_text("10.0.0.0/8\n")      # same size: only the inode tells
    os.replace(tmp, path)
    assert watch.changed() and not watch.changed(), "A replacement is seen once."


def test_more_prefixes_than_the_kernel_table_holds_are_refused():
    nets = [ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24")
            for i in range(guard.MAX_PREFIXES + 1)]
    with pytest.raises(guard.GuardError, match=f"more than the {guard.MAX_PREFIXES}"):
        guard.merge(nets)
    assert len(guard.merge(nets[:-1] + nets[:5])) == guard.MAX_PREFIXES, \
        "Duplicates count once."


def test_token_bucket_numbers():
    limit = guard.rate_limit(1000, 50)
    assert limit.interval_ns == 1_000_000 and limit.tolerance_ns == 49_000_000
    assert guard.rate_limit(0, 1).interval_ns == 0, "0 means no limit."
    for rate, burst, flag in ((-1, 10, "--max-rate"), (float("nan"), 10, "--max-rate"),
                              (2e9, 10, "--max-rate"), (1e-4, 10, "--max-rate"),
                              (100, 0, "--burst")):
        with pytest.raises(guard.GuardError, match=flag):
            guard.rate_limit(rate, burst)


class FakeClock:
    def __init__(self):
        self.ns = 10**12

    def __call__(self):
        return self.ns


def test_a_sender_at_ten_times_the_limit_gets_the_limit_and_a_normal_one_loses_nothing():
    clock = FakeClock()
    sg = guard.SourceGuard(guard.AllowList([]), guard.rate_limit(100, 10), clock=clock)
    passed = {"flood": 0, "normal": 0}
    for step in range(10 * 1000 * 10):          # 10 s in 0.1 ms steps
        clock.ns += 100_000
        passed["flood"] += sg.within_rate("198.51.100.1")     # 10,000/s: every step
        if step % 200 == 0:                                   # 50/s
            passed["normal"] += sg.within_rate("198.51.100.2")
    assert abs(passed["flood"] - (100 * 10 + 10)) <= 2, \
        f"A flood gets rate x time + burst, got {passed['flood']}."
    assert passed["normal"] == 500, "A sender below the limit loses nothing."


def test_the_user_space_bucket_table_is_bounded():
    clock = FakeClock()
    sg = guard.SourceGuard(guard.AllowList([]), guard.rate_limit(1, 1), sources=100, clock=clock)
    for i in range(1000):
        sg.within_rate(f"10.0.{i // 256}.{i % 256}")
    assert len(sg._tat) == 100, "The table keeps only the senders seen last."


def test_supervisor_writes_the_allow_file_only_when_it_changes(tmp_path):
    cfg = config.defaults()
    cfg.update({"sender.enabled": False, "reflector.allowedSources": ["10.0.0.0/8", "fd00::/8"],
                "reflector.allowFile": str(tmp_path / "run" / "allowed-sources")})
    config.validate(cfg)
    assert allowfile.write(cfg), "The first write is a change."
    assert [str(n) for n in guard.read_allow_file(cfg["reflector.allowFile"])] == \
        ["10.0.0.0/8", "fd00::/8"], "The reflector reads back what the supervisor wrote."
    assert not allowfile.write(cfg), "The same list again is no change (no SIGHUP)."
    cfg["reflector.allowedSources"] = ["10.0.0.0/8"]
    assert allowfile.write(cfg)
    assert os.listdir(tmp_path / "run") == ["allowed-sources"], "No temporary file is left."
    cfg["reflector.allowedSources"] = []
    assert not allowfile.write(cfg), "No list: no file is needed, and none is passed."


def test_drop_count_records_round_trip():
    recs = [records.DropCount(records.ROLE_REFLECTOR, 4242, r, i * 1000)
            for i, r in enumerate(records.DROP_REASONS)]
    assert records.decode(records.encode(recs)) == recs


def family(agg, reason):
    return agg.registry.get_sample_value("stamp_reflector_packets_not_reflected_total",
                                         {"reason": reason})


def test_not_reflected_counts_sum_processes_survive_restarts_and_expiry():
    agg = Aggregator(histogram.default_buckets(), structlog.get_logger())
    assert family(agg, "not_allowed") is None, "No reflector yet: no series."

    def report(pid, now, **counts):
        agg.handle(records.encode([records.DropCount(records.ROLE_REFLECTOR, pid, r,
                                                     counts.get(r, 0))
                                   for r in records.DROP_REASONS]), now)
    report(1, 0.0, not_allowed=5, rate_limited=7)
    assert family(agg, "not_allowed") == 5 and family(agg, "rate_limited") == 7
    assert family(agg, "loop_guard") == 0, "Every reason has a series from the first report."
    report(2, 1.0, not_allowed=3)
    assert family(agg, "not_allowed") == 8, "Two reflector processes add up."
    report(1, 2.0, not_allowed=1)             # pid 1 restarted (a container's pid 1)
    assert family(agg, "not_allowed") == 9, "A restart carries on from the previous count."
    agg.info.expire(1000.0, 300)
    agg.not_reflected.expire(1000.0, 300)
    assert family(agg, "not_allowed") == 9 and family(agg, "rate_limited") == 7, \
        "The counts of processes gone idle stay in the totals."


def test_not_reflected_reasons_are_bounded():
    agg = Aggregator(histogram.default_buckets(), structlog.get_logger())
    for i in range(100):
        agg.handle(records.encode([records.DropCount(2, 1, f"r{i}", 1)]), 0.0)
    reasons = {s.labels["reason"] for m in agg.registry.collect()
               if m.name == "stamp_reflector_packets_not_reflected" for s in m.samples}
    assert len(reasons) == not_reflected.MAX_REASONS
    assert agg.registry.get_sample_value("stamp_records_dropped_total",
                                         {"stage": "malformed"}) > 0



def _stat_enum():
    """enum stamp_stat's names from bpf/stamp.h, in order, without STAT_ and STAT_MAX."""
    import re
    from stamp_bpf.common import bpfprog
    with open(os.path.join(bpfprog.bpf_dir(), "stamp.h")) as f:
        text = f.read()
    body = re.search(r"enum stamp_stat \{(.*?)\};", text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    names = [n.split("=")[0].strip() for n in body.split(",") if n.strip()]
    assert names[-1] == "STAT_MAX"
    return [n[len("STAT_"):].lower() for n in names[:-1]]


def test_counter_names_and_drop_reasons_are_the_kernel_enum():
    """One definition: the C enum; Python's names are checked against it."""
    from stamp_bpf.common import datapath
    c = _stat_enum()
    assert list(datapath.REFLECTOR_STATS[2:]) == c[2:], \
        f"services/common/datapath.py names differ from bpf/stamp.h: {c}"
    assert list(datapath.SENDER_STATS[2:]) == c[2:]
    assert c[:2] == ["stamped", "received"]
    assert len(datapath.REFLECTOR_STATS) == len(datapath.SENDER_STATS) == len(c)
    missing = [r for r in records.DROP_REASONS if r not in c]
    assert not missing, f"DROP_REASONS without a STAT_ in bpf/stamp.h: {missing}"
