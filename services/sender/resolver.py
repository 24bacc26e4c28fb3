"""--reflector-dns: the reflectors are whatever a DNS name resolves to.

A thread resolves the name every --dns-interval seconds (getaddrinfo can
block, the measurement loop must not) and hands each answer, minus this
host's own addresses, to the loop through a queue. With --max-peers K, the
answer is the K members peers.choose picks for this host.
"""

import queue
import socket
import threading

from ..common.netif import all_ipv4_addresses as own_addresses
from . import peers


class Resolver(threading.Thread):
    def __init__(self, name, interval_s, log, max_peers=peers.ALL, me=None):
        """me: this host's name on the peer ring when none of its addresses is in
        the answer (a node without a reflector): the interface's address."""
        super().__init__(name="reflector-dns", daemon=True)
        self.dns_name = name
        self.interval_s = interval_s
        self.log = log
        self.max_peers = max_peers
        self.me = me
        self._chosen = None
        self.answers = queue.Queue()
        self._stop = threading.Event()

    def run(self):
        while not self._stop.is_set():
            try:
                infos = socket.getaddrinfo(self.dns_name, None, socket.AF_INET, socket.SOCK_DGRAM)
                addrs = {info[4][0] for info in infos}
                own = own_addresses()
                self.answers.put(self.pick(addrs - own, addrs & own))
            except OSError as e:
                # Keep the sessions we have: a resolver hiccup is not a topology change.
                self.log.warning("dns_failed", name=self.dns_name, reason=str(e))
            self._stop.wait(self.interval_s)

    def pick(self, others, mine):
        """The reflectors to measure among `others` (not this host's); `mine` are this
        host's addresses in the answer, the first of them its name on the ring."""
        if self.max_peers == peers.ALL:
            return sorted(others)
        me = min(mine) if mine else (self.me or "0.0.0.0")
        chosen = peers.choose(me, others, self.max_peers)
        if chosen != self._chosen:
            self._chosen = chosen
            self.log.info("peers_chosen", me=me, members=len(others) + len(mine),
                          max_peers=self.max_peers, chosen=len(chosen))
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
