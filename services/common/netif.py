"""Interface facts from the kernel, through pyroute2."""

import ipaddress
import socket

from pyroute2 import IPRoute


def ipv4_addresses(ifname):
    """The IPv4 addresses on `ifname` (all of them: primary and secondary)."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            raise LookupError(f"no network interface named {ifname!r}; this host has "
                              f"{', '.join(names(ipr))} (or give auto: the route's interface)")
        return sorted(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index[0], family=socket.AF_INET))


def other_ipv4_addresses(ifname):
    """This host's IPv4 addresses a reply must never go to besides `ifname`'s own:
    the subnet broadcast addresses of `ifname` and every address of the other
    interfaces (the reflector's guard, bpf/guard.h). A subnet's broadcast is
    its prefix's last address (for prefixes up to /30), which the kernel routes
    as broadcast whether or not the address was given one (`ip addr add ...
    brd +`), and the IFA_BROADCAST the address was given, if another."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            raise LookupError(f"no network interface named {ifname!r}; see `ip link` for the names here")
        out = set()
        for a in ipr.get_addr(family=socket.AF_INET):
            if a["index"] == index[0]:
                if a.get_attr("IFA_BROADCAST"):
                    out.add(a.get_attr("IFA_BROADCAST"))
                if a["prefixlen"] < 31:     # /31 and /32 have no broadcast (RFC 3021)
                    net = ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}",
                                               strict=False)
                    out.add(str(net.broadcast_address))
            else:
                out.add(a.get_attr("IFA_ADDRESS"))
        return sorted(out - set(ipv4_addresses(ifname)))


def names(ipr=None):
    """Names of every network interface here, sorted."""
    if ipr is None:
        with IPRoute() as ipr:
            return names(ipr)
    return sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())


def all_ipv4_addresses():
    """Every IPv4 address on this host (all interfaces)."""
    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}
