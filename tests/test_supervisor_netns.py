"""`stamp-bpf run` for real: a reflector host and a sender host in network
namespaces, real BPF, real ZeroMQ, the exporter scraped over HTTP.

    [sender ns: stamp-bpf run -> exporter, reflector, sender] <-veth-> [reflector ns: stamp-bpf run -> exporter, reflector]

The sender host also runs a reflector on the same interface and port, as the
chart's default deployment does on every node.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stamp_bpf.common import bpfsys
from stamp_bpf.lab.netns import Topology

import stampnet
from test_supervisor_harness import SupervisorRun, wait_until

pytestmark = pytest.mark.timeout(300)

REFLECTOR = "198.18.0.2"
SCRAPE = ("import sys, urllib.request; "
          "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")


@pytest.fixture
def topo():
    with Topology("direct") as t:
        yield t


@pytest.fixture
def supervisors():
    runs = []

    def start(ns, conf):
        r = SupervisorRun(["--config", str(conf)], ns=ns)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.close()


def write_conf(path, topo, host, role, **extra):
    """A host's stamp-bpf.toml: `role` is "sender" (sender + reflector) or "reflector"."""
    lines = [
        "[sender]", f"enabled = {'true' if role == 'sender' else 'false'}",
        f'interface = "{host.ifname}"', f'reflectorIPs = ["{REFLECTOR}"]',
        f"interval = {extra.get('interval', 0.05)}",
        "[reflector]", f'interface = "{host.ifname}"',
        "[monitoring]", 'listen = "127.0.0.1:9862"',
        "[zmq]", f'endpoint = "ipc:///run/stamp-bpf/{topo.prefix}-{role}.sock"',
        "[supervisor]", "backoffInitial = 0.5", "statsInterval = 0.5", "stopTimeout = 10",
        "readyTimeout = 30",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def scrape(ns):
    """{(name, sorted label items): value} from the exporter in namespace ns."""
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRAPE,
                          "http://127.0.0.1:9862/metrics"], capture_output=True, text=True,
                         timeout=20)
    if res.returncode != 0:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(res.stdout) for s in fam.samples}


def value(metrics, name, **labels):
    want = tuple(sorted(labels.items()))
    return metrics.get((name, want))


def received(ns):
    return value(scrape(ns), "stamp_packets_received_total",
                 reflector=f"{REFLECTOR}:862", sender="198.18.0.1:862") or 0


def our_filters(host):
    """The TC programs on host's interface, ingress and egress: the filters as `tc`
    prints them, and the tcx programs as BPF_PROG_QUERY lists them."""
    out = []
    for direction in ("ingress", "egress"):
        out += subprocess.run(["tc", "-n", host.ns, "filter", "show", "dev", host.ifname,
                               direction], capture_output=True, text=True).stdout.splitlines()
    with stampnet.netns(host.ns):
        idx = socket.if_nametoindex(host.ifname)
        for direction, hook in (("ingress", bpfsys.TCX_INGRESS), ("egress", bpfsys.TCX_EGRESS)):
            out += [f"tcx {direction} prog {p} link {link}" for p, link in bpfsys.prog_query(idx, hook)]
    return [line for line in out if line.strip()]


def child_pid(sup, name):
    return [e for e in sup.events() if e.get("child") == name and
            e["event"] in ("child_started", "child_restarted")][-1]["pid"]


def child_lines(sup, service, event):
    return [e for e in sup.json_lines(strict=False)
            if e.get("service") == service and e.get("event") == event]


def counting(ns, timeout, what):
    """Wait until the exporter in ns counts replies and the count grows; return it."""
    def grown():
        a = received(ns)
        time.sleep(0.5)
        b = received(ns)
        return b > a > 0 and b
    return wait_until(grown, timeout, what)


def test_killed_sender_is_back_and_measuring_and_stop_leaves_nothing(topo, supervisors, tmp_path):
    ref = supervisors(topo.reflector.ns,
                      write_conf(tmp_path / "ref.toml", topo, topo.reflector, "reflector"))
    snd = supervisors(topo.sender.ns,
                      write_conf(tmp_path / "snd.toml", topo, topo.sender, "sender"))
    counting(topo.sender.ns, 90, "the sender host's exporter counted replies from the reflector host")
    filters_before = our_filters(topo.sender)
    exporter_pid = child_pid(snd, "exporter")

    # SIGKILL the sender mid-run: it is back after backoffInitial and measuring again.
    sender_pid = child_pid(snd, "sender")
    killed_at = time.monotonic()
    os.kill(sender_pid, signal.SIGKILL)
    snd.wait_event("child_restarted", child="sender", timeout=10)
    restarted_after = time.monotonic() - killed_at
    assert 0.5 <= restarted_after < 2.0, \
        f"The sender is restarted after the 0.5 s backoff, not {restarted_after:.1f} s later."
    exited = snd.events("child_exited", child="sender")[0]
    assert exited["signal"] == "SIGKILL" and exited["pid"] == sender_pid, \
        f"The exit is logged with the old pid and the signal: {exited}."
    new_pid = child_pid(snd, "sender")
    assert new_pid != sender_pid, "The sender runs as a new process."
    wait_until(lambda: [e for e in child_lines(snd, "sender", "attached")][2:], 60,
               "the restarted sender attached its two TC programs")
    counting(topo.sender.ns, 60, "the restarted sender's replies are counted by the same exporter")
    m = scrape(topo.sender.ns)
    assert value(m, "stamp_supervisor_restarts_total", service="sender") == 1 and \
        value(m, "stamp_supervisor_up", service="sender") == 1, \
        "The exporter shows the restart counted and the sender up."
    assert value(m, "stamp_supervisor_restarts_total", service="exporter") == 0 and \
        child_pid(snd, "exporter") == exporter_pid, "The exporter itself ran throughout."
    assert len(our_filters(topo.sender)) == len(filters_before), \
        f"The restarted sender replaced its killed predecessor's filters instead of adding " \
        f"more: {filters_before} then {our_filters(topo.sender)}"
    assert ref.proc.poll() is None and not ref.events("child_exited"), \
        "The reflector host ran without a restart."

    # SIGTERM: sender, reflector, exporter; nothing left behind.
    snd.signal(signal.SIGTERM)
    assert snd.wait(60) == 0, "The supervisor exits 0 after SIGTERM."
    stopped = snd.events("child_stopped")
    assert [e["child"] for e in stopped] == ["sender", "reflector", "exporter"] and \
        not any(e["killed"] for e in stopped), \
        f"Children stop in the order sender, reflector, exporter, each within the timeout: {stopped}"
    assert our_filters(topo.sender) == [], "No TC filter is left on the sender host's interface."
    assert not os.path.exists(f"/run/stamp-bpf/{topo.prefix}-sender.sock"), \
        "No socket file is left behind."
    assert len(snd.json_lines(strict=True)) == len(snd.stdout), \
        "Every line of the whole system's output is one JSON object (stamp-bpf run | jq works)."


def test_sighup_restarts_only_the_sender_and_every_record_is_counted(topo, supervisors, tmp_path):
    supervisors(topo.reflector.ns,
                write_conf(tmp_path / "ref.toml", topo, topo.reflector, "reflector"))
    conf = write_conf(tmp_path / "snd.toml", topo, topo.sender, "sender")
    snd = supervisors(topo.sender.ns, conf)
    counting(topo.sender.ns, 90, "the sender host's exporter counted replies")
    pids = {n: child_pid(snd, n) for n in ("exporter", "reflector", "sender")}

    write_conf(conf, topo, topo.sender, "sender", interval=0.02)
    snd.signal(signal.SIGHUP)
    reloaded = snd.wait_event("reloaded", timeout=60)[0]
    assert reloaded["restarted"] == ["sender"], \
        f"Only the sender, whose interval changed, is restarted: {reloaded}."
    after = {n: child_pid(snd, n) for n in pids}
    assert after["exporter"] == pids["exporter"] and after["reflector"] == pids["reflector"] \
        and after["sender"] != pids["sender"], f"Only the sender's pid changed: {pids} -> {after}."
    argv = snd.events("child_started", child="sender")[-1]["argv"]
    assert argv[argv.index("--interval") + 1] == "0.02", "The new sender has the new interval."
    wait_until(lambda: child_lines(snd, "sender", "attached")[2:], 60,
               "the new sender attached its two TC programs")
    counting(topo.sender.ns, 60, "the new sender's replies are counted")

    # Stopped in order, the exporter last: it has counted every record all sent.
    snd.signal(signal.SIGTERM)
    assert snd.wait(60) == 0, "The supervisor exits 0 after SIGTERM."
    summaries = child_lines(snd, "sender", "summary") + child_lines(snd, "reflector", "summary")
    assert len(summaries) == 3, \
        "Both senders (before and after the reload) and the reflector logged a summary."
    sent = sum(e["records_sent"] for e in summaries)
    dropped = sum(e["records_dropped"] for e in summaries)
    sup = snd.events("supervisor_stopped")[0]
    exp = child_lines(snd, "exporter", "stopped")[0]
    assert dropped == 0 and sup["records_dropped"] == 0, "No record was dropped on the way."
    assert len(snd.json_lines(strict=True)) == len(snd.stdout), \
        "Every line of the whole system's output is one JSON object (stamp-bpf run | jq works)."
    assert exp["records_received"] == sent + sup["records_sent"], \
        f"The exporter, stopped last, counted every record: received {exp['records_received']}, " \
        f"sent {sent} by the services and {sup['records_sent']} by the supervisor."


def test_sender_failing_on_start_makes_the_supervisor_give_up(topo, supervisors, tmp_path):
    # A flag value the real stamp-sender refuses, every time, on any host.
    conf = write_conf(tmp_path / "snd.toml", topo, topo.sender, "sender")
    conf.write_text(conf.read_text()
                    .replace("[reflector]", 'extraArgs = ["--timestamp-format", "sundial"]\n'
                                            "[reflector]\nenabled = false")
                    .replace("backoffInitial = 0.5", "backoffInitial = 0.2\nmaxRestarts = 2"))
    snd = supervisors(topo.sender.ns, conf)
    rc = snd.wait(120)
    assert rc == 1, f"The supervisor gives up with exit code 1, not {rc}."
    err = b"".join(snd.stderr).decode()
    assert "stamp-bpf: sender crashed 3 times in a row (last: exit code 2)" in err and \
        "invalid choice: 'sundial'" in err, \
        f"One clear line on stderr says the sender kept failing and why: {err!r}"
    assert len(snd.events("child_exited", child="sender")) == 2 and \
        snd.events("child_gave_up", child="sender"), \
        "Two crashes were restarted, the third one gave up."
    assert [e["child"] for e in snd.events("child_stopped")] == ["exporter"], \
        "The exporter is stopped before the supervisor exits."
    assert our_filters(topo.sender) == [], "Nothing is left attached."
