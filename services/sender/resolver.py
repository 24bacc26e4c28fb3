"""--reflector-dns: the reflectors are whatever a DNS name resolves to.

A thread resolves the name every --dns-interval seconds (getaddrinfo can
block, the measurement loop must not) and hands each answer, minus this
host's own addresses, to the loop through a queue. getaddrinfo asks for the
A records, the AAAA records or both, as --address-family says (one lookup
of both families where the resolver library does that: AF_UNSPEC).
"""

import queue
import socket
import threading

from pyroute2 import IPRoute

from ..common import addr


GAI_FAMILY = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}


def own_addresses():
    """Every IPv4 and IPv6 address on this host (all interfaces), normalised."""
    with IPRoute() as ipr:
        return {addr.normalize(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()
                if a.get_attr("IFA_ADDRESS")}


def answer(infos, own, address_family):
    """The reflector addresses in a getaddrinfo() result: normalised (no scope), of the
    wanted family, without this host's own."""
    out = set()
    for info in infos:
        a = addr.normalize(info[4][0].split("%")[0])
        if addr.wanted(a, address_family):
            out.add(a)
    return sorted(out - own, key=lambda a: (addr.family(a), a))


class Resolver(threading.Thread):
    def __init__(self, name, interval_s, log, address_family="any"):
        super().__init__(name="reflector-dns", daemon=True)
        self.dns_name = name
        self.address_family = address_family
        self.interval_s = interval_s
        self.log = log
        self.answers = queue.Queue()
        self._stop = threading.Event()

    def run(self):
        while not self._stop.is_set():
            try:
                infos = socket.getaddrinfo(self.dns_name, None, GAI_FAMILY[self.address_family],
                                           socket.SOCK_DGRAM)
                self.answers.put(answer(infos, own_addresses(), self.address_family))
            except OSError as e:
                # Keep the sessions we have: a resolver hiccup is not a topology change.
                self.log.warning("dns_failed", name=self.dns_name, reason=str(e))
            self._stop.wait(self.interval_s)

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
