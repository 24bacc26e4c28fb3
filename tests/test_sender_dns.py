"""--reflector-dns beside static REFLECTOR addresses: the two sets of sessions stay apart.

    [sender ns] --veth-- [reflector ns]
    stamp-sender REFLECTOR --reflector-dns NAME, NAME resolving (the namespace's
    /etc/hosts, which `ip netns exec` mounts from /etc/netns/<ns>/) to another address

A DNS answer that does not hold the static reflector must not stop it: the static
session measures on, and the discovered one is started beside it.
"""

import shutil
import time
from pathlib import Path

import pytest

from conftest import reflector

pytestmark = pytest.mark.timeout(240)

NAME = "reflectors.stamp-test.invalid"
OTHER = "198.18.0.77"     # in the lab's subnet, nobody has it: that session only loses


@pytest.fixture
def netns_hosts():
    made = []

    def make(ns, text):
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True, exist_ok=True)
        made.append(d)
        (d / "hosts").write_text(text)

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def test_a_dns_answer_without_the_static_reflector_does_not_stop_it(topology, service, netns_hosts):
    topo = topology("direct")
    netns_hosts(topo.sender.ns, f"127.0.0.1 localhost\n{OTHER} {NAME}\n")
    reflector(service, topo)
    snd = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                  "--reflector-dns", NAME, "--dns-interval", "1", "-i", "0.1", "-w", "0.3",
                  ready="sending")
    deadline = time.monotonic() + 60
    while not [e for e in snd.events("session_started") if e["reflector"] == f"{OTHER}:862"]:
        assert time.monotonic() < deadline, f"DNS never added {OTHER}:\n{snd.text()[-3000:]}"
        time.sleep(0.2)
    time.sleep(3)       # three more DNS answers
    assert snd.stop() == 0, f"The sender did not stop cleanly:\n{snd.text()[-3000:]}"
    static = f"{topo.reflector.addr}:862"
    stopping = [e["reflector"] for e in snd.events("session_stopping")]
    assert static not in stopping, "A DNS answer must never stop a reflector given on the command line."
    started = [e["reflector"] for e in snd.events("session_started")]
    assert started.count(static) == 1, f"The static reflector has one session: {started}"
    by_addr = {s["reflector"]: s for s in snd.summary()["sessions"]}
    assert set(by_addr) == {topo.reflector.addr, OTHER}
    s = by_addr[topo.reflector.addr]
    assert s["sent"] >= 30 and s["received"] >= s["sent"] - 4 and s["lost"] == 0, \
        f"The static reflector measured on all along: {s}"


def test_a_name_with_a_and_aaaa_records_is_measured_over_both_families(topology, service, netns_hosts):
    """--reflector-dns takes A and AAAA answers (--address-family any); with 4 only the A."""
    topo = topology("direct", ipv6=True)
    r = topo.reflector
    netns_hosts(topo.sender.ns, f"127.0.0.1 localhost\n{r.addr} {NAME}\n{r.addr6} {NAME}\n")
    reflector(service, topo)
    both = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, "--reflector-dns", NAME,
                   "--dns-interval", "1", "-i", "0.1", "-s", "40862", ready="sending")
    # One BPF sender per interface (the hooks have one owner): the second in user space.
    only4 = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, "--reflector-dns", NAME,
                    "--dns-interval", "1", "-i", "0.1", "-s", "41862", "--address-family", "4",
                    "--timestamping", "user", ready="sending")
    time.sleep(4)
    for svc in (both, only4):
        assert svc.proc.poll() is None, f"The sender died on a dual-stack answer:\n{svc.text()[-3000:]}"
        assert svc.stop() == 0
    started = {e["reflector"] for e in only4.events("session_started")}
    assert started == {f"{r.addr}:862"}, f"--address-family 4 takes the A record only: {started}"
    by_addr = {s["reflector"]: s for s in both.summary()["sessions"]}
    assert by_addr[r.addr]["received"] >= 20, f"The IPv4 session measured: {by_addr}"
    assert not both.events("ipv6_not_measured"), "A host with IPv6 measures the AAAA answer."
    assert by_addr[r.addr6]["received"] >= 20, f"The AAAA record is measured over IPv6: {by_addr}"
