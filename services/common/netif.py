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
