"""Pieces of a service's main loop: stop signals, periodic work, health records."""

import os
import signal
import socket
import time

from . import clock, cmsg, records


def keep_rx_timestamps_on():
    """Keep the kernel's software receive timestamps on; returns the socket to keep.

    The kernel stamps received frames (skb->tstamp) only while some socket
    asks for timestamps. Our TC ingress programs read that stamp, taken when
    the driver hands the frame over, before backlog queueing (bpf/stamp.h,
    stamp_rx_tai), so each service holds one such socket open while it runs.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, cmsg.SO_TIMESTAMPNS, 1)
    return sock


class StopSignals:
    """Sets .stopped on SIGTERM or SIGINT, so the loop can detach and exit."""

    def __init__(self):
        self.stopped = False
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        self.stopped = True
        self.signal = signal.Signals(signum).name


class ReloadSignal:
    """Notes SIGHUP, for a service that re-reads some settings without a restart.

    Made first thing in main(), before the BPF compile: a SIGHUP that came
    earlier would have ended the process. The supervisor starts such a child
    with SIGHUP blocked (supervisor/child.py), so one sent before this handler
    exists waits, and is taken here.
    """

    def __init__(self):
        self._pending = False
        signal.signal(signal.SIGHUP, self._handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def _handle(self, _signum, _frame):
        self._pending = True

    def take(self):
        """True once for each batch of SIGHUPs received since the last call."""
        pending, self._pending = self._pending, False
        return pending


class Every:
    """True from due() once every `interval` seconds (monotonic)."""

    def __init__(self, interval, now=None):
        self.interval = interval
        self.next = (time.monotonic() if now is None else now) + interval

    def due(self, now=None):
        now = time.monotonic() if now is None else now
        if now < self.next:
            return False
        self.next = max(self.next + self.interval, now)
        return True


def service_stats(role, clock_state, pusher, ringbuf_lost, timestamping=records.TS_BPF,
                  ptp=False, dropped_sessions=0):
    """The periodic health record of a service."""
    return records.ServiceStats(
        role=role, timestamping=timestamping,
        clock_synchronized=clock_state.synchronized,
        clock_error_ns=int(clock_state.error_s * 1e9),
        dropped_queue=pusher.dropped, dropped_ringbuf=ringbuf_lost,
        records_sent=pusher.sent, pid=os.getpid(), ptp_format=ptp,
        tai_offset_s=clock_state.tai_offset_s, dropped_sessions=dropped_sessions)


class AuthFailures:
    """Logs, at most once per call, how many packets failed authentication since the last
    (authenticated mode; the count is the datapath's auth_failed, also in the summary)."""

    def __init__(self, log, what):
        self.log, self.what, self.seen = log, what, 0

    def check(self, counters):
        n = counters.get("auth_failed", 0)
        if n > self.seen:
            self.log.warning("auth_failed", count=n, new=n - self.seen,
                             hint=f"{self.what} with a missing or wrong HMAC were dropped: a peer "
                                  "without the key, with another key, or tampering")
            self.seen = n


def refresh_clock(dp, last, log):
    """Re-read the clock, rewrite the datapath's config, log changes; returns the state."""
    state = clock.read()
    if last is None or state != last:
        dp.configure(state)
        if last is not None and state.synchronized != last.synchronized:
            log.warning("clock_sync_changed", synchronized=state.synchronized,
                        error_s=state.error_s)
        if last is not None and state.tai_offset_s != last.tai_offset_s:
            log.warning("tai_offset_changed", tai_offset_s=state.tai_offset_s,
                        was=last.tai_offset_s)
    return state
