"""Raw frames for the lab: AF_PACKET sockets with kernel timestamps, and UDP parsers.

Shared by the link emulator and the capture, so both see frames the same way.

    sock = open_packet_socket("eth0")            # bound, SO_TIMESTAMPNS on
    frame, pkttype, ts_ns = recv_frame(sock)     # ts_ns: kernel CLOCK_REALTIME
    udp = parse_udp(frame)                       # Udp(...) of IPv4 or IPv6, or None
    udp = parse_udp4(frame) / parse_udp6(frame)  # one family only
    received, dropped = socket_stats(sock)       # PACKET_STATISTICS (resets)
"""

import socket
import struct
from typing import NamedTuple

SOL_PACKET = 263
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35          # == SCM_TIMESTAMPNS (x86, arm, most architectures)
SO_SNDBUFFORCE = 32          # like SO_SNDBUF/SO_RCVBUF, past net.core.[rw]mem_max (CAP_NET_ADMIN)
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = socket.PACKET_OUTGOING
MAX_FRAME = 65536            # GSO is off on lab veths, so frames fit the MTU; this is ample
_TIMESPEC = struct.Struct("qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


class Udp(NamedTuple):
    """An Ethernet/IPv4/UDP or Ethernet/IPv6/UDP frame, decoded. `payload` is the UDP
    payload, `ttl` the IPv4 TTL or IPv6 Hop Limit, `check` the UDP checksum field."""
    src: str
    dst: str
    sport: int
    dport: int
    ttl: int
    payload: bytes
    check: int = 0


def open_packet_socket(ifname, bufsize=8 << 20):
    """An AF_PACKET raw socket that sees every frame of `ifname`, with kernel timestamps.

    Its receive and send buffers are `bufsize` bytes each (the kernel doubles it).

    The socket is made with protocol 0 (receives nothing) and only then bound to
    ETH_P_ALL on the interface, so no frame of another interface slips in first.
    """
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, bufsize)
        _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, bufsize)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((ifname, ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock


def _set_buffer(sock, force, plain, size):
    """Ask for `size` bytes of buffer, past the sysctl cap when allowed; capped otherwise."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


def recv_frame(sock):
    """Receive one frame: (frame bytes, packet type, kernel CLOCK_REALTIME ns).

    Raises BlockingIOError / socket.timeout as the socket's mode says.
    """
    data, ancdata, _flags, addr = sock.recvmsg(MAX_FRAME, _CMSG_SPACE)
    ts_ns = None
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(cdata)
            ts_ns = sec * 1_000_000_000 + nsec
    return data, addr[2], ts_ns


def socket_stats(sock):
    """(frames received, frames dropped for lack of buffer) since the last call."""
    packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return packets, drops


def parse_udp(frame):
    """Decode an untagged Ethernet/IPv4/UDP or Ethernet/IPv6/UDP frame; None otherwise."""
    return parse_udp4(frame) or parse_udp6(frame)


def parse_udp6(frame):
    """Decode an untagged Ethernet/IPv6/UDP frame with UDP as its first Next Header.

    Extension headers (a fragment header included) are not walked: such a frame
    gives None, as for the TC programs, which leave it to the stack. The payload
    is cut to the UDP length, so Ethernet padding is not part of it.
    """
    if len(frame) < 14 + 40 + 8 or frame[12:14] != b"\x86\xdd" or frame[14] >> 4 != 6:
        return None
    if frame[20] != 17:
        return None
    udp = 14 + 40
    sport, dport, ulen, check = struct.unpack_from("!HHHH", frame, udp)
    payload = frame[udp + 8:udp + max(ulen, 8)]
    return Udp(socket.inet_ntop(socket.AF_INET6, frame[22:38]),
               socket.inet_ntop(socket.AF_INET6, frame[38:54]),
               sport, dport, frame[21], bytes(payload), check)


def parse_udp4(frame):
    """Decode an untagged Ethernet/IPv4/UDP frame; None for anything else.

    Fragments other than the first carry no UDP header and give None; the
    payload is cut to the UDP length, so Ethernet padding is not part of it.
    """
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ver_ihl = frame[14]
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or frame[23] != 17:
        return None
    if struct.unpack_from("!H", frame, 20)[0] & 0x1FFF:  # a non-first fragment
        return None
    udp = 14 + ihl
    if len(frame) < udp + 8:
        return None
    sport, dport, ulen, check = struct.unpack_from("!HHHH", frame, udp)
    payload = frame[udp + 8:udp + max(ulen, 8)]
    return Udp(socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]),
               sport, dport, frame[22], bytes(payload), check)


def stamp_seq(udp, port):
    """The STAMP sequence number (first 4 payload bytes) when `udp` is to or from `port`."""
    if udp is None or port not in (udp.sport, udp.dport) or len(udp.payload) < 4:
        return None
    return struct.unpack_from("!I", udp.payload)[0]


def rfc1071(data):
    """The Internet checksum of `data` (RFC 1071), as a header stores it."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
