"""Every packet our programs rewrite carries valid IPv4 and UDP checksums on the wire.

The veth ends have TX checksum offload off (as the lab sets them), so frames
carry the checksum the kernel or our programs left, not a partial one. The
receiving veth marks frames CHECKSUM_UNNECESSARY, so a socket getting a reply
proves nothing: each captured frame is checked with our own RFC 1071 sum and
with scapy's, for the sender's T1-stamped requests, the reflected replies,
requests of odd and long sizes, and requests sent with UDP checksum 0 (none,
which IPv4 allows: the reply may keep 0 or be valid). Short TWAMP-Light
requests (14..43 octets) get no reply: it would be larger than they are
(docs/security.md).
"""

import socket
import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

import stampnet

pytestmark = pytest.mark.timeout(180)
COUNT = 20

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("csum"))
    yield lab
    lab.close()

@pytest.fixture(scope="module")
def session_frames(lab):
    """Frames on the sender's interface during a whole stamp-sender session."""
    topo = lab.topo
    lab.reflector()
    with lab.capture(topo.sender, "session") as frames:
        svc = lab.start(topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                        "-c", COUNT, "-i", "0.01")
        assert svc.wait_exit() == 0, f"stamp-sender failed:\n{svc.text()[-2000:]}"
    s = svc.summary()["sessions"][0]
    assert s["received"] == COUNT, f"the session lost packets: {s}"
    return frames

def scapy_checksums_ok(frame):
    """(ip ok, udp ok) as scapy recomputes them; a zero UDP checksum counts as ok."""
    p = Ether(frame)
    ip_ck, udp_ck = p[IP].chksum, p[UDP].chksum
    del p[IP].chksum
    del p[UDP].chksum
    q = Ether(bytes(p))
    return q[IP].chksum == ip_ck, udp_ck == 0 or q[UDP].chksum == udp_ck

def check(frame, what, allow_zero=False):
    assert stampnet.ip_header_ok(frame), f"{what}: the IPv4 header checksum is wrong"
    stored, correct = stampnet.udp_checksum(frame)
    if allow_zero and stored == 0:
        return
    assert stored != 0, f"{what}: UDP checksum 0 on a packet that was sent with one"
    assert stored == correct, f"{what}: UDP checksum {stored:#06x}, should be {correct:#06x}"
    assert scapy_checksums_ok(frame) == (True, True), f"{what}: scapy disagrees with the checksums"

def test_sender_requests_and_reflected_replies(lab, session_frames):
    topo = lab.topo
    reqs = reps = 0
    for frame, u in stampnet.udp_frames(session_frames):
        seq = struct.unpack_from("!I", u.payload)[0]
        if u.src == topo.sender.addr:
            assert u.payload[4:12] != bytes(8), f"request {seq} left without T1"
            check(frame, f"the sender's T1-stamped request {seq}")
            reqs += 1
        else:
            check(frame, f"the reflected reply {seq}")
            reps += 1
    assert (reqs, reps) == (COUNT, COUNT), f"captured {reqs} requests and {reps} replies, not {COUNT} each"

@pytest.mark.parametrize("no_check", [False, True], ids=["with-checksum", "checksum-0"])
def test_crafted_requests_of_every_size(lab, session_frames, no_check):
    """Short (not answered), odd, base and long requests; with a checksum or with 0."""
    topo = lab.topo
    sizes = [14, 15, 20, 27, 43, 44, 45, 99, 100, 1000]
    sock = stampnet.udp_socket(topo.sender, 40000 + no_check)
    if no_check:
        sock.setsockopt(socket.SOL_SOCKET, stampnet.SO_NO_CHECK, 1)
    try:
        with lab.capture(topo.sender, f"crafted{int(no_check)}") as frames:
            for i, size in enumerate(sizes):
                head = struct.pack("!IIIH", 600 + i, 0xE1234567, 0x89ABCDEF, 0x0001)
                tail = bytes((i * 13 + k) & 0xFF for k in range(max(0, size - 44)))
                sock.sendto((head + bytes(30))[:size] + tail, (topo.reflector.addr, 862))
            got = stampnet.recv_all(sock)
    finally:
        sock.close()
    answered = [size for size in sizes if size >= 44]
    assert len(got) == len(answered), \
        f"{len(got)} replies for {len(answered)} requests of 44 octets or more (none to shorter)"
    replies = {}
    for frame, u in stampnet.udp_frames(frames):
        if u.src == topo.reflector.addr:
            replies[struct.unpack_from("!I", u.payload, 24)[0]] = (frame, u)
        elif no_check:
            assert stampnet.udp_checksum(frame)[0] == 0, "SO_NO_CHECK did not send checksum 0"
    assert sorted(replies) == [600 + i for i, size in enumerate(sizes) if size >= 44], \
        "a request shorter than 44 octets was answered"
    for i, size in enumerate(sizes):
        if size < 44:
            continue
        frame, u = replies[600 + i]
        assert len(u.payload) == size
        check(frame, f"the reply to a {size}-octet request", allow_zero=no_check)

def test_rfc1071_helper_catches_a_flipped_bit(session_frames):
    """The checker itself: one flipped payload bit must fail the UDP check."""
    frame = bytearray(next(f for f, u in stampnet.udp_frames(session_frames)))
    stored, correct = stampnet.udp_checksum(bytes(frame))
    assert stored == correct
    frame[-1] ^= 0x01
    stored, correct = stampnet.udp_checksum(bytes(frame))
    assert stored != correct, "the RFC 1071 check did not notice a changed payload bit"
    assert scapy_checksums_ok(bytes(frame))[1] is False


def test_request_with_a_wrong_udp_checksum_is_not_reflected(lab, session_frames):
    """RFC 1122 4.1.3.4: a UDP datagram with a non-zero, invalid checksum MUST be silently
    discarded. The reflector is the UDP endpoint here: reflecting a corrupted request
    (its checksum fixed incrementally, so still wrong) answers with corrupted data."""
    topo = lab.topo
    s, r = topo.sender, topo.reflector

    def request(seq, chksum=None):
        return bytes(Ether(src=s.mac, dst=r.mac) / IP(src=s.addr, dst=r.addr)
                     / UDP(sport=40010, dport=862, chksum=chksum)
                     / (struct.pack("!I", seq) + bytes(40)))

    good = request(0xC5C5)
    wrong = stampnet.udp_checksum(request(0xBAD5))[1] ^ 0x0F0F
    tx = stampnet.frame_socket(s)
    try:
        with lab.capture(s, "badsum") as frames:
            tx.send(request(0xBAD5, chksum=wrong))
            tx.send(good)
    finally:
        tx.close()
    replies = [struct.unpack_from("!I", u.payload, 24)[0] for f, u in stampnet.udp_frames(frames)
               if u.src == r.addr]
    assert replies == [0xC5C5], (
        f"replies {[hex(x) for x in replies]} to a request with a wrong UDP checksum (0xbad5) and "
        "a valid one (0xc5c5): a corrupted request must not be reflected (RFC 1122 4.1.3.4)")


def test_request_with_a_wrong_ip_header_checksum_is_not_reflected(lab, session_frames):
    """ip_rcv() drops a frame whose IPv4 header checksum is wrong; TC ingress runs before
    it, so the reflector must not answer one (it used to, patching the header checksum
    for TTL 255 and so sending the corruption back with a valid-looking header)."""
    topo = lab.topo
    s, r = topo.sender, topo.reflector

    def request(seq, ip_chksum=None):
        return bytes(Ether(src=s.mac, dst=r.mac) / IP(src=s.addr, dst=r.addr, chksum=ip_chksum)
                     / UDP(sport=40011, dport=862) / (struct.pack("!I", seq) + bytes(40)))

    bad = request(0xBAD4)
    bad = request(0xBAD4, ip_chksum=int.from_bytes(bad[24:26], "big") ^ 0x0F0F)
    tx = stampnet.frame_socket(s)
    try:
        with lab.capture(s, "badipsum") as frames:
            tx.send(bad)
            tx.send(request(0xC4C4))
    finally:
        tx.close()
    replies = [struct.unpack_from("!I", u.payload, 24)[0] for f, u in stampnet.udp_frames(frames)
               if u.src == r.addr]
    assert replies == [0xC4C4], (
        f"replies {[hex(x) for x in replies]} to a request with a wrong IPv4 header checksum "
        "(0xbad4) and a valid one (0xc4c4): the corrupt one must not be reflected")
