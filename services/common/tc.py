"""TC attachment of stamp-bpf's programs, through pyroute2.

Each service owns one priority and one handle: its filters are the ones with
both, on the clsact ingress/egress hooks of its interface. Nothing else on the
interface is touched: the clsact qdisc is created when missing and never
deleted (Cilium's filters live on it too), and stale filters of ours left by
a killed predecessor are removed by exact priority and handle.
"""

import contextlib
import errno

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

INGRESS = "ffff:fff2"
EGRESS = "ffff:fff3"

# Filters run in ascending priority. The sender's ingress filter must see its
# replies before the reflector's (RFC 8762 replies and a peer's test packets
# share addresses and ports in a mesh), so the sender's number is lower.
SENDER_PRIO = 0x5300
REFLECTOR_PRIO = 0x5301
SENDER_HANDLE = 0x53454E44      # "SEND"
REFLECTOR_HANDLE = 0x5245464C   # "REFL"


class TcError(Exception):
    """The TC attachment failed; the message says what and where."""


def ifindex(ipr, ifname):
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise TcError(f"no network interface named {ifname!r}; see `ip link` for the names here")
    return found[0]


def our_filters(ipr, index, prio, handle):
    """[(parent, prio, handle)] of filters on the interface with our prio and handle."""
    found = []
    for parent in (INGRESS, EGRESS):
        try:
            msgs = ipr.get_filters(index=index, parent=parent)
        except NetlinkError as e:
            if e.code in (errno.EINVAL, errno.ENOENT):   # no clsact yet
                continue
            raise
        for msg in msgs:
            p = msg["info"] >> 16
            if p == prio and msg["handle"] == handle:
                found.append((parent, prio, handle))
    return found


def detach(ipr, index, prio, handle):
    """Remove our filters (by exact prio and handle) from both hooks; returns how many."""
    removed = 0
    for parent, p, h in our_filters(ipr, index, prio, handle):
        with contextlib.suppress(NetlinkError):
            ipr.tc("del-filter", "bpf", index, h, parent=parent, prio=p)
            removed += 1
    return removed


@contextlib.contextmanager
def attached(ifname, programs, prio, handle, log):
    """Attach {INGRESS|EGRESS: bcc function} to `ifname` for the with block.

    Stale filters with our prio and handle are removed first; on exit ours
    are removed, and only ours.
    """
    with IPRoute() as ipr:
        index = ifindex(ipr, ifname)
        stale = detach(ipr, index, prio, handle)
        if stale:
            log.warning("stale_filters_removed", interface=ifname, count=stale,
                        hint="a previous instance was killed without cleaning up")
        try:
            ipr.tc("add", "clsact", index)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise TcError(f"cannot add clsact qdisc to {ifname}: {e}") from None
        try:
            for parent, fn in programs.items():
                ipr.tc("add-filter", "bpf", index, handle, fd=fn.fd, name=fn.name,
                       parent=parent, classid=1, direct_action=True, prio=prio)
                log.info("attached", interface=ifname, ifindex=index, program=fn.name.decode(),
                         hook="ingress" if parent == INGRESS else "egress",
                         prio=prio, handle=hex(handle))
        except NetlinkError as e:
            detach(ipr, index, prio, handle)
            raise TcError(f"cannot attach BPF filter to {ifname}: {e}") from None
        try:
            yield index
        finally:
            n = detach(ipr, index, prio, handle)
            log.info("detached", interface=ifname, filters=n)
