"""What the reflector knows per sender: packets reflected and forward delay.

A session is one sender address and port. The forward delay T2-T1 is the
one-way delay from that sender, signed (negative when the clocks disagree).
"""

import time

from ..common.addr import endpoint
from ..common.delaystats import DelayStats


class ReflectorSession:
    """The reflector's session for one sender address and port."""

    __slots__ = ("label", "reflected", "forward", "last_seen")

    def __init__(self, label):
        self.label = label
        self.reflected = 0
        self.forward = DelayStats()
        self.last_seen = time.monotonic()


DEFAULT_MAX_SESSIONS = 1024    # senders one reflector keeps: a 1,025-node full mesh


class ReflectorSessions:
    """Reflector sessions by (address, port), forgetting those idle for `idle_s`.

    Any source address and port can send to the reflector's port, spoofed ones
    included, so at most `max_sessions` are kept: a packet of a new sender
    beyond that is still reflected (in the kernel), but gets no session, no
    record and no series; `overflow` counts those packets.
    """

    def __init__(self, idle_s=300.0, max_sessions=DEFAULT_MAX_SESSIONS):
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self.overflow = 0
        self._by_key = {}

    def get(self, addr, port):
        """(session, is_new), marking the session as seen now; (None, False) when the
        table is full and this sender is not in it (counted in `overflow`)."""
        key = (addr, port)
        s = self._by_key.get(key)
        new = s is None
        if new:
            if len(self._by_key) >= self.max_sessions:
                self.overflow += 1
                return None, False
            s = self._by_key[key] = ReflectorSession(endpoint(addr, port))
        s.last_seen = time.monotonic()
        return s, new

    def expire(self):
        """Remove and return sessions with no packet for idle_s."""
        now = time.monotonic()
        gone = [k for k, s in self._by_key.items() if now - s.last_seen > self.idle_s]
        return [self._by_key.pop(k) for k in gone]

    def __iter__(self):
        return iter(list(self._by_key.values()))

    def __len__(self):
        return len(self._by_key)
