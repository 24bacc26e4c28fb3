"""The sender's socket: user space only builds each packet and sends it.

T1 and the Error Estimate are written by sender_egress.c; the packet leaves
user space with a zero Timestamp. The socket's cookie tells the egress
program which packets are ours. IPv4 TTL and IPv6 Hop Limit are 255 (RFC 5357
section 4.1.2), so the reflected Session-Sender TTL tells the hop count.

One socket serves both families: an IPv6 socket with IPV6_V6ONLY off sends
IPv4 packets to IPv4-mapped destinations (::ffff:a.b.c.d), so IPv4 and IPv6
sessions share one port binding and one socket cookie. On a host without
IPv6 (booted with ipv6.disable=1) it is a plain IPv4 socket, and IPv6
sessions are refused with a clear error.
"""

import errno
import socket
import struct

from ..common import addr, owners, wire
from . import direction

SO_COOKIE = getattr(socket, "SO_COOKIE", 57)
SEND_TTL = 255


def sockaddr(ifindex, reflector, port, dual_stack=True):
    """The sendto()/connect() address of a reflector.

    An IPv4 reflector is IPv4-mapped on a dual-stack socket; an IPv6
    link-local one is scoped to our interface (RFC 4007 section 6).
    """
    if addr.family(reflector) == 4:
        return ("::ffff:" + reflector, port, 0, 0) if dual_stack else (reflector, port)
    return (reflector, port, 0, ifindex if addr.is_link_local(reflector) else 0)


def source_address(ifname, reflector, port):
    """The source address the kernel picks for packets to a reflector, either family.

    A UDP connect() on a socket bound to the interface does the route lookup
    that sendto() will do (no packet is sent); getsockname() then names the
    source address. Bound to a device, the kernel takes an IPv4 destination
    with no route to be on-link, so this is None only when the interface has
    no address of the reflector's family (or no IPv6 route to it).
    """
    fam = socket.AF_INET6 if addr.family(reflector) == 6 else socket.AF_INET
    try:
        s = socket.socket(fam, socket.SOCK_DGRAM)
    except OSError:
        return None                     # no IPv6 on this host
    with s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        try:
            s.connect(sockaddr(socket.if_nametoindex(ifname), reflector, port, dual_stack=False))
            local = s.getsockname()[0]
        except OSError:
            return None
        return addr.normalize(local.split("%")[0])


def _open_socket(ifname, source_port):
    """The dual-stack socket, or an IPv4 one where the host has no IPv6: (socket, dual)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        sock, dual = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), False
    else:
        dual = True
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, SEND_TTL)
    # No SO_REUSEADDR: with it a second sender's bind would succeed and
    # both would take each other's replies.
    # Leave through the interface our TC programs are attached to.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    # On the dual-stack socket this is the TTL of its IPv4 packets (Linux hands
    # IPPROTO_IP options of an IPv6 UDP socket to the IPv4 code).
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, SEND_TTL)
    try:
        sock.bind(("::", source_port) if dual else ("0.0.0.0", source_port))
    except OSError as e:
        sock.close()
        holders = owners.udp_port_holders(source_port) if e.errno == errno.EADDRINUSE else []
        who = f" by {owners.describe(holders[0])}" if holders else ""
        raise OSError(e.errno, f"cannot bind UDP source port {source_port} on {ifname}: "
                               f"{e.strerror}{who}; stop another stamp-sender first, or "
                               "pick another port with -s") from None
    return sock, dual


class Transmitter:
    def __init__(self, ifname, source_port, size=wire.BASE_LEN, tlvs=b"", dscp=None,
                 authenticated=False):
        if authenticated and tlvs:
            raise ValueError("TLVs in authenticated mode need the HMAC TLV (RFC 8972 "
                             "section 4.8), which is not implemented")
        self.sock, self.dual_stack = _open_socket(ifname, source_port)
        self.sock.setblocking(False)
        self.ifindex = socket.if_nametoindex(ifname)
        self.source_port = source_port
        self.stamp = None       # user-space timestamping writes T1 here
        self.cookie = struct.unpack("=Q", self.sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]
        if dscp is not None:        # --dscp: ECN left 0 (Not-ECT)
            # IPv4 packets (of either socket) take IP_TOS, IPv6 ones the Traffic Class.
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
            if self.dual_stack:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        # --directional-loss: a Direct Measurement TLV first, whose S_TxC counts our packets.
        self._s_txc = (direction.s_txc_offset()
                       if tlvs[1:2] == bytes([wire.TLV_DIRECT_MEASUREMENT]) else None)
        if authenticated:
            self._packet = bytearray(wire.build_sender_auth_packet(0, size=max(size, wire.AUTH_LEN)))
            self._ssid_at = wire.SENDER_AUTH_FIELDS["ssid"][0]     # RFC 8972 Figure 3
        else:
            self._packet = bytearray(wire.build_sender_packet(0, size=size, tlvs=tlvs))
            self._ssid_at = wire.SENDER_FIELDS["ssid"][0]          # RFC 8972 Figure 1
        self._dest = {}         # (reflector, port) -> sockaddr
        self.errors = 0

    def supports(self, reflector):
        """Can this socket send to `reflector`? (IPv6 needs the dual-stack socket.)"""
        return self.dual_stack or addr.family(reflector) == 4

    def send(self, seq, reflector, port, ssid=0):
        """Send test packet `seq` of session `ssid`; False (and counted) when the kernel
        refused it."""
        struct.pack_into("!I", self._packet, 0, seq)
        struct.pack_into("!H", self._packet, self._ssid_at, ssid)
        if self._s_txc is not None:
            struct.pack_into("!I", self._packet, self._s_txc, (seq + 1) & 0xFFFFFFFF)
        if self.stamp:
            self.stamp(self._packet)
        dest = self._dest.get((reflector, port))
        if dest is None:
            dest = self._dest[(reflector, port)] = sockaddr(self.ifindex, reflector, port,
                                                            self.dual_stack)
        try:
            self.sock.sendto(self._packet, dest)
            return True
        except OSError:
            self.errors += 1
            return False

    def forget(self, reflector, port):
        """Drop a reflector's cached address (its session ended)."""
        self._dest.pop((reflector, port), None)

    def close(self):
        self.sock.close()
