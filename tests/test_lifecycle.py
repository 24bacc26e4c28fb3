"""TC filters over a service's life: ours come and go, other software's stay and keep
seeing packets.

One scenario, shared by the tests below: foreign filters are put on both
hooks of both interfaces first (eBPF programs of "another program", loaded
here with bcc, that count packets and return TC_ACT_UNSPEC, before and after
our priorities and one at the reflector's own priority with another handle,
and a classic-BPF filter added with `tc filter add`). Then a reflector and a
sender start, are killed with SIGKILL (their filters stay, stale), start
again (they remove the stale filters and measure), and stop with SIGTERM.
"""

import ctypes
import json
import time

import pytest
from pyroute2 import IPRoute

from stamp_bpf.common import tc

import stampnet

pytestmark = pytest.mark.timeout(240)

FOREIGN_C = """
#include <linux/pkt_cls.h>
BPF_ARRAY(seen, u64, 6);
static __always_inline int count(int i) {
    u64 *v = seen.lookup(&i);
    if (v) __sync_fetch_and_add(v, 1);
    return TC_ACT_UNSPEC;
}
int foreign_in_first(struct __sk_buff *skb) { return count(0); }
int foreign_in_last(struct __sk_buff *skb) { return count(1); }
int foreign_eg_first(struct __sk_buff *skb) { return count(2); }
int foreign_eg_last(struct __sk_buff *skb) { return count(3); }
int foreign_in_same_prio(struct __sk_buff *skb) { return count(4); }
"""
FOREIGN_HANDLE = 0x1
FIRST, LAST = 1, 0xFFF0
OURS = {"sender": (tc.SENDER_PRIO, tc.SENDER_HANDLE), "reflector": (tc.REFLECTOR_PRIO, tc.REFLECTOR_HANDLE)}


def filters(topo, host, hook):
    """[(pref, kind, handle or None, bpf name or None)] from `tc -j filter show`."""
    out = topo.run(host, ["tc", "-j", "filter", "show", "dev", host.ifname, hook],
                   capture_output=True, text=True, check=True).stdout
    rows = []
    for f in json.loads(out or "[]"):
        opts = f.get("options")
        if opts is None:        # the per-prio header entry
            continue
        handle = opts.get("handle")
        rows.append((f["pref"], f["kind"], int(handle, 16) if isinstance(handle, str) else handle,
                     opts.get("bpf_name")))
    return rows


def ours(rows, role):
    prio, handle = OURS[role]
    return [r for r in rows if r[0] == prio and r[2] == handle]


def foreign(rows):
    return sorted(r for r in rows if r[2] == FOREIGN_HANDLE or r[0] == 2)


def attach_foreign(host, bpf):
    fns = {name: bpf.load_func(name, bpf.SCHED_CLS) for name in
           ("foreign_in_first", "foreign_in_last", "foreign_eg_first", "foreign_eg_last",
            "foreign_in_same_prio")}
    with stampnet.netns(host.ns):
        ipr = IPRoute()
    with ipr:
        idx = ipr.link_lookup(ifname=host.ifname)[0]
        ipr.tc("add", "clsact", idx)
        for name, parent, prio in (("foreign_in_first", tc.INGRESS, FIRST),
                                   ("foreign_in_last", tc.INGRESS, LAST),
                                   ("foreign_eg_first", tc.EGRESS, FIRST),
                                   ("foreign_eg_last", tc.EGRESS, LAST),
                                   ("foreign_in_same_prio", tc.INGRESS, tc.REFLECTOR_PRIO)):
            ipr.tc("add-filter", "bpf", idx, FOREIGN_HANDLE, fd=fns[name].fd, name=name,
                   parent=parent, classid=1, direct_action=True, prio=prio)


def counts(bpf):
    table = bpf["seen"]
    return [table[ctypes.c_int(i)].value for i in range(5)]


def ping(topo, n=5):
    res = topo.run(topo.sender, ["ping", "-c", str(n), "-i", "0.05", "-W", "1", "-q",
                                 topo.reflector.addr], capture_output=True, text=True)
    assert res.returncode == 0, f"ping failed: {res.stdout}{res.stderr}"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    from bcc import BPF
    lab = stampnet.Lab(tmp_path_factory.mktemp("lifecycle"))
    topo = lab.topo
    seen = {}
    bpfs = {}
    try:
        for role, host in (("sender", topo.sender), ("reflector", topo.reflector)):
            bpfs[role] = BPF(text=FOREIGN_C)
            attach_foreign(host, bpfs[role])
            for hook in ("ingress", "egress"):
                topo.run(host, ["tc", "filter", "add", "dev", host.ifname, hook, "prio", "2",
                                "handle", "1", "bpf", "bytecode", "1,6 0 0 0,"], check=True)
        hosts = {"sender": topo.sender, "reflector": topo.reflector}

        def snapshot():
            return {(role, hook): filters(topo, hosts[role], hook)
                    for role in hosts for hook in ("ingress", "egress")}

        seen["before"] = snapshot()
        r1 = lab.reflector()
        s1 = lab.sender("-i", "0.02")
        time.sleep(0.5)
        seen["running"] = snapshot()
        for svc in (s1, r1):
            stampnet.kill(svc.proc)
        seen["killed"] = snapshot()
        r2 = lab.reflector()
        c0 = {role: counts(b) for role, b in bpfs.items()}
        s2 = lab.sender("-i", "0.02")
        seen["restarted"] = snapshot()
        time.sleep(1.0)
        ping(topo)
        seen["counts_running"] = ({role: counts(b) for role, b in bpfs.items()}, c0)
        seen["s2_rc"], seen["r2_rc"] = s2.stop(), r2.stop()
        seen["services"] = (s2, r2)
        seen["stopped"] = snapshot()
        c1 = {role: counts(b) for role, b in bpfs.items()}
        ping(topo)
        seen["counts_after"] = ({role: counts(b) for role, b in bpfs.items()}, c1)
        yield seen
    finally:
        lab.close()
        for b in bpfs.values():
            b.cleanup()


def test_filters_attached_while_running(scenario):
    for (role, hook), rows in scenario["running"].items():
        assert len(ours(rows, role)) == 1, f"the {role} should have one filter on {hook}: {rows}"
        assert foreign(rows) == foreign(scenario["before"][(role, hook)]), \
            f"starting the {role} changed the foreign filters on {hook}: {rows}"


def test_sigkill_leaves_stale_filters_that_a_restart_removes(scenario):
    for (role, hook), rows in scenario["killed"].items():
        assert len(ours(rows, role)) == 1, \
            f"after SIGKILL the {role}'s {hook} filter should still be there (stale): {rows}"
    for (role, hook), rows in scenario["restarted"].items():
        assert len(ours(rows, role)) == 1, f"after the restart the {role} has on {hook}: {rows}"
    s2, r2 = scenario["services"]
    for svc, role in ((s2, "sender"), (r2, "reflector")):
        stale = svc.events("stale_filters_removed")
        assert stale and stale[0]["count"] == 2, \
            f"the restarted {role} did not log removing its 2 stale filters:\n{svc.text()[-2000:]}"


def test_restarted_services_work(scenario):
    s2, r2 = scenario["services"]
    assert scenario["s2_rc"] == 0 and scenario["r2_rc"] == 0, \
        f"SIGTERM exit codes: sender {scenario['s2_rc']}, reflector {scenario['r2_rc']}"
    s = s2.summary()["sessions"][0]
    assert s["received"] >= 30 and s["lost"] == 0, f"the restarted pair did not measure: {s}"


def test_sigterm_leaves_no_filter_of_ours(scenario):
    for (role, hook), rows in scenario["stopped"].items():
        assert ours(rows, role) == [], f"after SIGTERM the {role} left a filter on {hook}: {rows}"


def test_foreign_filters_survive_and_keep_seeing_packets(scenario):
    for key, rows in scenario["stopped"].items():
        want = foreign(scenario["before"][key])
        assert len(want) == (4 if key[1] == "ingress" else 3), f"foreign filters on {key}: {want}"
        assert foreign(rows) == want, f"foreign filters on {key} changed: before {want}, after {rows}"
    for phase in ("counts_running", "counts_after"):
        now, then = scenario[phase]
        for role in now:
            grew = [b > a for a, b in zip(then[role], now[role])]
            assert all(grew[:4]), (
                f"{phase}: a foreign filter on the {role}'s interface stopped seeing packets "
                f"(in-first, in-last, eg-first, eg-last counts {then[role][:4]} -> {now[role][:4]})")
    now, then = scenario["counts_running"]
    assert now["reflector"][4] > then["reflector"][4], \
        "the foreign filter at the reflector's own priority (another handle) stopped seeing packets"
