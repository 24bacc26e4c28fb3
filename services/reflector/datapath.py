"""The reflector's BPF datapath: reflector_ingress.c and reflector_egress.c."""

import ctypes

from ..common import bpfprog, datapath, tc
from . import guard

FILES = ["maps.h", "reflector_maps.h", "reflector_ingress.c", "reflector_egress.c"]
# 2 MiB: about 2 s of records at 10,000 packets/s, so a sender or reflector
# process that waits for a CPU does not lose records (a lost sender record is
# a reply counted as lost).
RINGBUF_PAGES = 512
PROGRAMS = ["reflector_ingress", "reflector_egress"]


def defines(port, ptp, rate_sources=guard.DEFAULT_RATE_SOURCES):
    return {"STAMP_PORT": port, "STAMP_TS_PTP": int(ptp), "RINGBUF_PAGES": RINGBUF_PAGES,
            "GUARD_RATE_SOURCES": rate_sources}


def load(port, ptp, debug=False, rate_sources=guard.DEFAULT_RATE_SOURCES):
    bpf, funcs = bpfprog.load(FILES, defines(port, ptp, rate_sources), PROGRAMS, debug=debug)
    return ReflectorDatapath(bpf, ptp), {tc.INGRESS: funcs["reflector_ingress"],
                                         tc.EGRESS: funcs["reflector_egress"]}


class ReflectorDatapath(datapath.Datapath):

    def __init__(self, bpf, ptp):
        super().__init__(bpf, ptp)
        self._addrs = set()
        self._prefixes = set()

    def set_addresses(self, addrs):
        """Reflect for exactly these IPv4 addresses; returns (added, removed)."""
        table = self.bpf[b"local_addrs"]
        new = set(addrs)
        for a in new - self._addrs:
            table[table.Key(datapath.ipv4_be32(a))] = table.Leaf(1)
        for a in self._addrs - new:
            del table[table.Key(datapath.ipv4_be32(a))]
        added, removed = new - self._addrs, self._addrs - new
        self._addrs = new
        return added, removed

    def set_guard(self, prefixes, limit):
        """Answer only senders in `prefixes` (none: everyone), at most `limit` each.

        The tries change entry by entry, new prefixes first: a sender in both
        the old and the new list is never refused in between, and sessions go
        on. Returns (added, removed) prefixes.
        """
        new = set(prefixes)
        old = self._prefixes
        for net in sorted(new - old, key=str):
            table = self._trie(net)
            table[_trie_key(table, net)] = table.Leaf(1)
        cfg = self.bpf[b"guard_config"]
        leaf = cfg.Leaf()
        leaf.interval_ns = limit.interval_ns
        leaf.tolerance_ns = limit.tolerance_ns
        leaf.allow_on = int(bool(new))
        cfg[cfg.Key(0)] = leaf
        for net in sorted(old - new, key=str):
            table = self._trie(net)
            del table[_trie_key(table, net)]
        self._prefixes = new
        return new - old, old - new

    def _trie(self, net):
        return self.bpf[b"allow_v4" if net.version == 4 else b"allow_v6"]


def _trie_key(table, net):
    """The LPM trie key of a prefix: its length, then its address in network order."""
    key = table.Key()
    key.prefixlen = net.prefixlen
    raw = net.network_address.packed
    key.addr = (ctypes.c_ubyte * len(raw))(*raw)
    return key
