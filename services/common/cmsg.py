"""Ancillary data of the user-space datapaths' UDP sockets (--timestamping user).

The sender and the reflector without BPF read the received IP TTL
(IP_RECVTTL) and, on the reflector, the local address a packet was sent to
(IP_PKTINFO) from recvmsg()'s control messages. Python's socket module does
not name every constant on every build, hence the Linux values as defaults.
"""

import socket
import struct

IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL = getattr(socket, "IP_TTL", 2)           # the cmsg type IP_RECVTTL delivers
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
TTL_SPACE = socket.CMSG_SPACE(4)                # an int
PKTINFO_SPACE = socket.CMSG_SPACE(12)           # struct in_pktinfo


def received_ttl(ancdata):
    """The IP TTL of a received packet, or 0 when no IP_TTL control message came."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_TTL:
            return struct.unpack("=i", data[:4])[0]
    return 0


def local_address(ancdata):
    """The 4-byte destination address from IP_PKTINFO, or 0.0.0.0 when absent."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return data[8:12]       # struct in_pktinfo: ifindex, spec_dst, addr
    return b"\0\0\0\0"


# --- kernel receive timestamps (authenticated mode) ----------------------------
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS                # the cmsg type SO_TIMESTAMPNS delivers
TIMESTAMPNS_SPACE = socket.CMSG_SPACE(16)       # struct timespec (64-bit)


def received_time_ns(ancdata):
    """CLOCK_REALTIME ns at which the kernel received a packet (SO_TIMESTAMPNS), or None."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
            sec, nsec = struct.unpack("=qq", data[:16])
            return sec * 1_000_000_000 + nsec
    return None
