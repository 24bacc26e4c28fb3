"""Frames the fuzzer (services/lab/fuzz.py, tests/test_fuzz.py) found, made by hand, one per defect.

Each is run through the program the fuzzer caught and judged by the same oracle.
The defects are still in bpf/ (tests/test_fuzz.py KNOWN): each test is a strict
xfail that turns into a failure (XPASS) once the C is fixed; then drop the mark.
"""

import struct

import pytest

from stamp_bpf.lab import fuzz

from test_fuzz import KNOWN


@pytest.fixture(scope="module")
def fz(tmp_path_factory):
    from conftest import require_root
    require_root()
    f = fuzz.Fuzzer(str(tmp_path_factory.mktemp("regressions")))
    yield f
    f.close()


def request(size=fuzz.BASE, **kw):
    return fuzz.build(fuzz.S_IP, fuzz.R_IP, 50000, fuzz.PORT,
                      struct.pack("!III H", fuzz.SEQ_FLOOR, 0xE0000000, 1, 1).ljust(size, b"\0")[:size],
                      **kw)


def reply(dst=fuzz.S_IP):
    payload = struct.pack("!IIIHH II I II HH B3x", fuzz.SEQ_FLOOR, 0xE0000000, 5, 1, 0,
                          0xE0000000, 7, fuzz.SEQ_FLOOR, 0xE0000000, 3, 1, 0, 64)
    return fuzz.build(fuzz.R_IP, dst, fuzz.PORT, fuzz.PORT, payload)


def bad_ip_checksum(f):
    f[24] ^= 0x01
    return f


def partial_udp_checksum(f):
    """The UDP checksum field set to the folded pseudo-header sum."""
    ulen = struct.unpack_from("!H", f, 38)[0]
    s = sum(struct.unpack("!6H", f[26:34] + struct.pack("!HH", 17, ulen)))
    s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into("!H", f, 40, (s & 0xFFFF) + (s >> 16))
    return f


def from_zero(f):
    f[26:30] = b"\0\0\0\0"
    return fuzz.fix_checksums(f)


CASES = {   # name: (frame, (program, class) it breaks)
    "request-with-a-bad-ip-checksum": (bad_ip_checksum(request()), ("reflector_ingress", "ip_checksum")),
    "request-with-a-partial-udp-checksum": (partial_udp_checksum(request()),
                                            ("reflector_ingress", "udp_checksum")),
    "request-from-0.0.0.0": (from_zero(request()), ("reflector_ingress", "source")),
    "twamp-light-request-of-20-octets": (request(20), ("reflector_egress", "grown")),
    "reply-with-a-bad-ip-checksum": (bad_ip_checksum(reply()), ("sender_ingress", "ip_checksum")),
    "reply-to-another-address": (reply(dst=bytes([198, 18, 0, 77])), ("sender_ingress", "not_to_us")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_frame_the_fuzzer_found(fz, name, tmp_path):
    frame, key = CASES[name]
    frame = bytes(frame)
    before = dict(fz.by_class)
    (fz.reply if key[0] == "sender_ingress" else fz.request)(name, frame)
    broke = {k: n - before.get(k, 0) for k, n in fz.by_class.items() if n != before.get(k, 0)}
    if key in KNOWN:
        pytest.xfail(KNOWN[key]) if broke.get(key) else None
    assert not broke, f"{name} breaks {broke}; the frame: {frame.hex()}"
