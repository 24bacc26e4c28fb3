"""A sender and a reflector on one interface and port, on two hosts measuring each other.

Host A (the topology's sender namespace) and host B (its reflector
namespace) each run stamp-reflector and stamp-sender on their interface, all
on UDP 862: A measures B and B measures A at the same time. Every reply must
reach its sender and none may be reflected again. Then, with A's sender
gone, a reply still arriving at A (to a request sent from a plain socket on
A's port 862) must be stopped by A's loop guard instead of bouncing between
the two reflectors.
"""

import socket

import pytest

from stamp_bpf.common import bpfsys, wire

import stampnet

pytestmark = pytest.mark.timeout(240)
COUNT = 200


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("mesh"))
    topo = lab.topo
    a, b = topo.sender, topo.reflector
    try:
        refl = {k: lab.start(h, "stamp-reflector", h.ifname) for k, h in (("A", a), ("B", b))}
        for r in refl.values():         # compiled side by side, then both must be attached
            r.wait_event("reflecting", 120)
        with lab.capture(a, "mesh") as frames:
            senders = {
                "A": lab.start(a, "stamp-sender", a.ifname, b.addr, "-c", COUNT, "-i", "0.005"),
                "B": lab.start(b, "stamp-sender", b.ifname, a.addr, "-c", COUNT, "-i", "0.005"),
            }
            order = {}
            for k, h in (("A", a), ("B", b)):
                senders[k].wait_event("sending", 120)
                with stampnet.netns(h.ns):
                    order[k] = [p for p, _ in bpfsys.prog_query(socket.if_nametoindex(h.ifname),
                                                                bpfsys.TCX_INGRESS)]
            rcs = {k: s.wait_exit(90) for k, s in senders.items()}
        # A's sender is gone; a reply to A's port 862 must not be reflected again.
        sock = stampnet.udp_socket(a, 862)
        try:
            with lab.capture(a, "stale") as stale_frames:
                sock.sendto(wire.build_sender_packet(0x57A1E), (b.addr, 862))
                stale_got = stampnet.recv_all(sock, quiet=0.5)
        finally:
            sock.close()
        alive = {k: r.proc.poll() is None for k, r in refl.items()}
        refl_rcs = {k: r.stop() for k, r in refl.items()}
        yield dict(topo=topo, frames=frames, senders=senders, rcs=rcs, reflectors=refl, order=order,
                   alive=alive, refl_rcs=refl_rcs, stale_frames=stale_frames, stale_got=stale_got)
    finally:
        lab.close()


def test_both_sessions_get_every_reply(mesh):
    for k, s in mesh["senders"].items():
        assert mesh["rcs"][k] == 0, f"{k}'s sender exited {mesh['rcs'][k]}:\n{s.text()[-2000:]}"
        sess = s.summary()["sessions"][0]
        assert (sess["sent"], sess["received"], sess["lost"], sess["late"], sess["duplicates"]) \
            == (COUNT, COUNT, 0, 0, 0), f"{k}'s session in the mesh: {sess}"
        assert sess["round_trip"]["min_ns"] > 0, f"{k}'s round trips: {sess['round_trip']}"


def test_replies_are_never_reflected_again(mesh):
    topo = mesh["topo"]
    a, b = topo.sender.addr, topo.reflector.addr
    seen = stampnet.stamp_kinds(mesh["frames"])
    for src in (a, b):
        for kind in ("request", "reply"):
            seqs = sorted(seq for (s, k, seq) in seen if s == src and k == kind)
            assert seqs == list(range(COUNT)), \
                f"{kind}s from {src}: expected sequence numbers 0..{COUNT - 1} once each, got {len(seqs)}"
    copies = {k: n for k, n in seen.items() if n != 1}
    assert not copies, f"frames seen more than once on the wire (re-reflected?): {copies}"
    for k, r in mesh["reflectors"].items():
        assert mesh["alive"][k] and mesh["refl_rcs"][k] == 0, f"{k}'s reflector did not run to the end"
        c = r.summary()["counters"]
        want = COUNT + (1 if k == "B" else 0)       # B also reflected the stale-reply request
        assert c["reflected"] == want, f"{k}'s reflector reflected {c['reflected']} packets, not {want}: {c}"


def test_loop_guard_stops_a_stale_reply(mesh):
    topo = mesh["topo"]
    a, b = topo.sender.addr, topo.reflector.addr
    seen = stampnet.stamp_kinds(mesh["stale_frames"])
    assert seen == {(a, "request", 0x57A1E): 1, (b, "reply", 0x57A1E): 1}, (
        f"a reply arriving at A with no sender there must stop at A (one request, one reply); "
        f"the wire showed {seen}")
    assert len(mesh["stale_got"]) == 1, "the stale reply did not reach the socket on A's port 862"
    counters = {k: r.summary()["counters"] for k, r in mesh["reflectors"].items()}
    assert counters["A"]["loop_guard"] == 1, \
        f"A's reflector should count one loop-guard stop (the stale reply): {counters['A']}"
    assert counters["B"]["loop_guard"] == 0, \
        f"B's reflector saw no reflected packet, yet counts loop-guard stops: {counters['B']}"


def test_sender_ingress_runs_before_the_reflectors(mesh):
    """With tcx the order is a place in the list: each sender started after its
    host's reflector and still went just before it."""
    for k in ("A", "B"):
        ids = {role: [e["prog_id"] for e in svc.events("attached") if e["hook"] == "ingress"][0]
               for role, svc in (("sender", mesh["senders"][k]), ("reflector", mesh["reflectors"][k]))}
        order = mesh["order"][k]
        assert order.index(ids["sender"]) + 1 == order.index(ids["reflector"]), \
            f"host {k}: tcx ingress order {order}, sender {ids['sender']}, reflector {ids['reflector']}"
