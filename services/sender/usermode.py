"""--timestamping user: the sender without BPF, timestamps from user space.

For hosts where BPF is not allowed, and as the baseline the benchmarks
compare the TC timestamps with. Same protocol and same statistics: T1 is
read from CLOCK_REALTIME just before sendto(), T4 just after recvmsg()
returns, so both include the scheduling noise of this process. Replies are
handed to the service as the same decoded records the BPF ring buffer gives
(events.SenderEvent), so everything after this point is shared. The
Transmitter's socket serves both families, so IPv6 works here as IPv4.

Authenticated mode (--auth-key-file, RFC 8762 sections 4.2.2, 4.3.2, 4.4)
runs here too: T1 is read just before the HMAC is computed (the HMAC covers
it, so it cannot be later), T4 is the kernel's receive timestamp
(SO_TIMESTAMPNS), and a reply whose HMAC is wrong or missing is not a reply:
it is counted as auth_failed and its packet waits to be declared lost.
"""

import select
import socket
import struct
import time

from ..common import addr, auth, cmsg, datapath, events, wire


class UserSenderDatapath:
    """Duck-types SenderDatapath for a Transmitter's socket."""

    def __init__(self, tx, ptp, hmac=None):
        self.tx = tx
        self.ptp = ptp
        self.hmac = hmac
        self.socket_cookie = 0
        self._sessions = set()
        self._state = None
        self._callback = None
        self._counts = dict.fromkeys(datapath.SENDER_STATS + (auth.STATS if hmac else ()), 0)
        self._anc_space = cmsg.ANCILLARY_SPACE
        cmsg.ask_for_ttl(tx.sock)
        cmsg.ask_for_local_address(tx.sock)
        if hmac:
            tx.sock.setsockopt(socket.SOL_SOCKET, cmsg.SO_TIMESTAMPNS, 1)
            self._anc_space += cmsg.TIMESTAMPNS_SPACE
        tx.stamp = self._stamp_auth if hmac else self._stamp

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

    def _stamp_auth(self, packet):
        """T1 and the Error Estimate at their authenticated offsets, then the HMAC."""
        sec, frac = self._now()
        struct.pack_into("!IIH", packet, 16, sec, frac, self._state.error_estimate(self.ptp))
        self.hmac.sign(packet)
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
                data, anc, _flags, peer = self.tx.sock.recvmsg(2048, self._anc_space)
            except BlockingIOError:
                return
            if self.hmac:
                rx_ns = cmsg.received_time_ns(anc) or time.time_ns()
                t4 = wire.encode_ts(rx_ns, self.ptp, self._state.tai_offset_s)
            else:
                t4 = self._now()
            reflector, port = addr.normalize(peer[0].split("%")[0]), peer[1]
            if reflector not in self._sessions or len(data) < wire.BASE_LEN:
                continue
            if self.hmac:
                # RFC 8762 section 4.4: verified before any field is used.
                if not self.hmac.verify(data):
                    self._counts["auth_failed"] += 1
                    continue
                base, tlvs_at = wire.reflector_auth_to_base(data), wire.AUTH_LEN
            else:
                base, tlvs_at = data[:wire.BASE_LEN], wire.BASE_LEN
            local = cmsg.destination(anc)
            self._counts["replies_taken"] += 1
            self._callback(events.SenderEvent(
                reflector, addr.normalize(local) if local else "", port, self.tx.source_port,
                len(data), cmsg.received_ttl(anc), t4, bytes(base),
                bytes(data[tlvs_at:tlvs_at + events.EVENT_TLV_LEN])))
