"""IFACE `auto`: the interface the kernel's route to the peers uses.

Nodes name their NICs eth0, ens5, enp1s0, bond0, ...: with `auto` the sender
asks the kernel which interface its route to each reflector leaves by (as
`ip route get ADDRESS` does) and attaches there; the reflector, which does not
know its senders, takes the interface of the default route. One process
attaches to one interface, so reflectors reached through different interfaces
are refused with a line naming them (run one sender per interface).
"""

import socket

from pyroute2 import IPRoute

from . import addr, netif

AUTO = "auto"


def _name(ipr, index):
    return ipr.get_links(index)[0].get_attr("IFLA_IFNAME")


def route_interface(ipr, dst):
    """Name of the interface the kernel's route to `dst` leaves by."""
    routes = ipr.route("get", dst=dst)
    if not routes or routes[0].get_attr("RTA_OIF") is None:
        raise LookupError(f"interface auto: the kernel has no route to {dst}")
    return _name(ipr, routes[0].get_attr("RTA_OIF"))


def default_interface(ipr):
    """The default route's interface, else the only interface with an IPv4 address besides lo."""
    for r in ipr.get_default_routes(family=socket.AF_INET):
        if r.get_attr("RTA_OIF") is not None:
            return _name(ipr, r.get_attr("RTA_OIF"))
    named = sorted({_name(ipr, a["index"]) for a in ipr.get_addr(family=socket.AF_INET)} - {"lo"})
    if len(named) == 1:
        return named[0]
    raise LookupError("interface auto: no default route, and not exactly one interface with an "
                      f"IPv4 address ({', '.join(named) or 'none'}); name the interface instead "
                      f"(interfaces here: {', '.join(netif.names())})")


def lookup(name, address_family="any"):
    """The addresses of the wanted families `name` resolves to now, or [] (the caller
    falls back)."""
    gai = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}[address_family]
    try:
        infos = socket.getaddrinfo(name, None, gai, socket.SOCK_DGRAM)
    except OSError:
        return []
    found = {addr.normalize(i[4][0].split("%")[0]) for i in infos}
    # Link-local answers have no route to choose an interface by.
    return sorted(a for a in found if not addr.is_link_local(a))


def choose(targets):
    """The one interface the routes to `targets` (addresses of either family) use; with
    no target, the default route's. Raises LookupError with one line saying what to do."""
    local = [t for t in targets if addr.is_link_local(t)]
    if local:
        raise LookupError(f"interface auto: {local[0]} is link-local, which every interface "
                          "has a route to: name the interface instead of auto")
    with IPRoute() as ipr:
        if not targets:
            return default_interface(ipr)
        by_if = {}
        for t in targets:
            by_if.setdefault(route_interface(ipr, t), []).append(t)
    if len(by_if) > 1:
        where = "; ".join(f"{i}: {', '.join(a[:3])}{' ...' if len(a) > 3 else ''}"
                          for i, a in sorted(by_if.items()))
        raise LookupError(f"interface auto: the reflectors are reached through {len(by_if)} "
                          f"interfaces ({where}); run one sender per interface, each naming it")
    return next(iter(by_if))


def resolve(args):
    """args.interface, with `auto` replaced by the interface chosen for args' peers."""
    if args.interface != AUTO:
        return args.interface
    targets = list(getattr(args, "reflectors", None) or [])
    dns = getattr(args, "reflector_dns", None)
    if dns:
        own = netif.all_addresses()
        targets += [a for a in lookup(dns, getattr(args, "address_family", "any"))
                    if a not in own]
    return choose(targets)
