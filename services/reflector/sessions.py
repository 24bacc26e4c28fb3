"""What the reflector knows per sender: packets reflected and forward delay.

A session is one sender address and port. The forward delay T2-T1 is the
one-way delay from that sender, signed (negative when the clocks disagree).
"""

import time

from ..common.delaystats import DelayStats


class ReflectorSession:
    """The reflector's session for one sender address and port."""

    __slots__ = ("label", "reflected", "forward", "last_seen")

    def __init__(self, label):
        self.label = label
        self.reflected = 0
        self.forward = DelayStats()
        self.last_seen = time.monotonic()


class ReflectorSessions:
    """Reflector sessions by (address, port), forgetting those idle for `idle_s`."""

    def __init__(self, idle_s=300.0):
        self.idle_s = idle_s
        self._by_key = {}

    def get(self, addr, port):
        """(session, is_new), marking the session as seen now."""
        key = (addr, port)
        s = self._by_key.get(key)
        new = s is None
        if new:
            s = self._by_key[key] = ReflectorSession(f"{addr}:{port}")
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
