"""Ancillary data of the user-space datapaths' UDP sockets (--timestamping user).

The sender and the reflector without BPF read the received IPv4 TTL
(IP_RECVTTL) or IPv6 Hop Limit (IPV6_RECVHOPLIMIT), and the local address a
packet was sent to (IP_PKTINFO, IPV6_RECVPKTINFO), from recvmsg()'s control
messages. Python's socket module does not name every constant on every
build, hence the Linux values as defaults.
"""

import socket
import struct

IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL = getattr(socket, "IP_TTL", 2)           # the cmsg type IP_RECVTTL delivers
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)    # the cmsg type it delivers
TTL_SPACE = socket.CMSG_SPACE(4)                # an int
PKTINFO_SPACE = socket.CMSG_SPACE(12)           # struct in_pktinfo


def ask_for_ttl(sock):
    """Have recvmsg() report the TTL (IPv4) and, on an IPv6 socket, the Hop Limit."""
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)


def received_ttl(ancdata):
    """The IPv4 TTL or IPv6 Hop Limit of a received packet, 0 when no such message came."""
    for level, kind, data in ancdata:
        if (level == socket.IPPROTO_IP and kind == IP_TTL) or \
                (level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT):
            return struct.unpack("=i", data[:4])[0]
    return 0


IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)      # the cmsg type it delivers
PKTINFO6_SPACE = socket.CMSG_SPACE(20)                  # struct in6_pktinfo
# Room for what a dual-stack socket gets with every option above: an IPv4 packet
# brings IPV6_PKTINFO (mapped) and IP_PKTINFO and IP_TTL; too little space
# truncates them (MSG_CTRUNC) and the TTL is lost.
ANCILLARY_SPACE = 2 * PKTINFO6_SPACE + 2 * PKTINFO_SPACE + 2 * TTL_SPACE


def ask_for_local_address(sock):
    """Have recvmsg() report the address a packet was sent to, either family."""
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)


def destination(ancdata):
    """The address a received packet was sent to, as a string ("" when not reported)."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return socket.inet_ntoa(data[8:12])
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
            return socket.inet_ntop(socket.AF_INET6, data[:16])    # in6_pktinfo: addr, ifindex
    return ""


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
