"""The reflector's BPF datapath: reflector_ingress.c and reflector_egress.c."""

import ctypes

from ..common import bpfprog, datapath, events, tc, wire
from . import guard

# Headers with map accesses must be joined into the source (bcc rewrites only its own).
FILES = ["maps.h", "tlv.h", "reflector_sessions.h", "guard.h", "reflector_maps.h",
         "reflector_ingress.c", "reflector_egress.c"]
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
    event = staticmethod(events.reflector_event)     # a ring buffer record, decoded

    def __init__(self, bpf, ptp):
        self._addrs = set()
        self._others = set()
        self._prefixes = set()
        self._limit = None
        self._sync_source = wire.SYNC_SRC_NTP
        self._session_timeout_ns = 300 * 1_000_000_000
        super().__init__(bpf, ptp)

    def set_addresses(self, addrs, others=()):
        """Reflect for exactly these addresses (either family), and never answer `others`
        (the host's other addresses and subnet broadcasts: LOCAL_OTHER in bpf/guard.h);
        returns (added, removed) of addrs."""
        table = self.bpf[b"local_addrs"]
        new = set(addrs)
        others = set(others) - new
        for a, kind in [(a, LOCAL_REFLECT) for a in new - self._addrs] + \
                       [(a, LOCAL_OTHER) for a in others - self._others]:
            table[datapath.addr_key(table, a)] = table.Leaf(kind)
        for a in (self._addrs - new - others) | (self._others - others - new):
            del table[datapath.addr_key(table, a)]
        added, removed = new - self._addrs, self._addrs - new
        self._addrs, self._others = new, others
        return added, removed

    def set_guard(self, prefixes, limit, on_loopback=False):
        """Answer only senders in `prefixes` (none: everyone), at most `limit` each;
        `on_loopback` (attached to lo) answers this host's own addresses too.

        The trie changes entry by entry in place, new prefixes first: a sender
        in both the old and the new list is never refused in between, and
        sessions go on (no program is reloaded or detached). A changed rate
        limit starts every sender with a full bucket. Returns (added, removed)
        prefixes.
        """
        new = set(prefixes)
        old = self._prefixes
        table = self.bpf[b"allow_prefixes"]
        for net in sorted(new - old, key=str):
            table[_trie_key(table, net)] = table.Leaf(1)
        cfg = self.bpf[b"guard_config"]
        leaf = cfg.Leaf()
        leaf.interval_ns = limit.interval_ns
        leaf.tolerance_ns = limit.tolerance_ns
        leaf.allow_on = int(bool(new))
        leaf.on_loopback = int(on_loopback)
        cfg[cfg.Key(0)] = leaf
        if limit != self._limit:
            self.bpf[b"rate_buckets"].clear()
            self._limit = limit
        for net in sorted(old - new, key=str):
            del table[_trie_key(table, net)]
        self._prefixes = new
        return new - old, old - new

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
    """The LPM trie key of a prefix (struct guard_lpm): its length, then its address
    in network order, both as IPv6, an IPv4 prefix as its IPv4-mapped one
    (::ffff:a.b.c.d, length 96 + n)."""
    key = table.Key()
    if net.version == 4:
        key.prefixlen = 96 + net.prefixlen
        raw = b"\0" * 10 + b"\xff\xff" + net.network_address.packed
    else:
        key.prefixlen = net.prefixlen
        raw = net.network_address.packed
    key.a.addr = (ctypes.c_ubyte * 16)(*raw)
    return key
