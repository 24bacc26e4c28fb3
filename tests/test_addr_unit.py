"""IPv4 and IPv6 addresses everywhere: one spelling, the 16-octet wire form, endpoint
labels, the sender's --reflector-dns answers and destinations (fast layer, no root)."""

import socket

import pytest

from stamp_bpf.common import addr
from stamp_bpf.sender import resolver, transmit

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
