"""The sender's BPF datapath: sender_egress.c and sender_ingress.c."""

from ..common import bpfprog, datapath, events, tc

FILES = ["maps.h", "sender_maps.h", "sender_egress.c", "sender_ingress.c"]
PROGRAMS = ["sender_egress", "sender_ingress"]


def defines(source_port, dest_port, ptp):
    return {"SENDER_SRC_PORT": source_port, "SENDER_DST_PORT": dest_port,
            "STAMP_TS_PTP": int(ptp), "RINGBUF_PAGES": datapath.RINGBUF_PAGES}


def load(source_port, dest_port, ptp, debug=False):
    bpf, funcs = bpfprog.load(FILES, defines(source_port, dest_port, ptp), PROGRAMS, debug=debug)
    return SenderDatapath(bpf, ptp), {tc.EGRESS: funcs["sender_egress"],
                                      tc.INGRESS: funcs["sender_ingress"]}


class SenderDatapath(datapath.Datapath):
    STATS = datapath.SENDER_STATS
    event = staticmethod(events.sender_event)        # a ring buffer record, decoded

    def add_session(self, reflector, local):
        """Take replies from `reflector` to `local`, the address our test packets to
        it leave from (0.0.0.0 or :: while there is none: no reply is taken); called
        again when that address changes."""
        table = self.bpf[b"sessions"]
        table[datapath.addr_key(table, reflector)] = datapath.stamp_addr(table.Leaf, local)

    def remove_session(self, reflector):
        table = self.bpf[b"sessions"]
        try:
            del table[datapath.addr_key(table, reflector)]
        except KeyError:
            pass
