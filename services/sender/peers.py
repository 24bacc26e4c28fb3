"""--max-peers: which reflectors a sender measures when the mesh is large.

Every sender sees the same membership (the addresses the reflector DNS name
resolves to) and places each member on a ring at a position hashed from its
name (BLAKE2b, 64 bits). A sender measures the K members that follow its own
position on the ring. So:

- the choice depends on names only: the same after every restart, on every node;
- out-degree is K and in-degree is exactly K too (a member is chosen by the K
  members before it), whatever the cluster size;
- a member that leaves or joins changes about 3K sessions in the whole
  cluster: its own K, the K that pointed at it, and the K replacements.

Why not rendezvous (highest-random-weight) hashing of each (this node, peer)
pair, the first idea? It is just as stable and changes as few sessions, but
each sender picks by its own view, so how many senders pick a member is a sum
of independent draws: about Poisson(K). Measured on 1,000 simulated nodes with
K = 16 (tests/test_peers.py): in-degree 4 to 30 for HRW of the ordered pair,
5 to 28 for HRW of the unordered pair, 16 to 16 on the ring. A member measured
by 4 senders is seen far less well than one measured by 30, and the reflector
and exporter load follows the in-degree.
"""

import bisect
import functools
import hashlib

ALL = 0     # --max-peers 0: every member


@functools.lru_cache(maxsize=1 << 16)   # the members repeat at every DNS lookup
def position(name):
    """Ring position of a member name (an address): 64 bits of BLAKE2b."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def choose(me, members, k):
    """The members `me` measures: the `k` after `me` on the ring, sorted by name.

    `me` need not be a member (a node with no reflector of its own); it is
    never chosen. k = ALL (0), or k at least the other members, gives them all.
    """
    others = sorted(set(members) - {me})
    if k == ALL or len(others) <= k:
        return others
    ring = sorted((position(m), m) for m in others)
    start = bisect.bisect_right(ring, (position(me), me))
    return sorted(ring[(start + i) % len(ring)][1] for i in range(k))


def series_per_node(k, members, per_session=(91, 6)):
    """Session series one node exports with --max-peers k in a mesh of `members` nodes.

    per_session is (sender side, reflector side) series per session, the figures of
    chart/README.md for the chart's defaults (default buckets, no reflector histogram). A node sends to min(k, N-1) peers and,
    on the ring, is chosen by as many.
    """
    n = members - 1 if k == ALL else min(k, members - 1)
    return n * sum(per_session)
