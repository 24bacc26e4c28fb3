"""Authenticated mode's packet layouts and HMAC, against RFC 8762 (fast layer).

The 112-octet layouts of services/common/wire.py are checked against Figures 4
and 6 of RFC 8762 (transcribed below: each row of a figure is 32 bits, so a
field's offset is where its row starts), and the HMAC of services/common/auth.py
against Python's hmac module and the RFC 4231 test vector for HMAC-SHA-256.
"""

import hashlib
import hmac
import os

import pytest

from stamp_bpf.common import auth, wire
from stamp_bpf.supervisor import commands, config

pytestmark = pytest.mark.unit

# (field, first octet, octets) as RFC 8762 draws them.
FIGURE_4 = [("Sequence Number", 0, 4), ("MBZ", 4, 12), ("Timestamp", 16, 8),
            ("Error Estimate", 24, 2), ("MBZ", 26, 70), ("HMAC", 96, 16)]
FIGURE_6 = [("Sequence Number", 0, 4), ("MBZ", 4, 12), ("Timestamp", 16, 8),
            ("Error Estimate", 24, 2), ("MBZ", 26, 6), ("Receive Timestamp", 32, 8),
            ("MBZ", 40, 8), ("Session-Sender Sequence Number", 48, 4), ("MBZ", 52, 12),
            ("Session-Sender Timestamp", 64, 8), ("Session-Sender Error Estimate", 72, 2),
            ("MBZ", 74, 6), ("Ses-Sender TTL", 80, 1), ("MBZ", 81, 15), ("HMAC", 96, 16)]


@pytest.mark.parametrize("figure,fields,st", [(FIGURE_4, wire.SENDER_AUTH_FIELDS, wire.SENDER_AUTH),
                                              (FIGURE_6, wire.REFLECTOR_AUTH_FIELDS, wire.REFLECTOR_AUTH)],
                         ids=["figure-4-sender", "figure-6-reflector"])
def test_authenticated_layouts_are_the_rfcs_figures(figure, fields, st):
    assert st.size == wire.AUTH_LEN == 112
    assert [(o, n) for _, o, n in figure] == sorted(fields.values()), \
        "wire.py's field table is not the RFC figure"
    end = 0
    for name, off, size in figure:
        assert off == end, f"{name} does not follow the previous field"
        end = off + size
    assert end == 112 and fields["hmac"] == (wire.HMAC_OFFSET, wire.HMAC_LEN)


def test_built_authenticated_packets_put_each_value_where_the_figures_say():
    buf = wire.build_reflector_auth_packet(0x01020304, (0x11121314, 0x15161718), 0x2122,
                                           (0x31323334, 0x35363738), 0x41424344,
                                           (0x51525354, 0x55565758), 0x6162, 0x71)
    want = {"seq": "01020304", "ts": "1112131415161718", "error_estimate": "2122",
            "rx_ts": "3132333435363738", "sender_seq": "41424344",
            "sender_ts": "5152535455565758", "sender_error_estimate": "6162", "sender_ttl": "71"}
    for field, (off, size) in wire.REFLECTOR_AUTH_FIELDS.items():
        got = buf[off:off + size].hex()
        assert got == want.get(field, "00" * size), f"{field} at {off} holds {got}"
    r = wire.parse_reflector_auth_packet(buf)
    base = wire.parse_reflector_packet(wire.reflector_auth_to_base(buf))
    assert r == base, "the 44-octet view of an authenticated reply keeps every field"
    s = wire.build_sender_auth_packet(7, (8, 9), 0x8001)
    assert len(s) == 112 and s[16:26].hex() == "00000008000000098001" and not any(s[26:112])
    assert wire.parse_sender_auth_packet(s) == (7, (8, 9), 0x8001)
    assert wire.is_auth_reflection(buf) and not wire.is_auth_reflection(s)


def test_the_hmac_is_hmac_sha256_of_96_octets_truncated_to_16():
    key = os.urandom(32)
    pkt = bytearray(os.urandom(112))
    h = auth.Hmac(key)
    h.sign(pkt)
    assert pkt[96:112] == hmac.new(key, bytes(pkt[:96]), hashlib.sha256).digest()[:16]
    assert h.verify(pkt)
    for i in (0, 50, 95, 96, 111):
        bad = bytearray(pkt)
        bad[i] ^= 1
        assert not h.verify(bad), f"a flipped bit in octet {i} went unnoticed"
    assert not h.verify(pkt[:111]) and h.verify(pkt + b"tlv"), "octets past 112 are not covered"


def test_rfc4231_test_case_2():
    """The primitive: RFC 4231 section 4.3 (key "Jefe"), truncated to 128 bits as RFC 4868 does."""
    got = auth.Hmac(b"Jefe").digest(b"what do ya want for nothing?")
    assert got.hex() == "5bdcc146bf60754e6a042426089575c7"


@pytest.mark.parametrize("content,mode,words", [
    (b"x" * 32, 0o644, "readable by everyone"),
    (b"short\n", 0o600, "fewer than 16"),
    (b"", 0o600, "fewer than 16"),
])
def test_a_bad_key_file_is_refused_in_one_line(tmp_path, content, mode, words):
    path = tmp_path / "key"
    path.write_bytes(content)
    os.chmod(path, mode)
    with pytest.raises(auth.AuthKeyError) as e:
        auth.load_key(str(path))
    assert words in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_key_is_the_files_content_without_one_trailing_newline(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"0123456789abcdef0123\n")
    os.chmod(path, 0o600)
    assert auth.load_key(str(path)) == b"0123456789abcdef0123"


def test_a_missing_key_file_is_refused(tmp_path):
    with pytest.raises(auth.AuthKeyError, match="cannot read"):
        auth.load_key(str(tmp_path / "nope"))


def test_the_cli_refuses_auth_with_bpf_timestamping(capsys):
    from stamp_bpf.sender import cli
    with pytest.raises(SystemExit):
        cli.parse(["eth0", "10.0.0.2", "--auth-key-file", "/k", "--timestamping", "bpf"])
    assert "--auth-key-file runs in user space" in capsys.readouterr().err
    _, args, _ = cli.parse(["eth0", "10.0.0.2", "--auth-key-file", "/k"])
    assert args.timestamping == "user"
    _, args, _ = cli.parse(["eth0", "10.0.0.2"])
    assert args.timestamping == "bpf"


def test_the_supervisor_checks_the_key_file_before_starting(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"k" * 32)
    os.chmod(path, 0o644)
    cfg = config.defaults()
    cfg["auth.keyFile"] = str(path)
    cfg["sender.reflectorIPs"] = ["192.0.2.1"]
    built = commands.build(cfg, "/bin", "json")
    for name in ("sender", "reflector"):
        i = built[name].index("--auth-key-file")
        assert built[name][i + 1] == str(path)
    cfg["sender.interface"] = cfg["reflector.interface"] = "lo"
    with pytest.raises(config.ConfigError, match=r"^auth.keyFile: .*readable by everyone"):
        commands.check_host(cfg, {"sender": ["/bin/sh"], "reflector": ["/bin/sh"]})
