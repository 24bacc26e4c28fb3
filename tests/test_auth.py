"""Authenticated mode (RFC 8762 sections 4.2.2, 4.3.2, 4.4) between real services.

The reflector and the sender share a key file; the HMAC runs in user space
with the kernel's receive timestamps (docs/auth.md). Packets are 112 octets
each way; a wrong key, a corrupted HMAC and an unauthenticated packet get no
reply and are counted; captured packets' HMACs are recomputed here with
Python's own hmac module, independently of services/common/auth.py.
"""

import hashlib
import hmac
import os
import time

import pytest

from stamp_bpf.common import wire

from stampnet import Lab, recv_all, udp_frames, udp_socket

KEY = bytes(range(32))


def independent_hmac(key, payload):
    return hmac.new(key, payload[:96], hashlib.sha256).digest()[:16]


def key_file(tmp, name, key, mode=0o600):
    path = tmp / name
    path.write_bytes(key)
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("auth")
    lab = Lab(work, shape="emulated", emulator_args=["--fwd-delay", "2ms", "--back-delay", "5ms"])
    lab.key = key_file(work, "key", KEY)
    lab.refl = lab.reflector("--auth-key-file", lab.key)
    yield lab
    lab.refl.stop()
    lab.close()


def test_sender_and_reflector_with_the_same_key_measure_and_sign_each_packet(lab):
    with lab.capture(lab.topo.reflector, "auth") as frames:
        snd = lab.sender("-c", 20, "-i", 0.02, "-w", 0.5, "--auth-key-file", lab.key)
        assert snd.wait_exit() == 0, snd.text()[-3000:]
    (s,) = snd.summary()["sessions"]
    assert (s["sent"], s["received"], s["lost"]) == (20, 20, 0), s
    assert 1_900_000 <= s["near_end"]["min_ns"] < 3_000_000, s["near_end"]
    assert 4_900_000 <= s["far_end"]["min_ns"] < 6_000_000, s["far_end"]
    seen = udp_frames(frames)
    requests = [u for _f, u in seen if u.dst == lab.topo.reflector.addr]
    replies = [u for _f, u in seen if u.src == lab.topo.reflector.addr]
    assert len(requests) == 20 and len(replies) == 20, (len(requests), len(replies))
    for u in requests + replies:
        assert len(u.payload) == wire.AUTH_LEN, f"an authenticated packet has 112 octets, not {len(u.payload)}"
        assert u.payload[96:112] == independent_hmac(KEY, u.payload), \
            "Python's hmac module computes the captured packet's HMAC differently."
    for u in replies:
        r = wire.parse_reflector_auth_packet(u.payload)
        assert r.sender_ttl > 0 and not wire.ts_is_zero(r.rx_ts) and not wire.ts_is_zero(r.ts)
    assert not any(any(u.payload[4:16]) or any(u.payload[28:96]) for u in requests), \
        "the sender's MBZ octets are zero (RFC 8762 Figure 4, RFC 8972 Figure 3)"
    # RFC 8972 section 3: the session's SSID at octets 26-27 each way, and checked.
    ssids = {u.payload[26:28] for u in requests} | {u.payload[26:28] for u in replies}
    assert ssids == {s["ssid"].to_bytes(2, "big")} and s["ssid"] != 0, \
        f"requests and replies carry the session's SSID {s['ssid']}: {ssids}"
    assert s["ssid_echoed"] is True, s


def signed(seq, key=KEY):
    pkt = bytearray(wire.build_sender_auth_packet(seq, (0xE000_0000, 1), 0x0001))
    pkt[96:112] = independent_hmac(key, pkt)
    return pkt


BAD = {
    "wrong_key": lambda: signed(1, key=b"another key of thirty-two octets"),
    "corrupted_hmac": lambda: signed(2)[:100] + bytes([signed(2)[100] ^ 1]) + signed(2)[101:],
    "corrupted_field": lambda: bytearray(signed(3)[:20]) + b"\x01" + signed(3)[21:],
    "unauthenticated": lambda: bytearray(wire.build_sender_packet(4, (0xE000_0000, 1), 1, 112)),
    "unauthenticated_44": lambda: bytearray(wire.build_sender_packet(5, (0xE000_0000, 1), 1)),
    "short": lambda: signed(6)[:96],
}


def test_the_reflector_drops_and_counts_what_is_not_signed_with_its_key(lab):
    refl = lab.reflector("--auth-key-file", lab.key, "-p", 863)
    try:
        time.sleep(0.1)
        for case, make in BAD.items():
            sock = udp_socket(lab.topo.sender, port=40002)
            try:
                sock.sendto(bytes(make()), (lab.topo.reflector.addr, 863))
                assert recv_all(sock, quiet=0.3) == [], f"{case}: the authenticated reflector answered."
                sock.sendto(bytes(signed(100)), (lab.topo.reflector.addr, 863))
                (reply, _addr), = recv_all(sock, quiet=0.3)
            finally:
                sock.close()
            assert len(reply) == 112 and reply[96:] == independent_hmac(KEY, reply), \
                f"after {case}, a well-signed packet gets a well-signed 112-octet reply"
        time.sleep(5.5)     # one stats interval: the auth_failed warning
    finally:
        refl.stop()
    counters = refl.summary()["counters"]
    assert counters["auth_failed"] == len(BAD), counters
    warned = refl.events("auth_failed")
    assert warned and warned[-1]["count"] == len(BAD), \
        f"the reflector logs its auth failures while it runs (every 5 s at most): {warned}"
    assert counters["reflected"] == len(BAD), counters


def test_an_authenticated_reflector_attaches_no_tc_program(lab):
    out = lab.topo.run(lab.topo.reflector, ["tc", "filter", "show", "dev",
                                            lab.topo.reflector.ifname, "ingress"],
                       capture_output=True, text=True).stdout
    assert "bpf" not in out, f"a TC program would answer 112-octet packets unauthenticated:\n{out}"


def test_the_sender_counts_a_reply_with_a_bad_hmac_and_not_as_a_reply(lab):
    """A fake reflector on port 864 signs every other reply with the wrong key."""
    fake = udp_socket(lab.topo.reflector, port=864, timeout=0.2)
    snd = lab.sender("-d", 864, "-s", 5864, "-c", 10, "-i", 0.02, "-w", 0.3,
                     "--auth-key-file", lab.key)
    answered = 0
    try:
        while snd.proc.poll() is None and answered < 10:
            try:
                data, addr = fake.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            seq, t1, see = wire.parse_sender_auth_packet(data)
            reply = bytearray(wire.build_reflector_auth_packet(
                seq, (0xE000_0000, 9), 1, (0xE000_0000, 5), seq, t1, see, 64))
            reply[96:112] = independent_hmac(KEY if seq % 2 == 0 else b"x" * 32, reply)
            fake.sendto(bytes(reply), addr)
            answered += 1
    finally:
        fake.close()
    assert snd.wait_exit() == 0, snd.text()[-3000:]
    (s,) = snd.summary()["sessions"]
    assert (s["sent"], s["received"], s["lost"]) == (10, 5, 5), s
    assert snd.summary()["counters"]["auth_failed"] == 5, snd.summary()["counters"]


def test_the_allow_list_applies_before_the_hmac_in_authenticated_mode(lab):
    """docs/security.md's allow-list holds in authenticated mode too, and is checked
    before the HMAC (it reads no packet field): a sender outside it costs no HMAC."""
    refl = lab.reflector("--auth-key-file", lab.key, "-p", 865, "--allow", "192.0.2.0/24")
    try:
        sock = udp_socket(lab.topo.sender, port=40003)
        try:
            for seq in (1, 2):
                sock.sendto(bytes(signed(seq)), (lab.topo.reflector.addr, 865))
            sock.sendto(b"\0" * 44, (lab.topo.reflector.addr, 865))     # unsigned as well
            assert recv_all(sock, quiet=0.3) == [], "a sender outside --allow was answered"
        finally:
            sock.close()
    finally:
        refl.stop()
    counters = refl.summary()["counters"]
    assert (counters["not_allowed"], counters["auth_failed"], counters["reflected"]) == (3, 0, 0), \
        counters
