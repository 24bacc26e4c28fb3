"""Ethernet frames for BPF_PROG_TEST_RUN: STAMP and the packets that are not.

Checksums are real (RFC 1071), so a program that fixes them incrementally
can be checked by recomputing them on its output.
"""

import socket
import struct

from stamp_bpf.common import wire
from stamp_bpf.lab import packets

# BPF_PROG_TEST_RUN runs frames on lo, whose address is all zeros; the ingress
# programs take only frames addressed to the host (PACKET_HOST), so both ends'
# MAC addresses are lo's.
SENDER_MAC = bytes(6)
REFLECTOR_MAC = bytes(6)
SENDER_ADDR = "198.18.0.1"
REFLECTOR_ADDR = "198.18.0.2"


checksum = packets.rfc1071


def eth(payload, proto=0x0800, src=SENDER_MAC, dst=REFLECTOR_MAC):
    return dst + src + struct.pack("!H", proto) + payload


def ipv4(proto, l4, src=SENDER_ADDR, dst=REFLECTOR_ADDR, ttl=64):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, ttl, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + l4


def udp(sport, dport, payload, src=SENDER_ADDR, dst=REFLECTOR_ADDR):
    """A UDP header and payload with its checksum over the IPv4 pseudo-header."""
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    body = struct.pack("!HHHH", sport, dport, length, 0) + payload
    return body[:6] + struct.pack("!H", checksum(pseudo + body) or 0xFFFF) + body[8:]


def stamp_request(sport=862, dport=862, seq=7, size=wire.BASE_LEN, src=SENDER_ADDR,
                  dst=REFLECTOR_ADDR, ssid=0, tlvs=b"", src_mac=SENDER_MAC, dst_mac=REFLECTOR_MAC):
    """A Session-Sender test packet, Timestamp zero (the sender's user space leaves it so)."""
    payload = wire.build_sender_packet(seq, size=size, ssid=ssid, tlvs=tlvs)
    return eth(ipv4(17, udp(sport, dport, payload, src, dst), src, dst), src=src_mac, dst=dst_mac)


def stamp_reply(sport=862, dport=862, seq=7):
    """A Session-Reflector packet coming back to the sender (Receive Timestamp set)."""
    payload = wire.build_reflector_packet(seq, (0xE0000000, 1), 0x0001, (0xE0000000, 1), seq,
                                          (0xE0000000, 0), 0x0001, 64)
    return eth(ipv4(17, udp(sport, dport, payload, REFLECTOR_ADDR, SENDER_ADDR),
                    REFLECTOR_ADDR, SENDER_ADDR), src=REFLECTOR_MAC, dst=SENDER_MAC)


def three_tlvs():
    """Timestamp Information, Class of Service (DSCP 46) and 16 octets of Extra Padding."""
    return (wire.build_tlv(wire.TLV_TIMESTAMP_INFO, bytes(4))
            + wire.build_tlv(wire.TLV_CLASS_OF_SERVICE, wire.build_cos(46))
            + wire.build_tlv(wire.TLV_EXTRA_PADDING, bytes(16)))


def other_udp(dport=53, size=64):
    return eth(ipv4(17, udp(40000, dport, bytes(size))))


def tcp(size=64):
    hdr = struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 5 << 4, 0x10, 65535, 0, 0)
    return eth(ipv4(6, hdr + bytes(size)))


SENDER_ADDR6 = "2001:db8::1"
REFLECTOR_ADDR6 = "2001:db8::2"


def ipv6(next_header, l4, src=SENDER_ADDR6, dst=REFLECTOR_ADDR6, hlim=64):
    """An Ethernet frame with an IPv6 header (no extension header) and `l4` after it."""
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(l4), next_header, hlim,
                      socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
    return eth(hdr + l4, proto=0x86DD)


def udp6(sport, dport, payload, src=SENDER_ADDR6, dst=REFLECTOR_ADDR6):
    """A UDP header and payload with its checksum over the IPv6 pseudo-header (RFC 8200 8.1)."""
    length = 8 + len(payload)
    pseudo = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
              + struct.pack("!IxxxB", length, 17))
    body = struct.pack("!HHHH", sport, dport, length, 0) + payload
    return body[:6] + struct.pack("!H", checksum(pseudo + body) or 0xFFFF) + body[8:]


def stamp_request6(sport=862, dport=862, seq=7, size=wire.BASE_LEN, ssid=0, tlvs=b""):
    """stamp_request() over IPv6."""
    payload = wire.build_sender_packet(seq, size=size, ssid=ssid, tlvs=tlvs)
    return ipv6(17, udp6(sport, dport, payload))


def stamp_reply6(sport=862, dport=862, seq=7):
    """stamp_reply() over IPv6."""
    payload = wire.build_reflector_packet(seq, (0xE0000000, 1), 0x0001, (0xE0000000, 1), seq,
                                          (0xE0000000, 0), 0x0001, 64)
    return ipv6(17, udp6(sport, dport, payload, REFLECTOR_ADDR6, SENDER_ADDR6),
                REFLECTOR_ADDR6, SENDER_ADDR6)


def udp6_checksum_ok(frame):
    """True when an IPv6/UDP frame's UDP checksum verifies (zero never does over IPv6)."""
    length = struct.unpack("!H", frame[18:20])[0]
    l4 = frame[54:54 + length]
    if struct.unpack("!H", l4[6:8])[0] == 0:
        return False
    pseudo = frame[22:54] + struct.pack("!IxxxB", len(l4), 17)
    return checksum(pseudo + l4) == 0


def ipv6_udp(dport=862, size=wire.BASE_LEN, sport=862):
    """IPv6 UDP to port `dport` (checksum left zero: not a packet of ours either way)."""
    return ipv6(17, struct.pack("!HHHH", sport, dport, 8 + size, 0) + bytes(size))


def tcp6(size=64):
    return ipv6(6, struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 5 << 4, 0x10, 65535, 0, 0) + bytes(size))


def icmpv6_echo(size=56):
    """An ICMPv6 Echo Request (type 128), the ping6 every host answers."""
    return ipv6(58, struct.pack("!BBHHH", 128, 0, 0, 1, 1) + bytes(size))


def udp_checksum_ok(frame):
    """True when an IPv4/UDP frame's UDP checksum verifies (or is zero: none)."""
    ip = frame[14:34]
    ihl = (ip[0] & 15) * 4
    l4 = frame[14 + ihl:14 + struct.unpack("!H", ip[2:4])[0]]
    if struct.unpack("!H", l4[6:8])[0] == 0:
        return True
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(l4))
    return checksum(pseudo + l4) == 0


def ip_checksum_ok(frame):
    return checksum(frame[14:34]) == 0
