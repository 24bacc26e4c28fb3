"""TC programs over a service's life: ours come and go, other software's stay and keep
seeing packets. Run twice: with tcx links (the default on Linux 6.6+) and with
clsact filters (STAMP_TC_ATTACH=clsact, what older kernels get).

One scenario, shared by the tests below: foreign programs are put on both
hooks of both interfaces first: clsact filters of "another program" (eBPF
ones loaded here with bcc that count packets and return TC_ACT_UNSPEC, before
and after our clsact priorities and one at the reflector's own priority with
another handle, and a classic-BPF filter added with `tc filter add`) and a
tcx program per hook that counts and returns TCX_NEXT. Then a reflector and
a sender start, and a second tcx program per hook is appended behind ours.
They are killed with SIGKILL (with tcx nothing of theirs stays; with clsact
their filters stay, stale), start again (with clsact they remove the stale
filters) and measure, and stop with SIGTERM.

With tcx, priorities order only the clsact filters: every tcx program runs
before them, in its place in the tcx list. Ours return TCX_NEXT (the value
of TC_ACT_UNSPEC) for everything that is not theirs, so the tcx program
behind ours and every clsact filter still see all other traffic.
"""

import ctypes
import json
import os
import socket
import time

import pytest
from pyroute2 import IPRoute

from stamp_bpf.common import bpfsys, tc

import stampnet

pytestmark = pytest.mark.timeout(300)

FOREIGN_C = """
#include <linux/pkt_cls.h>
BPF_ARRAY(seen, u64, 9);
static __always_inline int count(int i) {
    u64 *v = seen.lookup(&i);
    if (v) __sync_fetch_and_add(v, 1);
    return TC_ACT_UNSPEC;   /* TCX_NEXT for a tcx program */
}
int foreign_in_first(struct __sk_buff *skb) { return count(0); }
int foreign_in_last(struct __sk_buff *skb) { return count(1); }
int foreign_eg_first(struct __sk_buff *skb) { return count(2); }
int foreign_eg_last(struct __sk_buff *skb) { return count(3); }
int foreign_in_same_prio(struct __sk_buff *skb) { return count(4); }
int tcx_in_before(struct __sk_buff *skb) { return count(5); }
int tcx_in_behind(struct __sk_buff *skb) { return count(6); }
int tcx_eg_before(struct __sk_buff *skb) { return count(7); }
int tcx_eg_behind(struct __sk_buff *skb) { return count(8); }
"""
FOREIGN_HANDLE = 0x1
FIRST, LAST = 1, 0xFFF0
ROLES = {"sender": tc.SENDER, "reflector": tc.REFLECTOR}
HOOKS = {"ingress": (tc.INGRESS, bpfsys.TCX_INGRESS), "egress": (tc.EGRESS, bpfsys.TCX_EGRESS)}
TCX_FOREIGN = {("ingress", "before"): "tcx_in_before", ("ingress", "behind"): "tcx_in_behind",
               ("egress", "before"): "tcx_eg_before", ("egress", "behind"): "tcx_eg_behind"}


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


def tcx_list(host, hook):
    """Program ids on a tcx hook of `host`'s interface, in running order."""
    with stampnet.netns(host.ns):
        idx = socket.if_nametoindex(host.ifname)
        return [prog for prog, _link in bpfsys.prog_query(idx, HOOKS[hook][1])]


def ours(rows, role):
    r = ROLES[role]
    return [row for row in rows if row[0] == r.prio and row[2] == r.handle]


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
                                   ("foreign_in_same_prio", tc.INGRESS, tc.REFLECTOR.prio)):
            ipr.tc("add-filter", "bpf", idx, FOREIGN_HANDLE, fd=fns[name].fd, name=name,
                   parent=parent, classid=1, direct_action=True, prio=prio)


def attach_tcx_foreign(host, bpf, where, links):
    """Append the `where` ("before"/"behind") foreign tcx programs to both hooks;
    their link fds go into `links` (closing one detaches it). {hook: prog id}."""
    ids = {}
    with stampnet.netns(host.ns):
        idx = socket.if_nametoindex(host.ifname)
        for hook in HOOKS:
            fn = bpf.load_func(TCX_FOREIGN[(hook, where)], bpf.SCHED_CLS)
            links.append(bpfsys.link_create(fn.fd, idx, HOOKS[hook][1]))
            ids[hook] = bpfsys.prog_id(fn.fd)
    return ids


def counts(bpf):
    table = bpf["seen"]
    return [table[ctypes.c_int(i)].value for i in range(9)]


def ping(topo, n=5):
    res = topo.run(topo.sender, ["ping", "-c", str(n), "-i", "0.05", "-W", "1", "-q",
                                 topo.reflector.addr], capture_output=True, text=True)
    assert res.returncode == 0, f"ping failed: {res.stdout}{res.stderr}"


@pytest.fixture(scope="module", params=["tcx", "clsact"])
def scenario(request, tmp_path_factory):
    from bcc import BPF
    how = request.param
    old_env = os.environ.get(tc.MODE_ENV)
    os.environ[tc.MODE_ENV] = how        # the services inherit it
    lab = stampnet.Lab(tmp_path_factory.mktemp(f"lifecycle-{how}"))
    topo = lab.topo
    seen = {"mode": how, "tcx_foreign": {}}
    bpfs = {}
    links = []
    try:
        hosts = {"sender": topo.sender, "reflector": topo.reflector}
        for role, host in hosts.items():
            bpfs[role] = BPF(text=FOREIGN_C)
            attach_foreign(host, bpfs[role])
            for hook in ("ingress", "egress"):
                topo.run(host, ["tc", "filter", "add", "dev", host.ifname, hook, "prio", "2",
                                "handle", "1", "bpf", "bytecode", "1,6 0 0 0,"], check=True)
            seen["tcx_foreign"][(role, "before")] = attach_tcx_foreign(host, bpfs[role],
                                                                       "before", links)

        def snapshot():
            return {(role, hook): (filters(topo, hosts[role], hook), tcx_list(hosts[role], hook))
                    for role in hosts for hook in HOOKS}

        seen["before"] = snapshot()
        r1 = lab.reflector()
        s1 = lab.sender("-i", "0.02")
        time.sleep(0.5)
        seen["running"] = snapshot()
        for svc in (s1, r1):
            stampnet.kill(svc.proc)
        seen["killed"] = snapshot()
        r2 = lab.reflector()
        s2 = lab.sender("-i", "0.02")
        for role, host in hosts.items():
            seen["tcx_foreign"][(role, "behind")] = attach_tcx_foreign(host, bpfs[role],
                                                                       "behind", links)
        seen["restarted"] = snapshot()
        c0 = {role: counts(b) for role, b in bpfs.items()}
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
        for fd in links:
            os.close(fd)
        lab.close()
        for b in bpfs.values():
            b.cleanup()
        if old_env is None:
            os.environ.pop(tc.MODE_ENV, None)
        else:
            os.environ[tc.MODE_ENV] = old_env


def our_programs(scenario, phase, role, hook):
    """(our clsact filters, our tcx program ids) on one hook in one phase."""
    rows, tcx = scenario[phase][(role, hook)]
    foreign_tcx = {ids[hook] for (r, _), ids in scenario["tcx_foreign"].items() if r == role}
    return ours(rows, role), [p for p in tcx if p not in foreign_tcx]


def test_programs_attached_while_running(scenario):
    how = scenario["mode"]
    for (role, hook), (rows, tcx) in scenario["running"].items():
        filt, progs = our_programs(scenario, "running", role, hook)
        assert (len(filt), len(progs)) == ((0, 1) if how == "tcx" else (1, 0)), \
            f"{how}: the {role} should have one program on {hook}: filters {rows}, tcx {tcx}"
        before_rows, before_tcx = scenario["before"][(role, hook)]
        assert foreign(rows) == foreign(before_rows), \
            f"starting the {role} changed the foreign filters on {hook}: {rows}"
        assert tcx[:len(before_tcx)] == before_tcx, \
            f"the {role}'s {hook} program did not go behind the tcx program already there: {tcx}"


def test_sigkill_leaves_what_the_mechanism_leaves_and_a_restart_cleans(scenario):
    how = scenario["mode"]
    for (role, hook), _ in scenario["killed"].items():
        filt, progs = our_programs(scenario, "killed", role, hook)
        if how == "tcx":
            assert (filt, progs) == ([], []), \
                f"after SIGKILL the {role}'s tcx link on {hook} should be gone: {filt} {progs}"
        else:
            assert len(filt) == 1, \
                f"after SIGKILL the {role}'s {hook} clsact filter should still be there: {filt}"
    for (role, hook), (rows, tcx) in scenario["restarted"].items():
        filt, progs = our_programs(scenario, "restarted", role, hook)
        assert len(filt) + len(progs) == 1, f"after the restart the {role} has on {hook}: {rows} {tcx}"
    s2, r2 = scenario["services"]
    for svc, role in ((s2, "sender"), (r2, "reflector")):
        stale = svc.events("stale_filters_removed")
        if how == "tcx":
            assert stale == [], f"with tcx nothing should have been stale: {stale}"
        else:
            assert stale and stale[0]["count"] == 2, \
                f"the restarted {role} did not log removing its 2 stale filters:\n{svc.text()[-2000:]}"


def test_restarted_services_work(scenario):
    s2, r2 = scenario["services"]
    assert scenario["s2_rc"] == 0 and scenario["r2_rc"] == 0, \
        f"SIGTERM exit codes: sender {scenario['s2_rc']}, reflector {scenario['r2_rc']}"
    s = s2.summary()["sessions"][0]
    assert s["received"] >= 30 and s["lost"] == 0, f"the restarted pair did not measure: {s}"


def test_sigterm_leaves_nothing_of_ours(scenario):
    for (role, hook), _ in scenario["stopped"].items():
        filt, progs = our_programs(scenario, "stopped", role, hook)
        assert (filt, progs) == ([], []), \
            f"after SIGTERM the {role} left on {hook}: filters {filt}, tcx programs {progs}"


def test_foreign_programs_survive_and_keep_seeing_packets(scenario):
    for key, (rows, tcx) in scenario["stopped"].items():
        want = foreign(scenario["before"][key][0])
        assert len(want) == (4 if key[1] == "ingress" else 3), f"foreign filters on {key}: {want}"
        assert foreign(rows) == want, f"foreign filters on {key} changed: before {want}, after {rows}"
        role, hook = key
        ft = scenario["tcx_foreign"]
        assert tcx == [ft[(role, "before")][hook], ft[(role, "behind")][hook]], \
            f"the foreign tcx programs on {key} changed: {tcx}"
    running = scenario["restarted"]
    for (role, hook), (_, tcx) in running.items():
        if scenario["mode"] == "tcx":
            ft = scenario["tcx_foreign"]
            assert tcx[0] == ft[(role, "before")][hook] and tcx[-1] == ft[(role, "behind")][hook] \
                and len(tcx) == 3, f"ours should run between the foreign tcx programs: {tcx}"
    names = ("in-first", "in-last", "eg-first", "eg-last", "in-same-prio",
             "tcx-in-before", "tcx-in-behind", "tcx-eg-before", "tcx-eg-behind")
    for phase in ("counts_running", "counts_after"):
        now, then = scenario[phase]
        for role in now:
            still = [n for n, a, b in zip(names, then[role], now[role]) if b <= a and n != "in-same-prio"]
            assert still == [], (
                f"{phase}: foreign programs on the {role}'s interface stopped seeing packets: "
                f"{still} ({dict(zip(names, then[role]))} -> {dict(zip(names, now[role]))})")
    now, then = scenario["counts_running"]
    assert now["reflector"][4] > then["reflector"][4], \
        "the foreign filter at the reflector's own priority (another handle) stopped seeing packets"
