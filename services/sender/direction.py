"""Loss per direction against a stateful reflector, from RFC 8972 Direct Measurement.

With --directional-loss every test packet carries a Direct Measurement TLV
(RFC 8972 section 4.5). A stateful Session-Reflector answers it with its
own counts for the session: R_TxC, the replies it has sent, this one
included. Every reply it sent has its own R_TxC, so of the replies it sent
up to the highest R_TxC we have seen, those we never got were lost on the
way back:

    lost_backward = highest R_TxC seen - distinct R_TxC values seen

and the other packets lost up to that reply were lost on the way there:

    lost_forward = lost packets sent before that reply's - lost_backward

Duplicates (a second reply to one packet: the same R_TxC when duplicated on
the way back, a new one when the test packet was duplicated on the way
there, and the reflector answered it) and late replies are replies seen, so
neither is taken for loss. A reply that came after its packet was declared
lost is not counted (the packet stays lost), so that packet counts as lost
on the way back. Packets lost after the last reply with the highest R_TxC
cannot be told apart yet: `lost_direction_unknown` counts them until a later
reply places them. Assumed: a packet lost on the way back was not overtaken,
on the way there, by the packet whose reply carries the highest R_TxC.

Against a stateless reflector (U=1 on the TLV, or counts left at zero by an
RFC 8762 reflector that copies it) both are None: never a guess. A reflector
whose counts go back (it restarted, or the session expired or was evicted
there) makes them None too, from then on.
"""

import struct

from ..common import wire

# R_TxC may go back by this much (replies reordered on the way back) before
# the reflector's session is taken to have started again.
REORDER_SLACK = 1024
DM_LEN = 12


def dm_tlv():
    """The Direct Measurement TLV a sender puts after the base (S_TxC filled at send)."""
    return wire.build_tlv(wire.TLV_DIRECT_MEASUREMENT, bytes(DM_LEN))


def s_txc_offset():
    """Payload offset of S_TxC in a packet that starts its TLVs with dm_tlv()."""
    return wire.BASE_LEN + wire.TLV.size


class DirectionalLoss:
    """What one session's replies say about where its lost packets were lost."""

    def __init__(self):
        self.state = "unknown"      # "stateful", "stateless", "reset"
        self.max_tx = 0             # highest R_TxC seen
        self.seq_at_max = -1        # sender Sequence Number of that reply
        self._seen = set()          # R_TxC values seen, those above max_tx - REORDER_SLACK
        self.distinct = 0
        self.lost_before = 0        # lost packets sent before seq_at_max
        self._pending = []          # lost packets sent after it, in order

    def on_reply(self, seq, tlvs):
        """A reply that was counted (received, late or duplicate), with its TLV octets."""
        if self.state in ("stateless", "reset") or len(tlvs) < wire.TLV.size + DM_LEN:
            return
        flags, tlv_type, length = wire.TLV.unpack_from(tlvs)
        if tlv_type != wire.TLV_DIRECT_MEASUREMENT or length != DM_LEN:
            return
        _s_tx, r_rx, r_tx = struct.unpack_from("!III", tlvs, wire.TLV.size)
        if flags & (wire.TLV_U | wire.TLV_M) or r_tx == 0:
            self.state = "stateless"
            return
        if r_tx + REORDER_SLACK < self.max_tx:
            self.state = "reset"
            return
        self.state = "stateful"
        if r_tx not in self._seen:
            self._seen.add(r_tx)
            self.distinct += 1
        if r_tx > self.max_tx:
            self.max_tx, self.seq_at_max = r_tx, seq
            keep = [q for q in self._pending if q > seq]
            self.lost_before += len(self._pending) - len(keep)
            self._pending = keep
            if len(self._seen) > 2 * REORDER_SLACK:
                self._seen = {v for v in self._seen if v > self.max_tx - REORDER_SLACK}

    def on_lost(self, seq):
        if seq < self.seq_at_max:
            self.lost_before += 1
        else:
            self._pending.append(seq)

    def summary(self):
        if self.state != "stateful":
            return {"lost_forward": None, "lost_backward": None}
        backward = self.max_tx - self.distinct
        forward = self.lost_before - backward
        if backward < 0 or forward < 0:
            return {"lost_forward": None, "lost_backward": None}
        return {"lost_forward": forward, "lost_backward": backward,
                "lost_direction_unknown": len(self._pending)}
