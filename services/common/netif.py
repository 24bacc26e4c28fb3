"""Interface facts from the kernel, through pyroute2."""

import socket

from pyroute2 import IPRoute


def ipv4_addresses(ifname):
    """The IPv4 addresses on `ifname` (all of them: primary and secondary)."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            raise LookupError(f"no network interface named {ifname!r}; see `ip link` for the names here")
        return sorted(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index[0], family=socket.AF_INET))


def other_ipv4_addresses(ifname):
    """This host's IPv4 addresses a reply must never go to besides `ifname`'s own:
    the subnet broadcast addresses of `ifname` and every address of the other
    interfaces (the reflector's guard, bpf/guard.h)."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            raise LookupError(f"no network interface named {ifname!r}; see `ip link` for the names here")
        out = set()
        for a in ipr.get_addr(family=socket.AF_INET):
            if a["index"] == index[0]:
                if a.get_attr("IFA_BROADCAST"):
                    out.add(a.get_attr("IFA_BROADCAST"))
            else:
                out.add(a.get_attr("IFA_ADDRESS"))
        return sorted(out - set(ipv4_addresses(ifname)))
