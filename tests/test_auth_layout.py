"""Authenticated mode's packet layouts and HMAC, against RFC 8762 (fast layer).

The 112-octet layouts of services/common/wire.py are checked against Figures 4
and 6 of RFC 8762 with the SSID that RFC 8972 Figures 3 and 4 put in them
(transcribed below: each row of a figure is 32 bits, so a field's offset is
where its row starts), and the HMAC of services/common/auth.py
against Python's hmac module and the RFC 4231 test vector for HMAC-SHA-256.
"""

import hashlib
import hmac
import os

import pytest

from stamp_bpf.common import auth, wire
from stamp_bpf.supervisor import commands, config

pytestmark = pytest.mark.unit

# (field, first octet, octets) as RFC 8972 Figures 3 and 4 draw them: RFC 8762's
# Figures 4 and 6 with the SSID in the first two octets of their MBZ after the
# Error Estimate.
FIGURE_4 = [("Sequence Number", 0, 4), ("MBZ", 4, 12), ("Timestamp", 16, 8),
            ("Error Estimate", 24, 2), ("SSID", 26, 2), ("MBZ", 28, 68), ("HMAC", 96, 16)]
FIGURE_6 = [("Sequence Number", 0, 4), ("MBZ", 4, 12), ("Timestamp", 16, 8),
            ("Error Estimate", 24, 2), ("SSID", 26, 2), ("MBZ", 28, 4),
            ("Receive Timestamp", 32, 8),
            ("MBZ", 40, 8), ("Session-Sender Sequence Number", 48, 4), ("MBZ", 52, 12),
            ("Session-Sender Timestamp", 64, 8), ("Session-Sender Error Estimate", 72, 2),
            ("MBZ", 74, 6), ("Ses-Sender TTL", 80, 1), ("MBZ", 81, 15), ("HMAC", 96, 16)]


@pytest.mark.parametrize("figure,fields,st", [(FIGURE_4, wire.SENDER_AUTH_FIELDS, wire.SENDER_AUTH),
                                              (FIGURE_6, wire.REFLECTOR_AUTH_FIELDS, wire.REFLECTOR_AUTH)],
                         ids=["sender", "reflector"])
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
                                           (0x51525354, 0x55565758), 0x6162, 0x71, ssid=0x2324)
    want = {"seq": "01020304", "ts": "1112131415161718", "error_estimate": "2122", "ssid": "2324",
            "rx_ts": "3132333435363738", "sender_seq": "41424344",
            "sender_ts": "5152535455565758", "sender_error_estimate": "6162", "sender_ttl": "71"}
    for field, (off, size) in wire.REFLECTOR_AUTH_FIELDS.items():
        got = buf[off:off + size].hex()
        assert got == want.get(field, "00" * size), f"{field} at {off} holds {got}"
    r = wire.parse_reflector_auth_packet(buf)
    base = wire.parse_reflector_packet(wire.reflector_auth_to_base(buf))
    assert r == base and base.ssid == 0x2324, \
        "the 44-octet view of an authenticated reply keeps every field, the SSID too"
    s = wire.build_sender_auth_packet(7, (8, 9), 0x8001, ssid=0x2526)
    assert len(s) == 112 and s[16:28].hex() == "000000080000000980012526" and not any(s[28:112])
    assert wire.parse_sender_auth_packet(s) == (7, (8, 9), 0x8001)
    assert wire.sender_auth_ssid(s) == 0x2526
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


@pytest.mark.parametrize("flags", [["--dscp", "46"], ["--location"], ["--timestamp-info"],
                                   ["--padding", "100"], ["--directional-loss"],
                                   ["--location", "--padding", "8"]])
def test_the_sender_refuses_rfc8972_tlvs_in_authenticated_mode_in_one_line(capsys, flags):
    """TLVs in authenticated mode need the HMAC TLV (RFC 8972 4.8), which is not
    implemented: refused at start, never sent unauthenticated or without it."""
    from stamp_bpf.sender import cli
    with pytest.raises(SystemExit) as e:
        cli.parse(["eth0", "10.0.0.2", "--auth-key-file", "/k", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not supported in authenticated mode" in err and "--auth-key-file" in err, err
    for f in flags:
        if f.startswith("--"):
            assert f in err, f"{f} is not named: {err}"
    _, args, _ = cli.parse(["eth0", "10.0.0.2", *flags])    # fine without the key
    _, args, _ = cli.parse(["eth0", "10.0.0.2", "--auth-key-file", "/k", "--ssid", "7"])
    assert args.ssid == 7, "the SSID is supported in authenticated mode (RFC 8972 Figure 3)"


def test_the_reflector_refuses_stateful_with_auth_in_one_line(capsys):
    from stamp_bpf.reflector import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["eth0", "--stateful", "--auth-key-file", "/k"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--stateful and --auth-key-file do not go together" in err and "drop one" in err, err


def test_the_transmitter_never_builds_an_authenticated_packet_with_tlvs():
    from stamp_bpf.sender.transmit import Transmitter
    with pytest.raises(ValueError, match="HMAC TLV"):
        Transmitter("lo", 0, tlvs=wire.build_tlv(wire.TLV_EXTRA_PADDING, bytes(8)),
                    authenticated=True)


def test_the_reflector_exports_auth_failed_as_a_reason_only_in_authenticated_mode():
    """stamp_reflector_packets_not_reflected_total{reason="auth_failed"} comes from this."""
    from stamp_bpf.common import records
    from stamp_bpf.reflector import service
    plain = dict.fromkeys(records.DROP_REASONS, 0)
    assert [r.reason for r in service._drop_counts(plain)] == list(records.DROP_REASONS)
    got = {r.reason: r.count for r in service._drop_counts({**plain, "auth_failed": 3})}
    assert got == {**plain, "auth_failed": 3}
