"""The sender's loss per direction from Direct Measurement counts (services/sender/direction.py)."""

import struct

import pytest

from stamp_bpf.common import wire
from stamp_bpf.sender.direction import DirectionalLoss

pytestmark = pytest.mark.unit


def dm(r_tx, flags=0):
    return wire.TLV.pack(flags, wire.TLV_DIRECT_MEASUREMENT, 12) + struct.pack("!III", 1, r_tx, r_tx)


def feed(events):
    d = DirectionalLoss()
    for kind, seq, *rest in events:
        if kind == "reply":
            d.on_reply(seq, dm(*rest))
        else:
            d.on_lost(seq)
    return d.summary()


def test_forward_and_backward_losses_are_told_apart():
    # 0..5 sent; 1 lost on the way there; 3 reached the reflector (R_TxC 3) but its reply
    # was lost. The reflector sent replies 1 (seq 0), 2 (seq 2), 3 (seq 3), 4 (seq 4), 5 (seq 5).
    got = feed([("reply", 0, 1), ("lost", 1), ("reply", 2, 2), ("lost", 3), ("reply", 4, 4),
                ("reply", 5, 5)])
    assert got == {"lost_forward": 1, "lost_backward": 1, "lost_direction_unknown": 0}


def test_duplicates_and_reordering_are_not_loss():
    got = feed([("reply", 1, 2), ("reply", 0, 1),     # reordered on the way back
                ("reply", 1, 2),                       # duplicated on the way back: same R_TxC
                ("reply", 2, 3), ("reply", 2, 4),      # test packet duplicated on the way there
                ("reply", 3, 5)])
    assert got == {"lost_forward": 0, "lost_backward": 0, "lost_direction_unknown": 0}


def test_losses_after_the_last_reply_are_not_guessed():
    got = feed([("reply", 0, 1), ("reply", 1, 2), ("lost", 2), ("lost", 3)])
    assert got == {"lost_forward": 0, "lost_backward": 0, "lost_direction_unknown": 2}


@pytest.mark.parametrize("tlv", [dm(0, flags=wire.TLV_U), dm(0)], ids=["flagged-U", "zero-counts"])
def test_a_stateless_reflector_gives_null(tlv):
    d = DirectionalLoss()
    d.on_reply(0, tlv)
    d.on_lost(1)
    assert d.summary() == {"lost_forward": None, "lost_backward": None}


def test_counts_that_go_back_give_null():
    d = DirectionalLoss()
    for seq in range(3000):
        d.on_reply(seq, dm(seq + 1))
    d.on_reply(3000, dm(1))          # the reflector's session started again
    assert d.summary() == {"lost_forward": None, "lost_backward": None}
