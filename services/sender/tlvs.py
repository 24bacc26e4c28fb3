"""The TLVs a sender asks with (RFC 8972 section 4) and what the reflector answered.

--dscp N       Class of Service (4.4): packets sent with DSCP N, the reflector asked
               to send its reply with N; reported: the DSCP and ECN the reflector
               saw, the DSCP the reply arrived with, and packets re-marked each way
--location     Location (4.2) with the Source MAC, Destination IP and Source IP
               sub-TLVs: reported, the ports, addresses and MAC the reflector saw,
               and `nat_seen` when they are not the ones we sent from and to
--timestamp-info  Timestamp Information (4.3): the reflector's sync source and
               timestamping methods
--padding N    Extra Padding (4.1) of N octets, last (for path MTU and size effects)

Order in the packet: Direct Measurement (--directional-loss, see direction.py),
Class of Service, Timestamp Information, Location, Extra Padding: the answers a
report needs fit in the first 96 octets after the base that the sender's ring
record carries (STAMP_EVENT_TLV_LEN).
"""

import socket

from ..common import addr, wire
from . import direction

LOCATION_VALUE = (bytes(4) + wire.build_tlv(wire.LOC_SRC_MAC, bytes(wire.LOC_MAC_LEN))
                  + wire.build_tlv(wire.LOC_DST_IP, bytes(wire.LOC_IP_LEN))
                  + wire.build_tlv(wire.LOC_SRC_IP, bytes(wire.LOC_IP_LEN)))
SYNC_NAMES = {1: "ntp", 2: "ptp", 3: "ssu/bits", 4: "gnss", 5: "free-running"}
METHOD_NAMES = {1: "hw-assist", 2: "sw-local", 3: "control-plane"}


def block(args):
    """The TLV octets after the base for these options (b"" for none)."""
    out = direction.dm_tlv() if args.directional_loss else b""
    if args.dscp is not None:
        out += wire.build_tlv(wire.TLV_CLASS_OF_SERVICE, wire.build_cos(args.dscp))
    if args.timestamp_info:
        out += wire.build_tlv(wire.TLV_TIMESTAMP_INFO, bytes(4))
    if args.location:
        out += wire.build_tlv(wire.TLV_LOCATION, LOCATION_VALUE)
    if args.padding is not None:
        out += wire.build_tlv(wire.TLV_EXTRA_PADDING, bytes(args.padding))
    return out


class TlvReport:
    """What one session's replies said in answer to our TLVs (the latest answer, and
    re-marking counts)."""

    def __init__(self, dscp=None):
        self.dscp = dscp
        self.cos = None
        self.remarked_forward = self.remarked_backward = 0
        self.timestamp_info = None
        self.location = None
        self.unanswered = {}         # TLV type -> replies that flagged it U or M

    def on_reply(self, tlvs, reply_tos, local, local_port, reflector, port):
        for t in wire.parse_tlvs(tlvs, 0):
            if t.flags & (wire.TLV_U | wire.TLV_M):
                self.unanswered[t.type] = self.unanswered.get(t.type, 0) + 1
                if t.flags & wire.TLV_M:
                    return           # RFC 8972 section 4: stop at a malformed TLV
                continue
            if t.type == wire.TLV_CLASS_OF_SERVICE and len(t.value) == wire.COS_LEN:
                self._cos(t.value, reply_tos)
            elif t.type == wire.TLV_TIMESTAMP_INFO and len(t.value) >= 4:
                si, ti, so, to = t.value[:4]
                self.timestamp_info = {
                    "sync_src_in": SYNC_NAMES.get(si, si), "timestamp_in": METHOD_NAMES.get(ti, ti),
                    "sync_src_out": SYNC_NAMES.get(so, so), "timestamp_out": METHOD_NAMES.get(to, to)}
            elif t.type == wire.TLV_LOCATION and len(t.value) >= 4:
                self._location(t.value, local, local_port, reflector, port)

    def _cos(self, value, reply_tos):
        dscp1, dscp2, ecn, rp = wire.parse_cos(value)
        reply_dscp = reply_tos >> 2
        if dscp2 != self.dscp:
            self.remarked_forward += 1
        if rp == 0 and reply_dscp != dscp1:
            self.remarked_backward += 1
        self.cos = {"dscp_at_reflector": dscp2, "ecn_at_reflector": ecn,
                    "dscp_on_reply": reply_dscp, "ecn_on_reply": reply_tos & 3,
                    "reverse_path_refused": bool(rp)}

    def _location(self, value, local, local_port, reflector, port):
        dport, sport = wire.LOCATION.unpack_from(value)
        seen = {"dst_port": dport, "src_port": sport}
        for sub in wire.parse_tlvs(value, wire.LOCATION.size):
            if sub.flags:
                continue
            if sub.type == wire.LOC_SRC_EUI48 and len(sub.value) >= 6:
                seen["src_mac"] = sub.value[:6].hex(":")
            elif sub.type in (wire.LOC_DST_IPV4, wire.LOC_SRC_IPV4) and len(sub.value) >= 4:
                key = "dst_addr" if sub.type == wire.LOC_DST_IPV4 else "src_addr"
                seen[key] = socket.inet_ntoa(sub.value[:4])
            elif sub.type in (wire.LOC_DST_IPV6, wire.LOC_SRC_IPV6) and len(sub.value) >= 16:
                key = "dst_addr" if sub.type == wire.LOC_DST_IPV6 else "src_addr"
                seen[key] = addr.normalize(socket.inet_ntop(socket.AF_INET6, sub.value[:16]))
        seen["nat_seen"] = (seen.get("src_addr", local) != local or sport != local_port
                            or seen.get("dst_addr", reflector) != reflector or dport != port)
        self.location = seen

    def summary(self):
        out = {}
        if self.dscp is not None:
            out["cos"] = {"dscp_sent": self.dscp, **(self.cos or {}),
                          "remarked_forward": self.remarked_forward,
                          "remarked_backward": self.remarked_backward}
        if self.timestamp_info is not None:
            out["timestamp_info"] = self.timestamp_info
        if self.location is not None:
            out["location"] = self.location
        if self.unanswered:
            out["tlvs_unanswered"] = {str(k): v for k, v in sorted(self.unanswered.items())}
        return out
