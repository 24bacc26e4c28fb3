"""One live owner per hook: a second service on an interface refuses and names the
first, which keeps measuring; a killed one leaves nothing of ours behind.

Issue 9, defect 2: a second stamp-reflector used to remove the first one's
filters as "stale", and when it exited the first reflected nothing. Both
attach mechanisms are covered: tcx links (the default on this kernel) and
clsact filters (STAMP_TC_ATTACH=clsact, what kernels before 6.6 get), where a
killed service does leave filters, which the next one removes.
"""

import socket
import struct
from datetime import datetime
import threading
import time

import pytest

from stamp_bpf.common import bpfsys, tc

import stampnet
from conftest import Service, command, tc_filters

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("ownership"))
    yield lab
    lab.close()


def tcx(host):
    """{hook: [(prog id, link id)]} on `host`'s interface, asked of the kernel."""
    with stampnet.netns(host.ns):
        idx = socket.if_nametoindex(host.ifname)
        return {name: bpfsys.prog_query(idx, hook) for name, hook in
                (("ingress", bpfsys.TCX_INGRESS), ("egress", bpfsys.TCX_EGRESS))}


def nothing_attached(lab, host):
    """Assert that no tcx program and no bpf filter is left on `host`'s interface."""
    left = tcx(host)
    assert left == {"ingress": [], "egress": []}, f"tcx programs left on {host.ifname}: {left}"
    for hook in ("ingress", "egress"):
        rows = [r for r in tc_filters(lab.topo, host, hook) if " bpf " in r]
        assert rows == [], f"clsact filters left on {host.ifname} {hook}: {rows}"


def measure(lab, n=5, *args):
    """Run a sender for `n` packets; its session summary."""
    s = lab.sender("-c", n, "-i", "0.05", *args)
    assert s.wait_exit(60) == 0, f"stamp-sender failed:\n{s.text()[-2000:]}"
    return s.summary()["sessions"][0]


def refused(svc, first, what):
    """Assert that `svc` exited 1 with one `failed` line naming `first`'s pid and command."""
    rc = svc.wait_exit(120)
    failed = svc.events("failed")
    assert rc == 1 and len(failed) == 1, \
        f"the second {what} did not refuse (exit {rc}):\n{svc.text()[-3000:]}"
    reason = failed[0]["reason"]
    assert f"pid {first.proc.pid} " in reason and f"stamp-{what}" in reason, \
        f"the refusal does not name the first {what} (pid {first.proc.pid}): {reason}"
    assert not svc.events("stale_filters_removed") and not svc.events("attached"), \
        f"the refused {what} touched the hooks:\n{svc.text()[-3000:]}"
    # It refuses before compiling: in far less time than the first took to compile and attach.
    took = seconds_between(svc.events("starting")[0], failed[0])
    compile_s = seconds_between(first.events("starting")[0], first.events("attached")[0])
    assert took < compile_s / 2, \
        f"the second {what} refused after {took:.1f} s; compiling took the first {compile_s:.1f} s"
    return reason


def seconds_between(a, b):
    """Seconds from log event a to log event b (their ISO timestamps)."""
    return (datetime.fromisoformat(b["timestamp"].rstrip("Z"))
            - datetime.fromisoformat(a["timestamp"].rstrip("Z"))).total_seconds()


def attach_order(svc):
    """Assert egress attached before ingress and detached after it (tcx link ids grow)."""
    att = [(e["hook"], e.get("link_id")) for e in svc.events("attached")]
    det = [e["hook"] for e in svc.events("detached")]
    assert [h for h, _ in att] == ["egress", "ingress"], f"attach order: {att}"
    if att[0][1] is not None:
        assert att[0][1] < att[1][1], f"the kernel made the ingress link first: {att}"
    assert det == ["ingress", "egress"], f"detach order: {det}"


def test_second_reflector_refuses_and_the_first_keeps_reflecting(lab):
    r1 = lab.reflector()
    try:
        r2 = lab.start(lab.topo.reflector, "stamp-reflector", lab.topo.reflector.ifname)
        reason = refused(r2, r1, "reflector")
        assert "tcx link" in reason, f"the refusal does not say what it found: {reason}"
        s = measure(lab)
        assert s["received"] == 5, f"the first reflector stopped reflecting: {s}"
    finally:
        assert r1.stop() == 0, f"stamp-reflector did not stop cleanly:\n{r1.text()[-2000:]}"
    attach_order(r1)
    nothing_attached(lab, lab.topo.reflector)


def test_killed_reflector_leaves_nothing_and_a_new_one_reflects(lab):
    r1 = lab.reflector()
    assert len(tcx(lab.topo.reflector)["ingress"]) == 1
    stampnet.kill(r1.proc)
    nothing_attached(lab, lab.topo.reflector)
    r2 = lab.reflector()
    try:
        s = measure(lab)
        assert s["received"] == 5, f"the reflector started after a SIGKILL does not reflect: {s}"
        assert not r2.events("stale_filters_removed")
    finally:
        assert r2.stop() == 0
    nothing_attached(lab, lab.topo.reflector)


def test_second_sender_refuses_and_the_first_keeps_measuring(lab):
    r = lab.reflector()
    s1 = lab.sender("-i", "0.05")
    try:
        host = lab.topo.sender
        # Same source port: the socket's bind refuses.
        s2 = lab.start(host, "stamp-sender", host.ifname, lab.topo.reflector.addr, "-c", 5)
        reason = refused(s2, s1, "sender")
        assert "port 862" in reason, reason
        # Another source port: the hook's owner refuses.
        s3 = lab.start(host, "stamp-sender", host.ifname, lab.topo.reflector.addr, "-c", 5,
                       "-s", 40862)
        reason = refused(s3, s1, "sender")
        assert "tcx link" in reason, reason
        before = s1.events("session_stats")
        s1.wait_event("session_stats", 30)
        assert s1.stop() == 0
        sess = s1.summary()["sessions"][0]
        assert sess["received"] >= 10 and sess["lost"] == 0, \
            f"the first sender was disturbed by the refused ones: {sess} ({len(before)} stats)"
        attach_order(s1)
        nothing_attached(lab, host)
        # SIGKILL: nothing left; the next sender measures.
        s4 = lab.sender("-i", "0.05")
        stampnet.kill(s4.proc)
        nothing_attached(lab, host)
        sess = measure(lab)
        assert sess["received"] == 5, f"a sender after a SIGKILL did not measure: {sess}"
    finally:
        r.stop()
    nothing_attached(lab, lab.topo.sender)


def test_clsact_fallback_refuses_and_cleans_only_dead_owners(lab, monkeypatch):
    """Kernels without tcx: filters outlive a killed service; the lock tells."""
    monkeypatch.setenv(tc.MODE_ENV, "clsact")
    host = lab.topo.reflector
    r1 = lab.reflector()
    r2 = lab.start(host, "stamp-reflector", host.ifname)
    reason = refused(r2, r1, "reflector")
    assert measure(lab)["received"] == 5, "the first reflector stopped reflecting"
    ours = [r for r in tc_filters(lab.topo, host, "ingress") if "reflector_ingress" in r]
    stampnet.kill(r1.proc)
    assert [r for r in tc_filters(lab.topo, host, "ingress") if "reflector_ingress" in r], \
        f"after SIGKILL the clsact filter should still be there ({ours}); refusal was: {reason}"
    r3 = lab.reflector()
    try:
        stale = r3.events("stale_filters_removed")
        assert stale and stale[0]["count"] == 2, f"stale filters not removed:\n{r3.text()[-2000:]}"
        assert measure(lab)["received"] == 5
    finally:
        assert r3.stop() == 0
    attach_order(r3)
    nothing_attached(lab, host)


def start_in_own_pid_namespace(lab, tmp_path, *env, without_sys_admin=False):
    """A second stamp-reflector in a PID namespace of its own with its own lock
    directory: how a second pod on the same node sees the first (optionally
    without CAP_SYS_ADMIN, as in the chart's capabilities-only mode)."""
    host = lab.topo.reflector
    drop = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"] \
        if without_sys_admin else []
    argv = ["env", f"STAMP_LOCK_DIR={tmp_path}", *env, "unshare", "--pid", "--fork",
            "--mount-proc", *drop, command("stamp-reflector"), host.ifname, "--zmq", lab.zmq]
    return Service(lab.topo, host, argv, str(tmp_path / "other-pod.log"))


def test_tcx_reflector_in_another_pid_namespace_refuses(lab, tmp_path):
    r1 = lab.reflector()
    try:
        r2 = start_in_own_pid_namespace(lab, tmp_path)
        rc = r2.wait_exit(120)
        failed = r2.events("failed")
        assert rc == 1 and failed and "not visible from here" in failed[0]["reason"] \
            and "tcx link" in failed[0]["reason"], \
            f"the reflector of the other PID namespace did not refuse:\n{r2.text()[-2000:]}"
        assert measure(lab)["received"] == 5, "the first reflector stopped reflecting"
    finally:
        assert r1.stop() == 0
    nothing_attached(lab, lab.topo.reflector)


def test_clsact_reflector_leaves_a_filter_it_did_not_attach(lab, tmp_path, monkeypatch):
    """clsact, and a second instance that cannot see the first (another pod on a
    kernel before 6.6): it takes the filters over as stale; when the first
    exits it removes only filters running its own programs, so the second
    keeps reflecting."""
    monkeypatch.setenv(tc.MODE_ENV, "clsact")
    r1 = lab.reflector()
    r2 = start_in_own_pid_namespace(lab, tmp_path, f"{tc.MODE_ENV}=clsact")
    try:
        r2.wait_event("reflecting", 120)
        assert r2.events("stale_filters_removed"), r2.text()[-2000:]
        assert r1.stop() == 0
        replaced = r1.events("filter_replaced")
        assert len(replaced) == 2 and not r1.events("detached"), \
            f"the first reflector should have left the second one's filters:\n{r1.text()[-2000:]}"
        assert measure(lab)["received"] == 5, "the second reflector lost its filters"
    finally:
        assert lab.topo.stop(r2.proc) == 0
    nothing_attached(lab, lab.topo.reflector)


def test_unseen_reflector_without_sys_admin_cannot_disarm_the_first(lab, tmp_path):
    """Capabilities-only pods: the second cannot name the first's programs, so it
    starts; with tcx it cannot detach them either, and the first keeps reflecting
    while the second runs and after it stops."""
    r1 = lab.reflector()
    try:
        r2 = start_in_own_pid_namespace(lab, tmp_path, without_sys_admin=True)
        r2.wait_event("reflecting", 120)
        assert measure(lab)["received"] == 5, "the first reflector stopped reflecting"
        assert lab.topo.stop(r2.proc) == 0, r2.text()[-2000:]
        assert len(tcx(lab.topo.reflector)["ingress"]) == 1, "the second left a program behind"
        assert measure(lab)["received"] == 5, "the second reflector's exit disarmed the first"
    finally:
        assert r1.stop() == 0
    nothing_attached(lab, lab.topo.reflector)


def test_no_reflection_leaves_without_t3_while_the_reflector_attaches(lab):
    """Issue 9 #8: egress is attached before ingress, so the very first packet
    reflected already gets T3. Test packets stream (about 20,000/s) at the
    reflector host from before its start until after; every reply has T3."""
    s, r = lab.topo.sender, lab.topo.reflector
    sock = stampnet.udp_socket(s, 40020, addr=s.addr)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    stop = threading.Event()
    sent = [0]

    def flood():
        seq = 0
        while not stop.is_set():
            for _ in range(20):
                seq += 1
                sock.sendto(struct.pack("!I", seq) + bytes(40), (r.addr, 862))
            time.sleep(0.001)
        sent[0] = seq

    replies = []

    def receive():
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                replies.append(sock.recv(2048))
            except (TimeoutError, socket.timeout):
                continue

    threads = [threading.Thread(target=f, daemon=True) for f in (flood, receive)]
    for t in threads:
        t.start()
    try:
        refl = lab.reflector()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        sock.close()
    try:
        assert replies, f"no reply to {sent[0]} test packets"
        no_t3 = [struct.unpack_from("!I", p)[0] for p in replies if p[4:12] == bytes(8)]
        assert no_t3 == [], (f"{len(no_t3)} of {len(replies)} replies left without T3 while the "
                             f"reflector attached (sequence numbers {no_t3[:10]}...)")
    finally:
        assert refl.stop() == 0
