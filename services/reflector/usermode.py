"""--timestamping user: the reflector as a plain UDP socket server.

For hosts where BPF is not allowed, and as the baseline the benchmarks
compare the in-kernel reflector with. Same packet format and rules as
reflector_ingress.c (stateless, sender TTL copied, IP TTL 255, short
TWAMP-Light packets answered with the 44-octet base, the loop guard); T2 is
read from CLOCK_REALTIME when recvmsg() returns and T3 just before sendto(),
so both carry this process's scheduling noise. Each reflected packet becomes
the same decoded event the BPF ring buffer gives (events.ReflectorEvent). One
dual-stack socket answers IPv4 and IPv6 (IPv4 as ::ffff:a.b.c.d), TTL and Hop
Limit 255; a host without IPv6 gets an IPv4 socket.
"""

import select
import socket
import struct
import time

from ..common import addr, cmsg, datapath, events, wire

REFLECT_TTL = 255


class UserReflector:
    def __init__(self, ifname, port, ptp):
        self.port = port
        self.ptp = ptp
        self.state = None
        self.counts = dict.fromkeys(datapath.STATS, 0)
        try:
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, REFLECT_TTL)
            any_addr = "::"
        except OSError:                 # no IPv6 on this host
            self.sock, any_addr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "0.0.0.0"
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        cmsg.ask_for_ttl(self.sock)
        cmsg.ask_for_local_address(self.sock)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, REFLECT_TTL)
        try:
            self.sock.bind((any_addr, port))
        except OSError as e:
            self.sock.close()
            raise OSError(e.errno, f"cannot bind UDP port {port}: {e.strerror}") from None
        self.sock.setblocking(False)

    @staticmethod
    def event(ev):
        """Its records are decoded already."""
        return ev

    def configure(self, clock_state):
        self.state = clock_state

    def stats(self):
        return dict(self.counts)

    def _now(self):
        return wire.encode_ts(time.time_ns(), self.ptp, self.state.tai_offset_s)

    def serve(self, timeout_s, out):
        """Reflect what arrives within timeout_s; append an event record per packet to out."""
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        while ready:
            try:
                data, anc, _flags, peer = self.sock.recvmsg(
                    65535, cmsg.ANCILLARY_SPACE)
            except BlockingIOError:
                return
            t2 = self._now()
            port = peer[1]
            reply = self._reply(data, port, anc, t2)
            if reply is None:
                continue
            packet, ttl, local = reply
            struct.pack_into("!II", packet, 4, *self._now())   # T3
            try:
                self.sock.sendto(packet, peer)      # a link-local peer keeps its scope
            except OSError:
                continue
            self.counts["stamped"] += 1
            self.counts["received"] += 1
            seq, t1, see = wire.parse_sender_packet(data)
            t3 = struct.unpack_from("!II", packet, 4)
            ee = self.state.error_estimate(self.ptp)
            out.append(events.ReflectorEvent(
                addr.normalize(peer[0].split("%")[0]), local, port, self.port, len(data), ttl,
                seq, tuple(t1), tuple(t2), tuple(t3), see, ee))

    def _reply(self, data, sport, anc, t2):
        """(reflected packet, sender TTL, local address) or None if it is not a test packet."""
        if len(data) < wire.TWAMP_LIGHT_MIN_LEN:
            return None
        # Loop guard, as in reflector_ingress.c: a reflection is not reflected again.
        if sport == self.port and wire.is_reflection(data):
            self.counts["loop_guard"] += 1
            return None
        local = cmsg.destination(anc)
        ttl, local = cmsg.received_ttl(anc), addr.normalize(local) if local else "0.0.0.0"
        seq, t1, see = wire.parse_sender_packet(data)
        if len(data) < wire.BASE_LEN:
            self.counts["grown"] += 1
        base = wire.build_reflector_packet(seq, (0, 0), self.state.error_estimate(self.ptp), t2,
                                           seq, t1, see, ttl)
        return bytearray(base + data[wire.BASE_LEN:]), ttl, local

    def close(self):
        self.sock.close()
