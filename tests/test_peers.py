"""--max-peers: the bounded peer set (stamp_bpf.sender.peers) on 1,000 simulated nodes.

The figures the module doc and docs/cli.md quote are printed (pytest -s) and
checked here: in-degree spread, sessions changed when 1 and 50 nodes leave or
join, and the spread plain rendezvous hashing would have had.
"""

import collections
import hashlib
import random

import pytest

from stamp_bpf.sender import peers

pytestmark = pytest.mark.unit

N = 1000
K = 16
NODES = [f"10.{i // 250}.{i % 250}.{7 + i % 3}" for i in range(N)]


def edges(members, k=K, choose=peers.choose):
    """Every (sender, reflector) session of a mesh where each member sends."""
    return {(u, v) for u in members for v in choose(u, members, k)}


def in_degrees(es, members):
    c = collections.Counter(v for _, v in es)
    return [c[m] for m in members]


def plain_rendezvous(me, members, k):
    """Highest-random-weight of the ordered pair (me, peer): the baseline."""
    def weight(m):
        return hashlib.blake2b(f"{me}|{m}".encode(), digest_size=8).digest()
    return sorted(sorted((m for m in members if m != me), key=weight, reverse=True)[:k])


MESH = edges(NODES)


def test_out_degree_is_k_and_the_own_node_never_chosen():
    out = collections.Counter(u for u, _ in MESH)
    assert set(out.values()) == {K}, "Every sender should measure exactly K peers."
    assert not [e for e in MESH if e[0] == e[1]], "A sender should never measure its own node."


def test_in_degree_is_k_for_every_node_where_rendezvous_spreads():
    ring = in_degrees(MESH, NODES)
    hrw = in_degrees(edges(NODES, choose=plain_rendezvous), NODES)
    print(f"\nin-degree on {N} nodes, K={K}: ring {min(ring)}..{max(ring)}, "
          f"plain rendezvous {min(hrw)}..{max(hrw)}")
    assert min(ring) == max(ring) == K, (
        f"Every node should be measured by exactly {K} senders, got {min(ring)}..{max(ring)}.")
    assert max(hrw) - min(hrw) > 10, (
        "Plain rendezvous hashing should show the in-degree spread that made us choose the ring; "
        f"got {min(hrw)}..{max(hrw)}, so the module doc's reasoning no longer holds.")


def test_choice_is_stable_and_independent_of_order():
    shuffled = NODES[:]
    random.Random(7).shuffle(shuffled)
    for me in NODES[:50]:
        assert peers.choose(me, shuffled, K) == peers.choose(me, NODES, K), (
            "The choice should depend on the member names only, not on DNS answer order.")


@pytest.mark.parametrize("changed", [1, 50])
def test_leave_and_join_change_few_sessions(changed):
    gone = set(random.Random(changed).sample(NODES, changed))
    after = [m for m in NODES if m not in gone]
    left = MESH ^ edges(after)
    # Each node that leaves: its K sessions, the K pointing at it, and K replacements.
    print(f"\n{changed} of {N} leave: {len(left)} sessions change (3K per node = {3 * K * changed})")
    assert len(left) <= 3 * K * changed, (
        f"{changed} nodes leaving changed {len(left)} sessions, more than 3K per node.")
    touched = {u for u, _ in left} | {v for _, v in left}
    assert len(touched) < 4 * K * changed, (
        f"Only nodes near the ones that left should see a change; {len(touched)} did.")
    joined = edges(NODES) ^ edges(after)   # the same nodes joining back
    assert joined == left, "Joining back should restore exactly the sessions before."


def test_a_new_node_changes_only_sessions_near_it():
    new = "10.9.9.9"
    es = edges(NODES + [new])
    diff = MESH ^ es
    assert sum(1 for u, v in diff if new in (u, v)) == 2 * K, (
        "A joining node should gain K sessions out and K in.")
    assert len(diff) == 3 * K, f"A joining node should change 3K sessions, changed {len(diff)}."


def test_zero_and_small_meshes_measure_everyone():
    assert peers.choose("a", ["a", "b", "c"], peers.ALL) == ["b", "c"]
    assert peers.choose("a", ["a", "b", "c"], 5) == ["b", "c"]
    assert len(peers.choose("x", NODES, K)) == K, "A sender with no reflector of its own still picks K."


def test_series_per_node_is_bounded_by_k():
    assert peers.series_per_node(K, 10) == 9 * 97
    assert peers.series_per_node(K, 1000) == K * 97 == peers.series_per_node(K, 100)
    assert peers.series_per_node(peers.ALL, 1000) == 999 * 97
    assert peers.series_per_node(K, 1000, (91, 30)) == K * 121, "With reflector.delayHistogram."
