"""IPv4 and IPv6 addresses everywhere: one spelling, the 16-octet wire form, endpoint
labels, the sender's --reflector-dns answers and destinations (fast layer, no root)."""

import socket

import pytest

from stamp_bpf.common import addr, autoif
from stamp_bpf.sender import peers, resolver, transmit

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, want", [
    ("10.0.0.1", "10.0.0.1"), ("2001:DB8:0:0::01", "2001:db8::1"), (" fe80::1 ", "fe80::1"),
    ("::ffff:10.0.0.1", "10.0.0.1"), ("::", "::"),
])
def test_normalize_gives_the_one_spelling(text, want):
    assert addr.normalize(text) == want, f"{text!r} must read as {want!r}."


@pytest.mark.parametrize("text", ["10.0.0", "2001:db8::g", "fe80::1%eth0", "", "host.example"])
def test_normalize_refuses_what_is_not_one_address(text):
    with pytest.raises(ValueError):
        addr.normalize(text)


@pytest.mark.parametrize("a", ["10.0.0.1", "255.255.255.255", "0.0.0.0", "2001:db8::1",
                               "fe80::1", "::", "::1"])
def test_wire_form_round_trips_and_ipv4_is_mapped(a):
    b = addr.pack16(a)
    assert len(b) == 16 and addr.unpack16(b) == a, f"{a} must survive 16 octets, got {b!r}."
    if addr.family(a) == 4:
        assert b == socket.inet_pton(socket.AF_INET6, "::ffff:" + a), \
            "IPv4 is written IPv4-mapped (RFC 4291 2.5.5.2)."


def test_endpoints_put_ipv6_in_brackets():
    assert addr.endpoint("10.0.0.2", 862) == "10.0.0.2:862"
    assert addr.endpoint("2001:db8::1", 862) == "[2001:db8::1]:862", "RFC 5952 section 6."


def gai(*hosts):
    out = []
    for h in hosts:
        out += socket.getaddrinfo(h, None, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    return out


@pytest.mark.parametrize("family, want", [
    ("any", ["10.0.0.2", "10.0.0.3", "2001:db8::2", "fe80::2"]),
    ("4", ["10.0.0.2", "10.0.0.3"]),
    ("6", ["2001:db8::2", "fe80::2"]),
])
def test_dns_answers_keep_the_wanted_families_without_our_own_or_scopes(family, want):
    infos = gai("10.0.0.3", "10.0.0.2", "10.0.0.1", "2001:db8::2", "2001:db8::1", "fe80::2%lo")
    own = {"10.0.0.1", "2001:db8::1"}
    got = resolver.answer(infos, own, family)
    assert got == want, f"--address-family {family}: {got} instead of {want}."


def test_a_link_local_destination_is_scoped_to_our_interface_and_ipv4_is_mapped():
    assert transmit.sockaddr(7, "fe80::2", 862) == ("fe80::2", 862, 0, 7)
    assert transmit.sockaddr(7, "2001:db8::2", 862) == ("2001:db8::2", 862, 0, 0)
    assert transmit.sockaddr(7, "10.0.0.2", 862) == ("::ffff:10.0.0.2", 862, 0, 0)
    assert transmit.sockaddr(7, "10.0.0.2", 862, dual_stack=False) == ("10.0.0.2", 862)


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, event, **kw):
        self.lines.append({"event": event, **kw})


def test_max_peers_takes_k_per_family_on_its_own_ring():
    """A dual-stack answer: K peers over IPv4 and K over IPv6, each family's ring placed
    by our own address of that family; each family's in-degree stays K."""
    v4 = [f"10.0.0.{i}" for i in range(1, 21)]
    v6 = [f"2001:db8::{i:x}" for i in range(1, 21)]
    log = _Log()
    r = resolver.Resolver("x", 1, log, "any", max_peers=3)
    got = r.pick(set(v4[1:] + v6[1:]), {v4[0], v6[0]})
    assert sum(addr.family(a) == 4 for a in got) == 3 and sum(addr.family(a) == 6 for a in got) == 3, (
        f"3 peers per family: {got}")
    assert [a for a in got if addr.family(a) == 4] == peers.choose(v4[0], v4[1:], 3)
    assert [a for a in got if addr.family(a) == 6] == peers.choose(v6[0], v6[1:], 3)
    assert {(e["family"], e["me"], e["members"]) for e in log.lines} == {(4, v4[0], 20), (6, v6[0], 20)}
    indegree = {}
    for fam_members in (v4, v6):
        for me in fam_members:
            rr = resolver.Resolver("x", 1, _Log(), "any", max_peers=3)
            for a in rr.pick(set(fam_members) - {me}, {me}):
                indegree[a] = indegree.get(a, 0) + 1
    assert set(indegree.values()) == {3}, "Every member is measured by exactly K senders per family."


def test_max_peers_without_our_address_in_the_answer_uses_the_interfaces():
    r = resolver.Resolver("x", 1, _Log(), "any", max_peers=2, me=["10.0.0.99", "2001:db8::99"])
    got = r.pick({"10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2", "2001:db8::3"}, set())
    assert [a for a in got if addr.family(a) == 6] == peers.choose("2001:db8::99",
                                                                  ["2001:db8::1", "2001:db8::2", "2001:db8::3"], 2)
    assert [a for a in got if addr.family(a) == 4] == peers.choose("10.0.0.99",
                                                                  ["10.0.0.1", "10.0.0.2", "10.0.0.3"], 2)


def test_interface_auto_refuses_a_link_local_reflector_in_one_line():
    with pytest.raises(LookupError, match="fe80::2 is link-local.*name the interface"):
        autoif.choose(["10.0.0.2", "fe80::2"])
