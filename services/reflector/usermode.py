"""--timestamping user: the reflector as a plain UDP socket server.

For hosts where BPF is not allowed, and as the baseline the benchmarks
compare the in-kernel reflector with. Same packet format and rules as
reflector_ingress.c (stateless, sender TTL copied, IP TTL 255, the loop guard,
the allow-list and rate limit of guard.py, no reply to port 0 or to this host's
own address; short TWAMP-Light packets, whose 44-octet reply would be larger,
are refused as too_short); T2 is
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

from ..common import addr, cmsg, datapath, events, records, wire

REFLECT_TTL = 255


class UserReflector:
    def __init__(self, ifname, port, ptp, guard):
        self.port = port
        self.guard = guard
        self.ptp = ptp
        self.state = None
        self.counts = dict.fromkeys(datapath.REFLECTOR_STATS, 0)
        self.counts.update(dict.fromkeys(records.DROP_REASONS, 0))
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
            sender, port = addr.normalize(peer[0].split("%")[0]), peer[1]
            reply = self._reply(data, sender, port, anc, t2)
            if reply is None:
                continue
            packet, ttl, local = reply
            struct.pack_into("!II", packet, 4, *self._now())   # T3
            try:
                self.sock.sendto(packet, peer)      # a link-local peer keeps its scope
            except OSError:
                continue
            self.counts["reflected"] += 1
            self.counts["t3_stamped"] += 1
            seq, t1, see = wire.parse_sender_packet(data)
            t3 = struct.unpack_from("!II", packet, 4)
            ee = self.state.error_estimate(self.ptp)
            out.append(events.ReflectorEvent(
                sender, local, port, self.port, len(data), ttl,
                seq, tuple(t1), tuple(t2), tuple(t3), see, ee))

    def _reply(self, data, saddr, sport, anc, t2):
        """(reflected packet, sender TTL, local address) or None if it is not reflected."""
        local = cmsg.destination(anc)
        local = addr.normalize(local) if local else "0.0.0.0"
        reason = self._refused(data, saddr, sport, local)
        if reason:
            self.counts[reason] += 1
            return None
        ttl = cmsg.received_ttl(anc)
        seq, t1, see = wire.parse_sender_packet(data)
        # RFC 8972 section 3: the SSID is copied (TLVs are processed by the kernel path only).
        ssid = struct.unpack_from("!H", data, 14)[0] if len(data) >= 16 else 0
        base = wire.build_reflector_packet(seq, (0, 0), self.state.error_estimate(self.ptp), t2,
                                           seq, t1, see, ttl, ssid=ssid)
        return bytearray(base + data[wire.BASE_LEN:]), ttl, local

    def _refused(self, data, saddr, sport, local):
        """Why a datagram is not reflected (a records.DROP_REASONS name), or None;
        the checks of reflector_ingress.c, in its order."""
        if len(data) < wire.TWAMP_LIGHT_MIN_LEN:
            return "malformed"
        if sport == 0 or saddr == local:
            return "bad_source"
        if not self.guard.allowed(saddr):
            return "not_allowed"
        if len(data) < wire.BASE_LEN:
            return "too_short"    # the reply, 44 octets, would be larger than the request
        # Loop guard, as in reflector_ingress.c: a reflection is not reflected again.
        if sport == self.port and wire.is_reflection(data):
            return "loop_guard"
        return None if self.guard.within_rate(saddr) else "rate_limited"

    def close(self):
        self.sock.close()
