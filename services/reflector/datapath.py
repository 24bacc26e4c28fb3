"""The reflector's BPF datapath: reflector_ingress.c and reflector_egress.c."""

from ..common import bpfprog, datapath, tc, wire

# Headers with map accesses must be joined into the source (bcc rewrites only its own).
FILES = ["maps.h", "tlv.h", "reflector_sessions.h", "reflector_maps.h", "reflector_ingress.c",
         "reflector_egress.c"]
PROGRAMS = ["reflector_ingress", "reflector_egress"]
DEFAULT_MAX_SESSIONS = 65536


def defines(port, ptp, stateful=False, max_sessions=DEFAULT_MAX_SESSIONS):
    return {"STAMP_PORT": port, "STAMP_TS_PTP": int(ptp), "RINGBUF_PAGES": datapath.RINGBUF_PAGES,
            "STAMP_STATEFUL": int(stateful), "STAMP_MAX_SESSIONS": max_sessions}


def load(port, ptp, debug=False, stateful=False, max_sessions=DEFAULT_MAX_SESSIONS):
    bpf, funcs = bpfprog.load(FILES, defines(port, ptp, stateful, max_sessions), PROGRAMS,
                              debug=debug)
    return ReflectorDatapath(bpf, ptp), {tc.INGRESS: funcs["reflector_ingress"],
                                         tc.EGRESS: funcs["reflector_egress"]}


class ReflectorDatapath(datapath.Datapath):
    STATS = datapath.REFLECTOR_STATS

    def __init__(self, bpf, ptp):
        self._addrs = set()
        self._sync_source = wire.SYNC_SRC_NTP
        self._session_timeout_ns = 300 * 1_000_000_000
        super().__init__(bpf, ptp)

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
