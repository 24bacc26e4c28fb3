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

Authenticated mode (--auth-key-file, RFC 8762 sections 4.2.2, 4.3.2, 4.4)
runs here too, never in TC: T2 is the kernel's receive timestamp
(SO_TIMESTAMPNS), the sender's HMAC is checked before anything else (a
missing or wrong one is dropped and counted as auth_failed; the allow-list and
the source checks, which read no packet field, come first), and T3 is read
just before the reply's HMAC is computed, the latest moment the HMAC allows.
The SSID (RFC 8972 Figures 3 and 4, octets 26-27) is copied; octets after the
HMAC are copied unprocessed, as with --timestamping user (a conforming sender
sends its TLVs with U=1, so they come back "not understood"). The stateful
mode is the kernel's only: cli.py refuses --stateful with --auth-key-file.
"""

import select
import socket
import struct
import time

from ..common import addr, auth, cmsg, datapath, events, netif, records, wire

REFLECT_TTL = 255


class UserReflector:
    def __init__(self, ifname, port, ptp, guard, hmac=None):
        self.port = port
        self.guard = guard
        self.ptp = ptp
        self.hmac = hmac
        self.on_loopback = netif.is_loopback(ifname)   # bpf/guard.h: guard_bad_source()
        self.state = None
        self.counts = dict.fromkeys(datapath.REFLECTOR_STATS + (auth.STATS if hmac else ()), 0)
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
        self._anc_space = cmsg.ANCILLARY_SPACE
        if hmac:
            self.sock.setsockopt(socket.SOL_SOCKET, cmsg.SO_TIMESTAMPNS, 1)
            self._anc_space += cmsg.TIMESTAMPNS_SPACE
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

    def _encode(self, ns):
        return wire.encode_ts(ns, self.ptp, self.state.tai_offset_s)

    def serve(self, timeout_s, out):
        """Reflect what arrives within timeout_s; append an event record per packet to out."""
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        while ready:
            try:
                data, anc, _flags, peer = self.sock.recvmsg(65535, self._anc_space)
            except BlockingIOError:
                return
            rx_ns = cmsg.received_time_ns(anc) if self.hmac else None
            t2 = self._encode(rx_ns or time.time_ns())
            sender, port = addr.normalize(peer[0].split("%")[0]), peer[1]
            reply = self._reply(data, sender, port, anc, t2)
            if reply is None:
                continue
            packet, ttl, local, ts_at = reply
            struct.pack_into("!II", packet, ts_at, *self._encode(time.time_ns()))   # T3
            if self.hmac:
                self.hmac.sign(packet)
            try:
                self.sock.sendto(packet, peer)      # a link-local peer keeps its scope
            except OSError:
                continue
            self.counts["reflected"] += 1
            self.counts["t3_stamped"] += 1
            if self.hmac:
                seq, t1, see = wire.parse_sender_auth_packet(data)
            else:
                seq, t1, see = wire.parse_sender_packet(data)
            t3 = struct.unpack_from("!II", packet, ts_at)
            ee = self.state.error_estimate(self.ptp)
            out.append(events.ReflectorEvent(
                sender, local, port, self.port, len(data), ttl,
                seq, tuple(t1), tuple(t2), tuple(t3), see, ee))

    def _reply(self, data, saddr, sport, anc, t2):
        """(reflected packet, sender TTL, local address, offset of T3) or None if it is
        not reflected."""
        local = cmsg.destination(anc)
        local = addr.normalize(local) if local else "0.0.0.0"
        reason = (self._auth_refused if self.hmac else self._refused)(data, saddr, sport, local)
        if reason:
            self.counts[reason] += 1
            return None
        ttl = cmsg.received_ttl(anc)
        if self.hmac:
            return self._auth_reply(data, ttl, t2), ttl, local, wire.REFLECTOR_AUTH_FIELDS["ts"][0]
        seq, t1, see = wire.parse_sender_packet(data)
        # RFC 8972 section 3: the SSID is copied (TLVs are processed by the kernel path only).
        ssid = struct.unpack_from("!H", data, 14)[0] if len(data) >= 16 else 0
        base = wire.build_reflector_packet(seq, (0, 0), self.state.error_estimate(self.ptp), t2,
                                           seq, t1, see, ttl, ssid=ssid)
        return bytearray(base + data[wire.BASE_LEN:]), ttl, local, wire.REFLECTOR_FIELDS["ts"][0]

    def _auth_reply(self, data, ttl, t2):
        """The authenticated reply (RFC 8762 Figure 6, the SSID of RFC 8972 Figure 4),
        unsigned, with what followed the sender's HMAC copied after ours."""
        seq, t1, see = wire.parse_sender_auth_packet(data)
        base = wire.build_reflector_auth_packet(seq, (0, 0), self.state.error_estimate(self.ptp),
                                                t2, seq, t1, see, ttl,
                                                ssid=wire.sender_auth_ssid(data))
        return bytearray(base + data[wire.AUTH_LEN:])

    def _refused(self, data, saddr, sport, local):
        """Why a datagram is not reflected (a records.DROP_REASONS name), or None;
        the checks of reflector_ingress.c, in its order."""
        if len(data) < wire.TWAMP_LIGHT_MIN_LEN:
            return "malformed"
        if sport == 0 or (saddr == local and not self.on_loopback):
            return "bad_source"
        if not self.guard.allowed(saddr):
            return "not_allowed"
        if len(data) < wire.BASE_LEN:
            return "too_short"    # the reply, 44 octets, would be larger than the request
        # Loop guard, as in reflector_ingress.c: a reflection is not reflected again.
        if sport == self.port and wire.is_reflection(data):
            return "loop_guard"
        return None if self.guard.within_rate(saddr) else "rate_limited"

    def _auth_refused(self, data, saddr, sport, local):
        """_refused for authenticated mode: the checks that read no packet field, then
        the HMAC (RFC 8762 section 4.4: verified before any field is used; a packet
        shorter than 112 octets fails it), then the loop guard and the rate."""
        if not self.guard.allowed(saddr):
            return "not_allowed"
        if sport == 0 or (saddr == local and not self.on_loopback):
            return "bad_source"
        if not self.hmac.verify(data):
            return "auth_failed"
        # A reflection signed with the same key verifies too: the loop guard still applies.
        if sport == self.port and wire.is_auth_reflection(data):
            return "loop_guard"
        return None if self.guard.within_rate(saddr) else "rate_limited"

    def close(self):
        self.sock.close()
