"""--timestamping user: the reflector as a plain UDP socket server.

For hosts where BPF is not allowed, and as the baseline the benchmarks
compare the in-kernel reflector with. Same packet format and rules as
reflector_ingress.c (stateless, sender TTL copied, IP TTL 255, short
TWAMP-Light packets answered with the 44-octet base, the loop guard); T2 is
read from CLOCK_REALTIME when recvmsg() returns and T3 just before sendto(),
so both carry this process's scheduling noise. Each reflected packet becomes
the same event record the BPF ring buffer carries (services/common/events.py).

Authenticated mode (--auth-key-file, RFC 8762 sections 4.2.2, 4.3.2, 4.4)
runs here too, never in TC: T2 is the kernel's receive timestamp
(SO_TIMESTAMPNS), the sender's HMAC is checked before anything else (a
missing or wrong one is dropped and counted as auth_failed), and T3 is read
just before the reply's HMAC is computed, the latest moment the HMAC allows.
"""

import select
import socket
import struct
import time

from ..common import cmsg, datapath, events, wire

REFLECT_TTL = 255
AUTH_STATS = ("auth_failed",)   # beside datapath.STATS: counted in authenticated mode only


class UserReflector:
    def __init__(self, ifname, port, ptp, hmac=None):
        self.port = port
        self.ptp = ptp
        self.hmac = hmac
        self.state = None
        self.counts = dict.fromkeys(datapath.STATS + (AUTH_STATS if hmac else ()), 0)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self.sock.setsockopt(socket.IPPROTO_IP, cmsg.IP_RECVTTL, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, cmsg.IP_PKTINFO, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, REFLECT_TTL)
        self._anc_space = cmsg.TTL_SPACE + cmsg.PKTINFO_SPACE
        if hmac:
            self.sock.setsockopt(socket.SOL_SOCKET, cmsg.SO_TIMESTAMPNS, 1)
            self._anc_space += cmsg.TIMESTAMPNS_SPACE
        try:
            self.sock.bind(("0.0.0.0", port))
        except OSError as e:
            self.sock.close()
            raise OSError(e.errno, f"cannot bind UDP port {port}: {e.strerror}") from None
        self.sock.setblocking(False)

    def configure(self, clock_state):
        self.state = clock_state

    def stats(self):
        return dict(self.counts)

    def _encode(self, ns):
        return wire.encode_ts(ns, self.ptp, self.state.tai_offset_s)

    def serve(self, timeout_s, out):
        """Reflect what arrives within timeout_s; append an event record per packet to out."""
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        while ready:
            try:
                data, anc, _flags, (addr, port) = self.sock.recvmsg(65535, self._anc_space)
            except BlockingIOError:
                return
            rx_ns = cmsg.received_time_ns(anc) if self.hmac else None
            t2 = self._encode(rx_ns or time.time_ns())
            reply = self._reply(data, port, anc, t2)
            if reply is None:
                continue
            packet, ttl, local, ts_at = reply
            struct.pack_into("!II", packet, ts_at, *self._encode(time.time_ns()))   # T3
            if self.hmac:
                self.hmac.sign(packet)
            try:
                self.sock.sendto(packet, (addr, port))
            except OSError:
                continue
            self.counts["stamped"] += 1
            self.counts["received"] += 1
            if self.hmac:
                seq, t1, see = wire.parse_sender_auth_packet(data)
            else:
                seq, t1, see = wire.parse_sender_packet(data)
            t3 = struct.unpack_from("!II", packet, ts_at)
            ee = self.state.error_estimate(self.ptp)
            out.append(events.REFLECTOR_EVENT.pack(
                socket.inet_aton(addr), local, port, self.port, len(data), ttl, seq,
                t1[0], t1[1], t2[0], t2[1], t3[0], t3[1], see, ee))

    def _reply(self, data, sport, anc, t2):
        """(reflected packet, sender TTL, local address, offset of T3) or None if it is
        not a test packet we answer."""
        if self.hmac:
            return self._auth_reply(data, sport, anc, t2)
        if len(data) < wire.TWAMP_LIGHT_MIN_LEN:
            return None
        # Loop guard, as in reflector_ingress.c: a reflection is not reflected again.
        if sport == self.port and wire.is_reflection(data):
            self.counts["loop_guard"] += 1
            return None
        ttl, local = cmsg.received_ttl(anc), cmsg.local_address(anc)
        seq, t1, see = wire.parse_sender_packet(data)
        if len(data) < wire.BASE_LEN:
            self.counts["grown"] += 1
        base = wire.build_reflector_packet(seq, (0, 0), self.state.error_estimate(self.ptp), t2,
                                           seq, t1, see, ttl)
        return bytearray(base + data[wire.BASE_LEN:]), ttl, local, 4

    def _auth_reply(self, data, sport, anc, t2):
        # RFC 8762 section 4.4: the HMAC is verified before anything else is used.
        if not self.hmac.verify(data):
            self.counts["auth_failed"] += 1
            return None
        # A reflection signed with the same key verifies too: the loop guard still applies.
        if sport == self.port and wire.is_auth_reflection(data):
            self.counts["loop_guard"] += 1
            return None
        ttl, local = cmsg.received_ttl(anc), cmsg.local_address(anc)
        seq, t1, see = wire.parse_sender_auth_packet(data)
        base = wire.build_reflector_auth_packet(seq, (0, 0), self.state.error_estimate(self.ptp),
                                                t2, seq, t1, see, ttl)
        return bytearray(base + data[wire.AUTH_LEN:]), ttl, local, 16

    def close(self):
        self.sock.close()
