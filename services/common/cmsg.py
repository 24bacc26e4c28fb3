"""Ancillary data of the user-space datapaths' UDP sockets (--timestamping user).

The sender and the reflector without BPF read the received IPv4 TTL
(IP_RECVTTL) or IPv6 Hop Limit (IPV6_RECVHOPLIMIT) and, on the reflector, the local address a packet was sent to
(IP_PKTINFO) from recvmsg()'s control messages. Python's socket module does
not name every constant on every build, hence the Linux values as defaults.
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


def local_address(ancdata):
    """The 4-byte destination address from IP_PKTINFO, or 0.0.0.0 when absent."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return data[8:12]       # struct in_pktinfo: ifindex, spec_dst, addr
    return b"\0\0\0\0"
