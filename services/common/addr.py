"""IP addresses of either family: one spelling, one wire form, one endpoint label.

Every address stamp-bpf keeps is a plain string in the family's usual form:
dotted quad for IPv4, RFC 5952 text for IPv6 (lower case, zeros compressed,
no scope: a link-local address is scoped to the interface a service runs on).
Records and ring-buffer events carry 16 octets: an IPv6 address as it is, an
IPv4 address as its IPv4-mapped form ::ffff:a.b.c.d (RFC 4291 2.5.5.2), which
is never a real IPv6 peer of ours.

    normalize("2001:DB8::01") -> "2001:db8::1"      ValueError for anything else
    family("10.0.0.1") -> 4,  family("::1") -> 6
    endpoint("2001:db8::1", 862) -> "[2001:db8::1]:862"   (RFC 5952 section 6)
    pack16("10.0.0.1") -> b"\\0" * 10 + b"\\xff\\xff" + 4 octets;  unpack16(b) -> str
"""

import functools
import ipaddress
import socket

FAMILIES = ("any", "4", "6")        # --address-family / sender.addressFamily values
_MAPPED = b"\0" * 10 + b"\xff\xff"


def normalize(text):
    """The one spelling of an IPv4 or IPv6 address; ValueError when it is neither.

    A scope (fe80::1%eth0) is refused: the services scope link-local addresses
    to their own interface.
    """
    if "%" in str(text):
        raise ValueError(f"{text!r} has a scope (%...); write the address alone, it is "
                         "scoped to the interface given")
    a = ipaddress.ip_address(str(text).strip())
    if a.version == 6 and a.ipv4_mapped:
        return str(a.ipv4_mapped)
    return str(a)


def family(addr):
    """4 or 6."""
    return 6 if ":" in addr else 4


def wanted(addr, address_family):
    """Does `addr` belong to the --address-family choice ("any", "4" or "6")?"""
    return address_family == "any" or str(family(addr)) == address_family


def is_link_local(addr):
    return family(addr) == 6 and ipaddress.IPv6Address(addr).is_link_local


def endpoint(addr, port):
    """`addr:port`, with the IPv6 address in brackets: "[2001:db8::1]:862"."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@functools.lru_cache(maxsize=4096)
def pack16(addr):
    """The 16-octet wire form of an address (IPv4 as ::ffff:a.b.c.d)."""
    if ":" in addr:
        return socket.inet_pton(socket.AF_INET6, addr)
    return _MAPPED + socket.inet_pton(socket.AF_INET, addr)


@functools.lru_cache(maxsize=4096)
def unpack16(b):
    """The string form of a 16-octet wire address (an IPv4-mapped one as IPv4)."""
    b = bytes(b)
    if b[:12] == _MAPPED:
        return socket.inet_ntoa(b[12:])
    return socket.inet_ntop(socket.AF_INET6, b)
