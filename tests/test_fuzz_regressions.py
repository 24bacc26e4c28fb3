"""Frames the fuzzer (services/lab/fuzz.py, tests/test_fuzz.py) found, made by hand, one per defect.

Each is run through the program the fuzzer caught and judged by the same oracle.
Those whose defect is still in bpf/ (tests/test_fuzz.py KNOWN_DEFECTS, named
there) are strict xfails that turn into failures (XPASS) once the C is fixed;
then drop that entry. The IPv4 header checksum frames pass: every ingress
program verifies that checksum now (issue 9 defect 7).
"""

import struct

import pytest

from stamp_bpf.lab import fuzz

from test_fuzz import KNOWN_DEFECTS


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


CASES = {   # name: (frame, the program it is fed to, the KNOWN_DEFECTS entry or None: fixed)
    "request-with-a-bad-ip-checksum": (bad_ip_checksum(request()), "reflector_ingress", None),
    "reply-with-a-bad-ip-checksum": (bad_ip_checksum(reply()), "sender_ingress", None),
    "request-with-a-partial-udp-checksum": (partial_udp_checksum(request()), "reflector_ingress",
                                            None),
    "reply-with-a-partial-udp-checksum": (partial_udp_checksum(reply()), "sender_ingress",
                                          None),
    "request-from-0.0.0.0": (from_zero(request()), "reflector_ingress",
                             None),
    "twamp-light-request-of-20-octets": (request(20), "reflector_ingress",
                                         None),
    "reply-to-another-address": (reply(dst=bytes([198, 18, 0, 77])), "sender_ingress",
                                 None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_frame_the_fuzzer_found(fz, name):
    frame, program, known = CASES[name]
    frame = bytes(frame)
    before = dict(fz.by_class)
    (fz.reply if program == "sender_ingress" else fz.request)(name, frame)
    broke = {k: n - before.get(k, 0) for k, n in fz.by_class.items() if n != before.get(k, 0)}
    key = (KNOWN_DEFECTS[known].program, KNOWN_DEFECTS[known].cls) if known else None
    others = {k: n for k, n in broke.items() if k != key}
    assert not others, f"{name} breaks {others}; the frame: {frame.hex()}"
    if known:
        # A strict xfail by hand: only the named defect may fail it.
        if broke.get(key):
            pytest.xfail(f"{known}: {KNOWN_DEFECTS[known].what}")
        pytest.fail(f"{name} no longer breaks {key}: the C is fixed, drop {known!r} from "
                    "tests/test_fuzz.py KNOWN_DEFECTS")


def test_the_kernels_rfc8972_answer_passes_the_oracle(fz):
    """A request with an SSID and a TLV of each kind (tests/test_fuzz_oracle.py's, whose
    answer is written out there by hand): the kernel rewrites flags and values past
    octet 44 and echoes the SSID, and the oracle finds nothing wrong in that."""
    from test_fuzz_oracle import REQUEST_TLVS, TOS, TTL, request_payload
    frame = bytes(fuzz.build(fuzz.S_IP, fuzz.R_IP, 50000, fuzz.PORT,
                             request_payload(b"".join(REQUEST_TLVS)), ttl=TTL, tos=TOS))
    before, reflected = dict(fz.by_class), fz.counts["valid_reflected"]
    fz.request("rfc8972", frame)
    assert fz.counts["valid_reflected"] == reflected + 1, "the request was not reflected"
    assert fz.by_class == before, f"the oracle flags the kernel's answer: {fz.findings[-3:]}"
