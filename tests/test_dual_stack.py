"""Dual-stack: one sender measures one reflector over IPv4 and IPv6 at once, in a mesh.

Host A (the topology's sender namespace) and host B (its reflector namespace)
each run stamp-reflector and stamp-sender on their interface, all on UDP 862,
each sender measuring the other host's IPv4 and IPv6 addresses at the same
time: four sessions, two per sender process. Every reply must reach its
sender and none may be reflected again, in either family.

Over IPv6 both programs run their IPv6 path (bpf/parse.h, parse_stamp()).
"""


import pytest


import stampnet

pytestmark = pytest.mark.timeout(240)
COUNT = 100


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("dualstack"), ipv6=True)
    topo = lab.topo
    a, b = topo.sender, topo.reflector
    try:
        refl = {k: lab.start(h, "stamp-reflector", h.ifname) for k, h in (("A", a), ("B", b))}
        for r in refl.values():
            r.wait_event("reflecting", 120)
        with lab.capture(a, "mesh") as frames:
            senders = {k: lab.start(h, "stamp-sender", h.ifname, peer.addr, peer.addr6,
                                    "-c", COUNT, "-i", "0.01")
                       for k, h, peer in (("A", a, b), ("B", b, a))}
            rcs = {k: s.wait_exit(90) for k, s in senders.items()}
        refl_rcs = {k: r.stop() for k, r in refl.items()}
        yield dict(topo=topo, frames=frames, senders=senders, rcs=rcs, reflectors=refl,
                   refl_rcs=refl_rcs)
    finally:
        lab.close()


def test_each_sender_gets_every_reply_over_both_families(mesh):
    topo = mesh["topo"]
    peers = {"A": topo.reflector, "B": topo.sender}
    for k, s in mesh["senders"].items():
        assert mesh["rcs"][k] == 0, f"{k}'s sender exited {mesh['rcs'][k]}:\n{s.text()[-2000:]}"
        by = {x["reflector"]: x for x in s.summary()["sessions"]}
        assert set(by) == {peers[k].addr, peers[k].addr6}, f"{k}'s sessions: {sorted(by)}"
        for ip, x in by.items():
            assert (x["sent"], x["received"], x["lost"], x["late"], x["duplicates"]) \
                == (COUNT, COUNT, 0, 0, 0), f"{k}'s session to {ip}: {x}"
            assert x["round_trip"]["min_ns"] > 0, f"{k}'s round trips to {ip}: {x['round_trip']}"
        labels = sorted(e["reflector"] for e in s.events("session_started"))
        assert labels == sorted([f"{peers[k].addr}:862", f"[{peers[k].addr6}]:862"]), \
            f"IPv6 sessions are labelled [addr]:port in the logs: {labels}"


def test_replies_are_never_reflected_again_in_either_family(mesh):
    seen = stampnet.stamp_kinds(mesh["frames"])
    topo = mesh["topo"]
    for src in (topo.sender.addr, topo.sender.addr6, topo.reflector.addr, topo.reflector.addr6):
        for kind in ("request", "reply"):
            seqs = sorted(seq for (s, k, seq) in seen if s == src and k == kind)
            assert seqs == list(range(COUNT)), \
                f"{kind}s from {src}: sequence numbers 0..{COUNT - 1} once each, got {len(seqs)}"
    copies = {k: n for k, n in seen.items() if n != 1}
    assert not copies, f"Frames seen more than once on the wire (re-reflected?): {copies}"
    for k, r in mesh["reflectors"].items():
        c = r.summary()["counters"]
        assert mesh["refl_rcs"][k] == 0 and c["reflected"] == 2 * COUNT, \
            f"{k}'s reflector reflected {c['reflected']} packets, not {2 * COUNT} (both families): {c}"
