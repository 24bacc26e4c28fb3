"""--reflector-dns: the reflectors are whatever a DNS name resolves to.

A thread resolves the name every --dns-interval seconds (getaddrinfo can
block, the measurement loop must not) and hands each answer, minus this
host's own addresses, to the loop through a queue.
"""

import queue
import socket
import threading

from pyroute2 import IPRoute


def own_addresses():
    """Every IPv4 address on this host (all interfaces)."""
    with IPRoute() as ipr:
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}


class Resolver(threading.Thread):
    def __init__(self, name, interval_s, log):
        super().__init__(name="reflector-dns", daemon=True)
        self.dns_name = name
        self.interval_s = interval_s
        self.log = log
        self.answers = queue.Queue()
        self._stop = threading.Event()

    def run(self):
        while not self._stop.is_set():
            try:
                infos = socket.getaddrinfo(self.dns_name, None, socket.AF_INET, socket.SOCK_DGRAM)
                addrs = {info[4][0] for info in infos} - own_addresses()
                self.answers.put(sorted(addrs))
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
