"""The record stream: format 3 round trips (IPv4 and IPv6), malformed input, the documented layout, the ZeroMQ pipe."""

import os
import re
import struct
import time

import pytest

from stamp_bpf.common import recordpipe, records

# The fast layer: no root, no namespaces, no BPF.
pytestmark = pytest.mark.unit

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "records.md")

SAMPLES = [
    records.SenderPacket("10.0.0.2", 862, "10.0.0.1", 40000, records.OUTCOME_RECEIVED, True,
                         records.TS_BPF, 254, 7, 7, 1_700_000_000_000_000_001,
                         1_700_000_000_003_000_002, 1_700_000_000_003_010_003,
                         1_700_000_000_010_000_004, 0x8001, 0x0001,
                         2**64 - 1, 6, 1, 0, 0, 1),
    records.SenderPacket("255.255.255.255", 65535, "0.0.0.0", 0, records.OUTCOME_LOST, False,
                         records.TS_USER, 0, 2**32 - 1, 0, -(2**63), 0, 0, 2**63 - 1,
                         0, 0xFFFF, 0, 0, 0, 0, 0, 0),
    records.ReflectorPacket("10.0.0.1", 862, "10.0.0.2", 862, records.TS_BPF, 64, 3,
                            -5, 1_700_000_000_003_000_002, 0, 4),
    records.SessionStats("10.0.0.2", 862, "10.0.0.1", 862, 10, 8, 1, 1, 2, 3, True),
    records.ServiceStats(records.ROLE_REFLECTOR, records.TS_BPF, False, -1, 5, 6, 7, 123456),
    records.SupervisorStats("reflector", True, 3, 99),
    records.SupervisorStats("éxporter", False, 0, 0),
    records.SenderPacket("2001:db8::2", 862, "2001:db8::1", 862, records.OUTCOME_LATE, False,
                         records.TS_BPF, 64, 9, 9, 1, 2, 3, 4, 0, 0, 1, 1, 0, 1, 0, 0),
    records.ReflectorPacket("fe80::1", 862, "fe80::2", 862, records.TS_BPF, 255, 3,
                            1, 2, 3, 4),
    records.SessionStats("1.2.3.5", 862, "::", 862, 1, 1, 0, 0, 0, 0, False),
]


@pytest.mark.parametrize("rec", SAMPLES, ids=lambda r: type(r).__name__)
def test_round_trip_keeps_every_field(rec):
    out = records.decode(records.encode([rec, rec]))
    assert out == [rec, rec], f"decode(encode(x)) gave {out} instead of {[rec, rec]}."
    assert [type(v) for v in out[0]] == [type(v) for v in rec], \
        "Decoded fields must have the types of the NamedTuple (str, int, bool)."


def test_decode_raw_gives_wire_form_tuples():
    rec = SAMPLES[0]
    kind, raw = records.decode_raw(records.encode([rec]))
    (t,) = list(raw)
    assert kind is records.SenderPacket and len(t) == len(rec)
    assert t[0] == bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 2]) and t[5] == 1 \
        and t[6:] == rec[6:], \
        f"decode_raw must keep the field order with addresses as 16 bytes (IPv4-mapped) and " \
        f"bools as ints: {t}."
    with pytest.raises(records.RecordError):
        records.decode_raw(b"XX" + bytes(6))


def test_header_and_sizes_are_as_documented():
    msg = records.encode([SAMPLES[0]])
    assert msg[:8] == b"SB\x03\x01\x01\x00\x00\x00", f"The header of one SenderPacket is {msg[:8]!r}."
    assert len(msg) == 8 + 132, "A SenderPacket must take 132 bytes after the 8-byte header."
    # Little-endian: T1 sits at offset 48 of the record.
    assert struct.unpack_from("<q", msg, 8 + 48)[0] == SAMPLES[0].t1_ns, \
        "T1 must be a little-endian i64 at offset 48 of a SenderPacket."
    v6 = records.encode([SAMPLES[7]])
    assert v6[8:24] == bytes.fromhex("20010db8000000000000000000000002"), \
        "An IPv6 address must be its 16 octets in network order."


def _doc_tables():
    """{kind name: [(offset, size, field)]} read from docs/records.md."""
    tables, current = {}, None
    for line in open(DOC):
        m = re.match(r"## Kind \d: (\w+) \((\d+) bytes\)", line)
        if m:
            current = tables.setdefault(m.group(1), {"size": int(m.group(2)), "rows": []})
            continue
        m = re.match(r"\|\s*(\d+)\s*\|\s*(\d+)\s*\|[^|]*\|\s*(\w+)\s*\|", line)
        if m and current is not None:
            current["rows"].append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return tables


def test_docs_match_the_struct_layout():
    tables = _doc_tables()
    for kind in records.KINDS.values():
        doc = tables.get(kind.cls.__name__)
        assert doc, f"docs/records.md has no table for {kind.cls.__name__}."
        assert doc["size"] == kind.size, \
            f"docs/records.md says {kind.cls.__name__} is {doc['size']} bytes, the code packs {kind.size}."
        offset, layout = 0, []
        for code in re.findall(r"\d*[a-zA-Z?]", kind.struct.format[1:]):
            size = struct.calcsize("<" + code)
            layout.append((offset, size))
            offset += size
        fields = list(kind.cls._fields)
        assert [(o, s) for o, s, _ in doc["rows"]] == layout, \
            f"The offsets and sizes documented for {kind.cls.__name__} differ from the struct."
        assert [f for _, _, f in doc["rows"]] == fields, \
            f"The fields documented for {kind.cls.__name__} differ from the NamedTuple's."


@pytest.mark.parametrize("buf, reason", [
    (b"", "bad_length"),
    (b"SB\x02", "bad_length"),
    (b"XX\x03\x01\x01\x00\x00\x00" + bytes(132), "bad_magic"),
    (b"SB\x01\x01\x01\x00\x00\x00" + bytes(108), "unknown_version"),
    (b"SB\x02\x01\x01\x00\x00\x00" + bytes(108), "unknown_version"),
    (b"SB\x04\x01\x01\x00\x00\x00" + bytes(132), "unknown_version"),
    (b"SB\x03\x09\x01\x00\x00\x00" + bytes(132), "unknown_kind"),
    (b"SB\x03\x01\x02\x00\x00\x00" + bytes(132), "bad_length"),
    (b"SB\x03\x01\x01\x00\x00\x00" + bytes(133), "bad_length"),
    (b"SB\x03\x01\x00\x00\x00\x00", "empty"),
])
def test_malformed_messages_raise_record_error_with_reason(buf, reason):
    with pytest.raises(records.RecordError) as e:
        records.decode(buf)
    assert e.value.reason == reason, f"{buf[:12]!r}... must be rejected as {reason}, not {e.value.reason}."


def test_a_format_2_message_is_refused_with_a_reason_a_user_can_act_on():
    # A format 2 SenderPacket: 4-octet addresses, 108 bytes (an older sender).
    old = b"SB\x02\x01\x01\x00\x00\x00" + bytes(108)
    with pytest.raises(records.RecordError) as e:
        records.decode(old)
    text = str(e.value)
    assert e.value.reason == "unknown_version" and "format 2" in text \
        and "IPv4" in text and "same stamp-bpf version" in text, \
        f"An old-format message must say which format it is and what to do: {text!r}."


def test_ipv4_mapped_and_plain_ipv6_addresses_decode_to_their_usual_spelling():
    rec = records.SessionStats("::ffff:1.2.3.5", 1, "2001:DB8:0::1", 2, 0, 0, 0, 0, 0, 0, False)
    (out,) = records.decode(records.encode([rec]))
    assert (out.reflector, out.sender) == ("1.2.3.5", "2001:db8::1"), \
        f"An IPv4-mapped address reads back as IPv4 and IPv6 in RFC 5952 form, got {out}."


def test_random_garbage_never_escapes_as_another_exception():
    rnd = __import__("random").Random(1)
    for _ in range(2000):
        buf = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 140)))
        if rnd.random() < 0.5:
            buf = b"SB\x03" + bytes([rnd.randrange(1, 6)]) + buf[4:]
        try:
            records.decode(buf)
        except records.RecordError:
            pass


@pytest.mark.parametrize("bad", [
    [],
    [SAMPLES[0], SAMPLES[2]],
    [SAMPLES[0]._replace(reflector="10.0.0")],
    [SAMPLES[0]._replace(reflector="2001:db8::g")],
    [SAMPLES[0]._replace(seq=2**32)],
    [SAMPLES[0]._replace(t1_ns=2**63)],
    [("not", "a", "record")],
])
def test_encode_rejects_bad_records_with_value_error(bad):
    with pytest.raises(ValueError):
        records.encode(bad)


def _drain(puller, want, timeout=5.0):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        msg = puller.recv(100)
        if msg is not None:
            got.extend(records.decode(msg))
    return got


def test_pusher_never_blocks_and_counts_drops_without_exporter(tmp_path):
    endpoint = f"ipc://{tmp_path}/run/records.sock"
    with recordpipe.RecordPusher(endpoint, hwm=5) as pusher:
        t0 = time.monotonic()
        results = [pusher.push([SAMPLES[5]] * 3) for _ in range(20)]
        assert time.monotonic() - t0 < 0.5, "Pushing with no exporter must not block."
        assert results.count(True) == 5 and pusher.sent == 15, \
            f"With hwm=5 exactly 5 messages should be queued, got {results.count(True)}."
        assert pusher.dropped == 45, f"15 refused messages of 3 records are 45 drops, not {pusher.dropped}."
        with recordpipe.RecordPuller(endpoint) as puller:
            assert os.path.exists(f"{tmp_path}/run/records.sock"), \
                "The puller must create the ipc folder and socket."
            got = _drain(puller, 15)
            assert len(got) == 15, f"The 15 queued records must arrive once the exporter binds, got {len(got)}."


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_stream_resumes_after_the_puller_restarts(tmp_path, transport):
    if transport == "ipc":
        endpoint = f"ipc://{tmp_path}/records.sock"
    else:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with recordpipe.RecordPusher(endpoint) as pusher:
        puller = recordpipe.RecordPuller(endpoint)
        try:
            pusher.push([SAMPLES[3]])
            assert _drain(puller, 1) == [SAMPLES[3]], "The first record must arrive."
        finally:
            puller.close()
        pusher.push([SAMPLES[4]])      # queued while nobody listens
        with recordpipe.RecordPuller(endpoint) as puller:
            pusher.push([SAMPLES[5]])
            got = _drain(puller, 2)
        assert got == [SAMPLES[4], SAMPLES[5]], \
            f"After the exporter's restart the pusher must reconnect by itself; got {got}."


def test_bad_endpoint_is_one_clear_error():
    with pytest.raises(ValueError, match="cannot connect"):
        recordpipe.RecordPusher("nonsense://x")
