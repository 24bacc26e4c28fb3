"""--max-peers with --reflector-dns while the DNS membership changes (real dnsmasq).

    sender ns: stamp-sender --reflector-dns mesh.stamp.test --max-peers 3
               dnsmasq answering mesh.stamp.test from a hosts file  <--veth-->  reflector ns:
    (this node's own address is in the answer, as in Kubernetes)               stamp-reflector,
                                                                               8 addresses

The sessions started must be exactly peers.choose() of the members; when the
hosts file changes (dnsmasq re-reads it on SIGHUP) only the sessions that
involve the members that left or joined may change, and in the sender's real
exporter (--idle-timeout 4) the series of the session that ended are gone
within the idle timeout while the new session's appear.
"""

import signal
import shutil
import tempfile
import time

import pytest

from stamp_bpf.sender import peers

from conftest import reflector
from test_exporter import ExporterProcess

NAME = "mesh.stamp.test"
K = 3


def started(svc):
    return {e["reflector"].split(":")[0] for e in svc.events("session_started")}


def stopping(svc):
    return {e["reflector"].split(":")[0] for e in svc.events("session_stopping")}


def wait_for(what, check, svc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout} s; the sender logged:\n{svc.text()[-3000:]}")


@pytest.fixture
def exporter():
    folder = tempfile.mkdtemp(prefix="stp-")
    exp = ExporterProcess(folder, "--idle-timeout", str(IDLE_S))
    yield exp
    exp.stop()
    shutil.rmtree(folder, ignore_errors=True)


IDLE_S = 4


def reflectors_with_series(exp):
    return {dict(k[1])["reflector"].split(":")[0] for k in exp.samples()
            if k[0] == "stamp_packets_sent_total"}


@pytest.mark.timeout(240)
def test_sessions_follow_the_ring_as_members_leave_and_join(topology, service, resolv_confs, tmp_path,
                                                            exporter):
    topo = topology("direct", extra_addrs=7)
    me = topo.sender.addr
    members = [topo.reflector.addr, *topo.reflector.extra_addrs]
    hosts = tmp_path / "mesh.hosts"

    def publish(addrs):
        hosts.write_text("".join(f"{a} {NAME}\n" for a in [me, *addrs]))

    publish(members)
    resolv_confs(topo.sender.ns, "nameserver 127.0.0.1\n")
    dns = topo.popen(topo.sender, [
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
        "--listen-address=127.0.0.1", "--bind-interfaces", "--port=53", "--local=/stamp.test/",
        "--pid-file=", "--user=root", f"--addn-hosts={hosts}"])
    reflector(service, topo)
    sender = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, "--reflector-dns", NAME,
                     "--dns-interval", "1", "--max-peers", K, "--interval", "0.2", "--zmq", exporter.endpoint,
                     ready="sending")

    first = set(peers.choose(me, members, K))
    wait_for(f"the sender should start the {K} sessions peers.choose picks",
             lambda: started(sender) == first, sender)
    assert sender.events("peers_chosen")[-1]["members"] == len(members) + 1, (
        "peers_chosen should count every member of the DNS answer, this node included.")

    # One chosen member leaves and a new one (an address the reflector does not have yet) joins.
    leaving = sorted(first)[0]
    joining = "198.19.0.200"
    topo.run(topo.reflector, ["ip", "addr", "add", f"{joining}/32", "dev", topo.reflector.ifname],
             check=True)
    topo.run(topo.sender, ["ip", "neigh", "replace", joining, "lladdr", topo.reflector.mac, "dev",
                           topo.sender.ifname, "nud", "permanent"], check=True)
    after = [m for m in members if m != leaving] + [joining]
    second = set(peers.choose(me, after, K))
    publish(after)
    dns.send_signal(signal.SIGHUP)
    wait_for("the sender should follow the new membership",
             lambda: stopping(sender) >= first - second and started(sender) >= second, sender)
    time.sleep(3)       # a few more lookups: nothing else may move
    assert stopping(sender) == first - second, (
        f"Only sessions to members no longer chosen should stop: {stopping(sender)} "
        f"(expected {first - second}).")
    assert started(sender) == first | second, (
        f"Only the newly chosen members should get sessions: {started(sender)} "
        f"(expected {first | second}).")
    assert leaving in first - second, "The member that left should have lost its session."
    wait_for(f"the exporter should drop the ended sessions' series within --idle-timeout {IDLE_S} s",
             lambda: reflectors_with_series(exporter) == second, sender, timeout=IDLE_S + 10)
    sender.stop()
    summary = sender.summary()
    live = {s["reflector"].split(":")[0]: s for s in summary["sessions"]}
    for addr in second:
        assert live[addr]["received"] > 0, f"The session to {addr} should have been answered: {live[addr]}."
