"""Interface facts from the kernel, through pyroute2."""

import ipaddress
import socket

from pyroute2 import IPRoute

from . import addr

# include/uapi/linux/if_addr.h: an address the kernel does not deliver to yet
# (duplicate address detection running or failed, RFC 4862 5.4).
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
# include/uapi/linux/if.h
IFF_LOOPBACK = 0x8


def _index(ipr, ifname):
    index = ipr.link_lookup(ifname=ifname)
    if not index:
        raise LookupError(f"no network interface named {ifname!r}; this host has "
                          f"{', '.join(names(ipr))} (or give auto: the route's interface)")
    return index[0]


def is_loopback(ifname):
    """Is `ifname` a loopback interface (lo), where only this host sends frames?"""
    with IPRoute() as ipr:
        return bool(ipr.get_links(_index(ipr, ifname))[0]["flags"] & IFF_LOOPBACK)


def ipv4_addresses(ifname):
    """The IPv4 addresses on `ifname` (all of them: primary and secondary)."""
    with IPRoute() as ipr:
        return sorted(a.get_attr("IFA_ADDRESS")
                      for a in ipr.get_addr(index=_index(ipr, ifname), family=socket.AF_INET))


def ipv6_addresses(ifname):
    """The IPv6 addresses on `ifname` that receive packets: global, unique-local and
    link-local, not those still tentative or failed in duplicate address detection."""
    with IPRoute() as ipr:
        out = set()
        for a in ipr.get_addr(index=_index(ipr, ifname), family=socket.AF_INET6):
            flags = a.get_attr("IFA_FLAGS") or a["flags"]
            if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                continue
            out.add(addr.normalize(a.get_attr("IFA_ADDRESS")))
        return sorted(out)


def addresses(ifname):
    """Both families' addresses on `ifname`, IPv4 first."""
    return ipv4_addresses(ifname) + ipv6_addresses(ifname)


def other_ipv4_addresses(ifname):
    """This host's IPv4 addresses a reply must never go to besides `ifname`'s own:
    the subnet broadcast addresses of `ifname` and every address of the other
    interfaces (the reflector's guard, bpf/guard.h). A subnet's broadcast is
    its prefix's last address (for prefixes up to /30), which the kernel routes
    as broadcast whether or not the address was given one (`ip addr add ...
    brd +`), and the IFA_BROADCAST the address was given, if another."""
    with IPRoute() as ipr:
        index = _index(ipr, ifname)
        out = set()
        for a in ipr.get_addr(family=socket.AF_INET):
            if a["index"] == index:
                if a.get_attr("IFA_BROADCAST"):
                    out.add(a.get_attr("IFA_BROADCAST"))
                if a["prefixlen"] < 31:     # /31 and /32 have no broadcast (RFC 3021)
                    net = ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}",
                                               strict=False)
                    out.add(str(net.broadcast_address))
            else:
                out.add(a.get_attr("IFA_ADDRESS"))
        return sorted(out - set(ipv4_addresses(ifname)))


def other_ipv6_addresses(ifname):
    """The IPv6 twin of other_ipv4_addresses(): every address of the other
    interfaces but their link-local ones, which belong to other links (IPv6
    has no broadcast; multicast sources are refused by the guard itself)."""
    with IPRoute() as ipr:
        index = _index(ipr, ifname)
        out = {addr.normalize(a.get_attr("IFA_ADDRESS"))
               for a in ipr.get_addr(family=socket.AF_INET6) if a["index"] != index}
    return sorted(a for a in out - set(ipv6_addresses(ifname)) if not addr.is_link_local(a))


def names(ipr=None):
    """Names of every network interface here, sorted."""
    if ipr is None:
        with IPRoute() as ipr:
            return names(ipr)
    return sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())


def all_addresses():
    """Every address of either family on this host (all interfaces), IPv6 without scope."""
    with IPRoute() as ipr:
        return ({a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)} |
                {addr.normalize(a.get_attr("IFA_ADDRESS"))
                 for a in ipr.get_addr(family=socket.AF_INET6)})
