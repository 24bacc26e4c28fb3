"""The reflector's BPF datapath: reflector_ingress.c and reflector_egress.c."""

import ctypes
import os

from ..common import bpfprog, datapath, tc, wire
from . import guard

# Headers with map accesses must be joined into the source (bcc rewrites only its own).
FILES = ["maps.h", "tlv.h", "reflector_sessions.h", "reflector_maps.h", "reflector_ingress.c",
         "reflector_egress.c"]
# The guard's kernel half (bpf/guard.h: allow-list tries, rate buckets, the
# refusal counters). Until it is in bpf/, the Python half refuses an allow-list
# in one line rather than answer everyone quietly (services/reflector/guard.py).
HAS_GUARD = os.path.exists(os.path.join(bpfprog.bpf_dir(), "guard.h"))
if HAS_GUARD:
    FILES.insert(FILES.index("reflector_maps.h"), "guard.h")
PROGRAMS = ["reflector_ingress", "reflector_egress"]
DEFAULT_MAX_SESSIONS = 65536
# local_addrs values (bpf/guard.h).
LOCAL_REFLECT, LOCAL_OTHER = 1, 2


def defines(port, ptp, stateful=False, max_sessions=DEFAULT_MAX_SESSIONS,
            rate_sources=guard.DEFAULT_RATE_SOURCES):
    return {"STAMP_PORT": port, "STAMP_TS_PTP": int(ptp), "RINGBUF_PAGES": datapath.RINGBUF_PAGES,
            "STAMP_STATEFUL": int(stateful), "STAMP_MAX_SESSIONS": max_sessions,
            "GUARD_RATE_SOURCES": rate_sources}


def load(port, ptp, debug=False, stateful=False, max_sessions=DEFAULT_MAX_SESSIONS,
         rate_sources=guard.DEFAULT_RATE_SOURCES):
    bpf, funcs = bpfprog.load(FILES, defines(port, ptp, stateful, max_sessions, rate_sources),
                              PROGRAMS, debug=debug)
    return ReflectorDatapath(bpf, ptp), {tc.INGRESS: funcs["reflector_ingress"],
                                         tc.EGRESS: funcs["reflector_egress"]}


class ReflectorDatapath(datapath.Datapath):
    STATS = datapath.REFLECTOR_STATS

    def __init__(self, bpf, ptp):
        self._addrs = set()
        self._others = set()
        self._prefixes = set()
        self._sync_source = wire.SYNC_SRC_NTP
        self._session_timeout_ns = 300 * 1_000_000_000
        super().__init__(bpf, ptp)

    def set_addresses(self, addrs, others=()):
        """Reflect for exactly these IPv4 addresses, and never answer `others` (the
        host's other addresses and subnet broadcasts: LOCAL_OTHER in bpf/guard.h,
        kept only with the guard's kernel half); returns (added, removed) of addrs."""
        table = self.bpf[b"local_addrs"]
        new = set(addrs)
        others = set(others) - new if HAS_GUARD else set()
        for a, kind in [(a, LOCAL_REFLECT) for a in new - self._addrs] + \
                       [(a, LOCAL_OTHER) for a in others - self._others]:
            table[table.Key(datapath.ipv4_be32(a))] = table.Leaf(kind)
        for a in (self._addrs - new - others) | (self._others - others - new):
            del table[table.Key(datapath.ipv4_be32(a))]
        added, removed = new - self._addrs, self._addrs - new
        self._addrs, self._others = new, others
        return added, removed

    def set_guard(self, prefixes, limit):
        """Answer only senders in `prefixes` (none: everyone), at most `limit` each.

        The tries change entry by entry, new prefixes first: a sender in both
        the old and the new list is never refused in between, and sessions go
        on. Returns (added, removed) prefixes. Without the guard's kernel half an
        allow-list is refused (GuardError): answering everyone instead would be
        quietly wrong.
        """
        new = set(prefixes)
        if not HAS_GUARD:
            if new:
                raise guard.GuardError(
                    "this build's kernel programs have no allow-list (bpf/guard.h is "
                    "missing): drop --allow/--allow-file, or use --timestamping user")
            return set(), set()
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

    # RFC 8972 Table 7 values the Timestamp Information TLV may report.
    SYNC_SOURCES = {"ntp": wire.SYNC_SRC_NTP, "ptp": wire.SYNC_SRC_PTP}

    def set_session_policy(self, sync_source="ntp", session_timeout_s=300.0):
        """What the next configure() writes: the clock's source when synchronised
        (--sync-source) and the stateful sessions' idle timeout (--session-timeout)."""
        self._sync_source = self.SYNC_SOURCES[sync_source]
        self._session_timeout_ns = int(session_timeout_s * 1e9)

    def fill_config(self, leaf, clock_state):
        # An unsynchronised clock runs free, whatever would discipline it.
        leaf.sync_src = (self._sync_source if clock_state.synchronized
                         else wire.SYNC_SRC_FREE_RUNNING)
        leaf.session_timeout_ns = self._session_timeout_ns

    def session_count(self):
        """Entries in the stateful reflector's session map (0 when stateless)."""
        try:
            table = self.bpf[b"reflector_sessions"]
        except KeyError:
            return 0
        return sum(1 for _ in table.keys())


def _trie_key(table, net):
    """The LPM trie key of a prefix: its length, then its address in network order."""
    key = table.Key()
    key.prefixlen = net.prefixlen
    raw = net.network_address.packed
    key.addr = (ctypes.c_ubyte * len(raw))(*raw)
    return key
