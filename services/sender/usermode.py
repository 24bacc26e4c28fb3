"""--timestamping user: the sender without BPF, timestamps from user space.

For hosts where BPF is not allowed, and as the baseline the benchmarks
compare the TC timestamps with. Same protocol and same statistics: T1 is
read from CLOCK_REALTIME just before sendto(), T4 just after recvmsg()
returns, so both include the scheduling noise of this process. Replies are
handed to the service as the same decoded records the BPF ring buffer gives
(events.SenderEvent), so everything after this point is shared. The
Transmitter's socket serves both families, so IPv6 works here as IPv4.
"""

import select
import socket
import struct
import time

from ..common import addr, cmsg, datapath, events, wire


class UserSenderDatapath:
    """Duck-types SenderDatapath for a Transmitter's socket."""

    def __init__(self, tx, ptp):
        self.tx = tx
        self.ptp = ptp
        self.socket_cookie = 0
        self._sessions = set()
        self._state = None
        self._callback = None
        self._counts = dict.fromkeys(datapath.SENDER_STATS, 0)
        cmsg.ask_for_ttl(tx.sock)
        cmsg.ask_for_local_address(tx.sock)
        tx.stamp = self._stamp

    @staticmethod
    def event(ev):
        """Its records are decoded already."""
        return ev

    def _now(self):
        return wire.encode_ts(time.time_ns(), self.ptp, self._state.tai_offset_s)

    def _stamp(self, packet):
        """Write T1 and the Error Estimate into a packet about to be sent."""
        sec, frac = self._now()
        struct.pack_into("!IIH", packet, 4, sec, frac, self._state.error_estimate(self.ptp))
        self._counts["t1_stamped"] += 1

    def configure(self, clock_state):
        self._state = clock_state

    def add_session(self, reflector, local):
        # The socket receives only what is addressed to this host's addresses.
        self._sessions.add(reflector)

    def remove_session(self, reflector):
        self._sessions.discard(reflector)

    def stats(self):
        return dict(self._counts)

    def open_events(self, callback):
        self._callback = callback

    def consume(self):
        self.poll(0)

    def poll(self, timeout_ms):
        """Wait up to timeout_ms for replies; hand each one over as an event record."""
        ready, _, _ = select.select([self.tx.sock], [], [], timeout_ms / 1000)
        while ready:
            try:
                data, anc, _flags, peer = self.tx.sock.recvmsg(
                    2048, cmsg.ANCILLARY_SPACE)
            except BlockingIOError:
                return
            t4 = self._now()
            reflector, port = addr.normalize(peer[0].split("%")[0]), peer[1]
            if reflector not in self._sessions or len(data) < wire.BASE_LEN:
                continue
            local = cmsg.destination(anc)
            self._counts["replies_taken"] += 1
            self._callback(events.SenderEvent(
                reflector, addr.normalize(local) if local else "", port, self.tx.source_port,
                len(data), cmsg.received_ttl(anc), t4, bytes(data[:wire.BASE_LEN]),
                bytes(data[wire.BASE_LEN:wire.BASE_LEN + events.EVENT_TLV_LEN])))
