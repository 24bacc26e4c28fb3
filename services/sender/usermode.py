"""--timestamping user: the sender without BPF, timestamps from user space.

For hosts where BPF is not allowed, and as the baseline the benchmarks
compare the TC timestamps with. Same protocol and same statistics: T1 is
read from CLOCK_REALTIME just before sendto(), T4 just after recvmsg()
returns, so both include the scheduling noise of this process. Replies are
handed to the service as the same records the BPF ring buffer carries
(services/common/events.py), so everything after this point is shared.
"""

import select
import socket
import struct
import time

from ..common import cmsg, datapath, events, wire


class UserSenderDatapath:
    """Duck-types SenderDatapath for a Transmitter's socket."""

    def __init__(self, tx, ptp, local_addr):
        self.tx = tx
        self.ptp = ptp
        self.local = socket.inet_aton(local_addr)
        self.socket_cookie = 0
        self._sessions = set()
        self._state = None
        self._callback = None
        self._counts = dict.fromkeys(datapath.SENDER_STATS, 0)
        tx.sock.setsockopt(socket.IPPROTO_IP, cmsg.IP_RECVTTL, 1)
        tx.stamp = self._stamp

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
                data, anc, _flags, (addr, port) = self.tx.sock.recvmsg(
                    2048, cmsg.TTL_SPACE)
            except BlockingIOError:
                return
            t4 = self._now()
            if addr not in self._sessions or len(data) < wire.BASE_LEN:
                continue
            ttl = cmsg.received_ttl(anc)
            self._counts["replies_taken"] += 1
            self._callback(events.SENDER_EVENT.pack(
                socket.inet_aton(addr), self.local, port, self.tx.source_port,
                len(data), ttl, 0, t4[0], t4[1], data[:wire.BASE_LEN],
                data[wire.BASE_LEN:wire.BASE_LEN + events.EVENT_TLV_LEN]))
