"""The sender's socket: user space only builds each packet and sends it.

T1 and the Error Estimate are written by sender_egress.c; the packet leaves
user space with a zero Timestamp. The socket's cookie tells the egress
program which packets are ours. IP TTL is 255 (RFC 5357 section 4.1.2), so
the reflected Session-Sender TTL tells the hop count.
"""

import errno
import socket
import struct

from ..common import owners, wire
from . import direction

SO_COOKIE = getattr(socket, "SO_COOKIE", 57)
SEND_TTL = 255


def source_address(ifname, reflector, port):
    """The IPv4 source address the kernel picks for packets to a reflector.

    A UDP connect() on a socket bound to the interface does the route lookup
    that sendto() will do (no packet is sent); getsockname() then names the
    source address. Bound to a device, the kernel takes a destination with no
    route to be on-link, so this is None only when the interface has no IPv4
    address.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        try:
            s.connect((reflector, port))
        except OSError:
            return None
        return s.getsockname()[0]


class Transmitter:
    def __init__(self, ifname, source_port, size=wire.BASE_LEN, tlvs=b"", dscp=None,
                 authenticated=False):
        if authenticated and tlvs:
            raise ValueError("TLVs in authenticated mode need the HMAC TLV (RFC 8972 "
                             "section 4.8), which is not implemented")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # No SO_REUSEADDR: with it a second sender's bind would succeed and
        # both would take each other's replies.
        # Leave through the interface our TC programs are attached to.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, SEND_TTL)
        try:
            self.sock.bind(("0.0.0.0", source_port))
        except OSError as e:
            self.sock.close()
            holders = owners.udp_port_holders(source_port) if e.errno == errno.EADDRINUSE else []
            who = f" by {owners.describe(holders[0])}" if holders else ""
            raise OSError(e.errno, f"cannot bind UDP source port {source_port} on {ifname}: "
                                   f"{e.strerror}{who}; stop another stamp-sender first, or "
                                   "pick another port with -s") from None
        self.sock.setblocking(False)
        self.source_port = source_port
        self.stamp = None       # user-space timestamping writes T1 here
        self.cookie = struct.unpack("=Q", self.sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]
        if dscp is not None:        # --dscp: ECN left 0 (Not-ECT)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
        # --directional-loss: a Direct Measurement TLV first, whose S_TxC counts our packets.
        self._s_txc = (direction.s_txc_offset()
                       if tlvs[1:2] == bytes([wire.TLV_DIRECT_MEASUREMENT]) else None)
        if authenticated:
            self._packet = bytearray(wire.build_sender_auth_packet(0, size=max(size, wire.AUTH_LEN)))
            self._ssid_at = wire.SENDER_AUTH_FIELDS["ssid"][0]     # RFC 8972 Figure 3
        else:
            self._packet = bytearray(wire.build_sender_packet(0, size=size, tlvs=tlvs))
            self._ssid_at = wire.SENDER_FIELDS["ssid"][0]          # RFC 8972 Figure 1
        self.errors = 0

    def send(self, seq, reflector, port, ssid=0):
        """Send test packet `seq` of session `ssid`; False (and counted) when the kernel
        refused it."""
        struct.pack_into("!I", self._packet, 0, seq)
        struct.pack_into("!H", self._packet, self._ssid_at, ssid)
        if self._s_txc is not None:
            struct.pack_into("!I", self._packet, self._s_txc, (seq + 1) & 0xFFFFFFFF)
        if self.stamp:
            self.stamp(self._packet)
        try:
            self.sock.sendto(self._packet, (reflector, port))
            return True
        except OSError:
            self.errors += 1
            return False

    def close(self):
        self.sock.close()
