"""IFACE auto: the interface of the kernel's route to the reflectors; and a missing
interface named in one line with the interfaces that exist.
"""

import json

from conftest import reflector


def error_lines(svc):
    return [e for e in svc.lines() if e.get("level") == "error"]


def test_auto_takes_the_routes_interface_on_both_sides(topology, service):
    topo = topology("direct")
    refl = service(topo, topo.reflector, "stamp-reflector", "auto", ready="reflecting")
    chosen = refl.events("interface_chosen")
    assert chosen and chosen[0]["interface"] == topo.reflector.ifname, (
        f"The reflector (no default route, one interface) should pick {topo.reflector.ifname}: {chosen}.")
    sender = service(topo, topo.sender, "stamp-sender", "auto", topo.reflector.addr, "-c", "3",
                     "-i", "0.05", ready="sending")
    assert sender.wait_exit(60) == 0
    assert sender.events("interface_chosen")[0]["interface"] == topo.sender.ifname
    assert sender.summary()["sessions"][0]["received"] == 3, "The sender on the chosen interface measures."
    refl.stop()


def test_auto_refuses_reflectors_behind_two_interfaces(topology, service):
    topo = topology("direct")
    topo.run(topo.sender, ["ip", "link", "add", "side0", "type", "veth", "peer", "name", "side1"], check=True)
    topo.run(topo.sender, ["ip", "link", "set", "side0", "up"], check=True)
    topo.run(topo.sender, ["ip", "addr", "add", "203.0.113.1/24", "dev", "side0"], check=True)
    sender = service(topo, topo.sender, "stamp-sender", "auto", topo.reflector.addr, "203.0.113.5",
                     "-c", "1")
    assert sender.wait_exit(60) == 1
    errors = error_lines(sender)
    assert len(errors) == 1, f"One error line: {errors}."
    reason = errors[0]["reason"]
    for word in (topo.sender.ifname, "side0", topo.reflector.addr, "203.0.113.5", "one sender per interface"):
        assert word in reason, f"The error should name {word!r}: {reason}"


def test_missing_interface_names_the_ones_that_exist(topology, service):
    topo = topology("direct")
    sender = service(topo, topo.sender, "stamp-sender", "ens99", topo.reflector.addr, "-c", "1")
    assert sender.wait_exit(60) == 1
    errors = error_lines(sender)
    assert len(errors) == 1, f"One error line: {json.dumps(errors)}."
    reason = errors[0]["reason"]
    assert "no network interface named 'ens99'" in reason and topo.sender.ifname in reason and "lo" in reason, (
        f"The error should name the interfaces this host has: {reason}")
