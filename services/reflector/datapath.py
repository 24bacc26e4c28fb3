"""The reflector's BPF datapath: reflector_ingress.c and reflector_egress.c."""

from ..common import bpfprog, datapath, tc

FILES = ["maps.h", "reflector_maps.h", "reflector_ingress.c", "reflector_egress.c"]
PROGRAMS = ["reflector_ingress", "reflector_egress"]


def defines(port, ptp):
    return {"STAMP_PORT": port, "STAMP_TS_PTP": int(ptp), "RINGBUF_PAGES": datapath.RINGBUF_PAGES}


def load(port, ptp, debug=False):
    bpf, funcs = bpfprog.load(FILES, defines(port, ptp), PROGRAMS, debug=debug)
    return ReflectorDatapath(bpf, ptp), {tc.INGRESS: funcs["reflector_ingress"],
                                         tc.EGRESS: funcs["reflector_egress"]}


class ReflectorDatapath(datapath.Datapath):
    STATS = datapath.REFLECTOR_STATS

    def __init__(self, bpf, ptp):
        super().__init__(bpf, ptp)
        self._addrs = set()

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
