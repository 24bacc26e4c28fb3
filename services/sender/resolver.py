"""--reflector-dns: the reflectors are whatever a DNS name resolves to.

A thread resolves the name every --dns-interval seconds (getaddrinfo can
block, the measurement loop must not) and hands each answer, minus this
host's own addresses, to the loop through a queue. getaddrinfo asks for the
A records, the AAAA records or both, as --address-family says (one lookup
of both families where the resolver library does that: AF_UNSPEC). With
--max-peers K, the answer is the K members peers.choose picks for this host,
on one ring per family: a dual-stack node measures K peers over IPv4 and K
over IPv6, and is measured by K senders over each.
"""

import queue
import socket
import threading

from ..common import addr
from ..common.netif import all_addresses as own_addresses
from . import peers

GAI_FAMILY = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}
UNSPECIFIED = {4: "0.0.0.0", 6: "::"}   # our ring name with no address of the family


def addresses(infos, address_family):
    """The addresses in a getaddrinfo() result: normalised (no scope), of the wanted family."""
    out = set()
    for info in infos:
        a = addr.normalize(info[4][0].split("%")[0])
        if addr.wanted(a, address_family):
            out.add(a)
    return out


def ordered(addrs):
    """IPv4 first, then IPv6, each sorted."""
    return sorted(addrs, key=lambda a: (addr.family(a), a))


def answer(infos, own, address_family):
    """The reflector addresses in a getaddrinfo() result: normalised (no scope), of the
    wanted family, without this host's own."""
    return ordered(addresses(infos, address_family) - own)


class Resolver(threading.Thread):
    def __init__(self, name, interval_s, log, address_family="any", max_peers=peers.ALL, me=()):
        """me: this host's names on the peer rings (one per family) when none of its
        addresses is in the answer (a node without a reflector): the interface's addresses."""
        super().__init__(name="reflector-dns", daemon=True)
        self.dns_name = name
        self.address_family = address_family
        self.interval_s = interval_s
        self.log = log
        self.max_peers = max_peers
        self.me = me
        self._chosen = {}       # family: the peers chosen last
        self.answers = queue.Queue()
        self._stop = threading.Event()

    def run(self):
        while not self._stop.is_set():
            try:
                infos = socket.getaddrinfo(self.dns_name, None, GAI_FAMILY[self.address_family],
                                           socket.SOCK_DGRAM)
                addrs = addresses(infos, self.address_family)
                own = own_addresses()
                self.answers.put(self.pick(addrs - own, addrs & own))
            except OSError as e:
                # Keep the sessions we have: a resolver hiccup is not a topology change.
                self.log.warning("dns_failed", name=self.dns_name, reason=str(e))
            self._stop.wait(self.interval_s)

    def pick(self, others, mine):
        """The reflectors to measure among `others` (not this host's); `mine` are this
        host's addresses in the answer, the first of each family its name on that
        family's ring."""
        if self.max_peers == peers.ALL:
            return ordered(others)
        chosen = []
        for fam in (4, 6):
            members = {a for a in others if addr.family(a) == fam}
            if not members:
                continue
            in_answer = sorted(a for a in mine if addr.family(a) == fam)
            me = (in_answer or sorted(a for a in self.me if addr.family(a) == fam)
                  or [UNSPECIFIED[fam]])[0]
            picked = peers.choose(me, members, self.max_peers)
            chosen += picked
            if picked != self._chosen.get(fam):
                self._chosen[fam] = picked
                self.log.info("peers_chosen", me=me, family=fam,
                              members=len(members) + len(in_answer),
                              max_peers=self.max_peers, chosen=len(picked))
        return chosen

    def stop(self):
        self._stop.set()

    def latest(self):
        """The newest answer since the last call, or None."""
        answer = None
        while True:
            try:
                answer = self.answers.get_nowait()
            except queue.Empty:
                return answer
