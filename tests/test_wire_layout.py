"""bpf/stamp.h and services/common/{wire,events}.py describe the same bytes.

Two independent checks:
- Layout: bcc compiles stamp.h and describes each struct as a ctypes type;
  every field's offset and size must equal the Python tables, and the Python
  struct formats must put each field where the tables say.
- Behaviour: the real programs (loaded by the services' own datapath code)
  run on crafted frames through BPF_PROG_TEST_RUN (raw bpf(2) via ctypes):
  reflector_ingress reflects a request whose T1 Python encoded,
  reflector_egress writes T3 and emits a record, sender_ingress emits the
  reply's record with T4.
  Python's parsers must read back exactly what was put in, and the
  timestamps the C writes must decode (in Python) to the CLOCK_TAI reading
  taken around the run, less the TAI-UTC offset we configured. The offset is
  set to 37 s, not the kernel's, so a conversion that ignores or adds it fails.
"""

import ctypes
import os
import struct
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from stamp_bpf.common import bpfprog, clock, events, tc, wire
from stamp_bpf.lab import packets, progtest
from stamp_bpf.lab.progtest import TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT
from stamp_bpf.reflector import datapath as reflector_dp
from stamp_bpf.sender import datapath as sender_dp

import stampnet

pytestmark = pytest.mark.timeout(180)

SENDER_ADDR, REFLECTOR_ADDR = "198.18.0.1", "198.18.0.2"
TAI_OFFSET_S = 37


def prog_test_run(fn, data):
    return progtest.run_once(fn.fd, data)


def frame(src, dst, payload, sport=862, dport=862, ttl=64):
    # BPF_PROG_TEST_RUN runs the skb on lo, whose address is all zeros: a frame to
    # that address is PACKET_HOST, which the ingress programs require.
    return bytes(Ether(src="02:00:00:00:00:01", dst="00:00:00:00:00:00")
                 / IP(src=src, dst=dst, ttl=ttl, flags="DF") / UDP(sport=sport, dport=dport)
                 / payload)


def tai_ns():
    return time.clock_gettime_ns(time.CLOCK_TAI)


# -- layout ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def layouts():
    """{struct name: ctypes type} as bcc compiled bpf/stamp.h."""
    from bcc import BPF
    structs = ["stamp_sender_pkt", "stamp_reflector_pkt", "stamp_sender_event",
               "stamp_reflector_event", "stamp_tlv", "stamp_tlv_location",
               "stamp_tlv_timestamp_info", "stamp_tlv_cos", "stamp_tlv_direct"]
    text = '#include "stamp.h"\n#include "tlv.h"\n' + "".join(
        f"BPF_ARRAY(t_{name}, struct {name}, 1);\n" for name in structs)
    b = BPF(text=text, cflags=[f"-I{bpfprog.bpf_dir()}"])
    try:
        yield {name: b[f"t_{name}"].Leaf for name in structs}
    finally:
        b.cleanup()


def c_fields(leaf):
    return {name: (getattr(leaf, name).offset, getattr(leaf, name).size)
            for name, *_ in leaf._fields_}


@pytest.mark.parametrize("name, fields, fmt", [
    ("stamp_sender_pkt", wire.SENDER_FIELDS, wire.SENDER),
    ("stamp_reflector_pkt", wire.REFLECTOR_FIELDS, wire.REFLECTOR),
    ("stamp_sender_event", events.SENDER_EVENT_FIELDS, events.SENDER_EVENT),
    ("stamp_reflector_event", events.REFLECTOR_EVENT_FIELDS, events.REFLECTOR_EVENT),
    ("stamp_tlv", wire.TLV_FIELDS, wire.TLV),
    ("stamp_tlv_location", wire.LOCATION_FIELDS, wire.LOCATION),
    ("stamp_tlv_timestamp_info", wire.TIMESTAMP_INFO_FIELDS, wire.TIMESTAMP_INFO),
    ("stamp_tlv_cos", wire.COS_FIELDS, wire.COS),
    ("stamp_tlv_direct", wire.DIRECT_FIELDS, wire.DIRECT),
])
def test_c_and_python_agree_on_every_field(layouts, name, fields, fmt):
    leaf = layouts[name]
    assert c_fields(leaf) == fields, (
        f"struct {name} in bpf/stamp.h and its Python table disagree on field offsets/sizes: "
        f"C {c_fields(leaf)} vs Python {fields}")
    assert ctypes.sizeof(leaf) == fmt.size, \
        f"sizeof(struct {name}) is {ctypes.sizeof(leaf)} in C but {fmt.size} in Python's format"
    assert max(off + size for off, size in fields.values()) == fmt.size, \
        f"the fields of {name} do not end where the struct does"


@pytest.mark.unit
def test_tlv_constants_are_the_same_in_c_and_python():
    """Every #define of bpf/tlv.h's TLV, flag, sub-TLV, sync source, method and bound
    names has a wire.py twin with the same value."""
    import re
    with open(os.path.join(bpfprog.bpf_dir(), "tlv.h")) as f:
        text = f.read()
    found = dict(re.findall(r"^#define\s+((?:TLV|LOC|SYNC_SRC|TS_METHOD|COS)_\w+)\s+(0x[0-9a-fA-F]+|\d+)",
                            text, re.M))
    assert len(found) >= 20, f"found only {sorted(found)} in bpf/tlv.h"
    for name, value in found.items():
        assert hasattr(wire, name), f"bpf/tlv.h defines {name}, services/common/wire.py does not"
        assert getattr(wire, name) == int(value, 0), \
            f"{name} is {value} in bpf/tlv.h but {getattr(wire, name)} in wire.py"


def test_python_formats_put_fields_where_the_tables_say():
    """A packet built by wire.py carries each value at its table's offset (big endian)."""
    values = dict(seq=0x01020304, ts=(0x11121314, 0x15161718), error_estimate=0x2122, ssid=0x2324,
                  rx_ts=(0x31323334, 0x35363738), sender_seq=0x41424344,
                  sender_ts=(0x51525354, 0x55565758), sender_error_estimate=0x6162,
                  sender_ttl=0x71)
    buf = wire.build_reflector_packet(**values)
    for field, (off, size) in wire.REFLECTOR_FIELDS.items():
        got = buf[off:off + size]
        if field.startswith("mbz"):
            assert got == bytes(size), f"{field} is not zero in a built reflector packet"
            continue
        v = values[field]
        want = (struct.pack("!II", *v) if isinstance(v, tuple) else v.to_bytes(size, "big"))
        assert got == want, f"{field} is at the wrong place in wire.REFLECTOR"
    sbuf = wire.build_sender_packet(0x01020304, (0x11121314, 0x15161718), 0x2122, ssid=0x2324)
    for field, (off, size) in wire.SENDER_FIELDS.items():
        if field == "mbz":
            assert sbuf[off:off + size] == bytes(size)
        if field == "ssid":
            assert sbuf[off:off + size] == b"\x23\x24", "the SSID is at the wrong place"
    assert wire.parse_sender_packet(sbuf) == (0x01020304, (0x11121314, 0x15161718), 0x2122)


# -- behaviour: the programs on crafted frames --------------------------------------

@pytest.fixture
def pinned():
    """One CPU for the test: reflector_ingress hands over to egress in a per-CPU slot."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    yield
    os.sched_setaffinity(0, old)


def datapaths(ptp):
    state = clock.ClockState(False, 16.0, TAI_OFFSET_S)
    s_dp, s_fns = sender_dp.load(862, 862, ptp)
    r_dp, r_fns = reflector_dp.load(862, ptp)
    for dp in (s_dp, r_dp):
        dp.configure(state)
    r_dp.set_addresses([REFLECTOR_ADDR])
    s_dp.add_session(REFLECTOR_ADDR, SENDER_ADDR)
    return state, (s_dp, s_fns), (r_dp, r_fns)


def decode_ts(ts, ptp):
    """Unix ns (UTC) of one of our timestamps, decoded by wire.py with our offset."""
    ee = wire.EE_Z if ptp else 0
    return wire.ts_to_ns(ts, ee, TAI_OFFSET_S)


@pytest.mark.parametrize("ptp", [False, True], ids=["ntp", "ptp"])
def test_programs_and_parsers_agree_end_to_end(pinned, ptp):
    state, (s_dp, s_fns), (r_dp, r_fns) = datapaths(ptp)
    try:
        chain(state, ptp, s_dp, s_fns, r_dp, r_fns)
    finally:
        for dp in (s_dp, r_dp):
            dp.bpf.cleanup()


def chain(state, ptp, s_dp, s_fns, r_dp, r_fns):
    """Request -> reflector_ingress -> reflector_egress -> sender_ingress, checked at each step."""
    s_events, r_events = [], []
    s_dp.open_events(s_events.append)
    r_dp.open_events(r_events.append)
    ee = state.error_estimate(ptp)

    # A request as a sender's user space builds it, with T1 encoded by Python.
    t1_ns = time.time_ns() - 5_000_000
    t1 = (wire.ns_to_ptp(t1_ns, TAI_OFFSET_S) if ptp else wire.ns_to_ntp(t1_ns))
    out1 = frame(SENDER_ADDR, REFLECTOR_ADDR, wire.build_sender_packet(7, t1, ee, size=60), ttl=200)
    offset = TAI_OFFSET_S * 1_000_000_000

    # sender_egress stamps only its own socket's packets: this one (the test run's
    # socket) is not, and must pass untouched.
    rc, out = prog_test_run(s_fns[tc.EGRESS], out1)
    assert (rc, out) == (TC_ACT_UNSPEC, out1), "sender_egress changed a packet of another socket"

    # T2: reflector_ingress turns it into the reflector format.
    before = tai_ns()
    rc, out2 = prog_test_run(r_fns[tc.INGRESS], out1)
    assert rc == TC_ACT_REDIRECT, f"reflector_ingress returned {rc}, not TC_ACT_REDIRECT"
    # T3: reflector_egress stamps it and emits the reflector's record.
    rc, out3 = prog_test_run(r_fns[tc.EGRESS], out2)
    after = tai_ns()
    assert rc == TC_ACT_UNSPEC, f"reflector_egress returned {rc}"
    rep = wire.parse_reflector_packet(out3[42:])
    assert (rep.seq, rep.sender_seq, rep.sender_ts, rep.sender_error_estimate, rep.sender_ttl) \
        == (7, 7, t1, ee, 200), f"the reflected packet as Python parses it: {rep}"
    assert rep.error_estimate == ee, "the reflector wrote another Error Estimate than configured"
    t2_ns, t3_ns = decode_ts(rep.rx_ts, ptp), decode_ts(rep.ts, ptp)
    assert before - offset <= t2_ns <= t3_ns <= after - offset, \
        f"T2 {t2_ns} and T3 {t3_ns} are outside [{before - offset}, {after - offset}]"
    assert out3[42 + 44:] == out1[42 + 44:], "octets past the base changed"
    assert stampnet.udp_checksum(out3)[0] == stampnet.udp_checksum(out3)[1]

    r_dp.bpf.ring_buffer_consume()
    assert len(r_events) == 1, f"reflector_egress emitted {len(r_events)} records, not 1"
    ev = events.reflector_event(r_events[0])
    assert ev == events.ReflectorEvent(SENDER_ADDR, REFLECTOR_ADDR, 862, 862, 60, 200, 7, t1,
                                       rep.rx_ts, rep.ts, ee, ee), \
        f"the reflector's record as Python decodes it: {ev}"

    # T4: sender_ingress takes the reply and emits the sender's record.
    before = tai_ns()
    # The reply goes back to the sender's MAC; on lo (the test run's device) that is all zeros.
    rc, _ = prog_test_run(s_fns[tc.INGRESS], bytes(6) + out3[6:])
    after = tai_ns()
    assert rc == TC_ACT_SHOT, f"sender_ingress returned {rc}, not TC_ACT_SHOT for our reply"
    s_dp.bpf.ring_buffer_consume()
    assert len(s_events) == 1, f"sender_ingress emitted {len(s_events)} records, not 1"
    sev = events.sender_event(s_events[0])
    assert (sev.reflector, sev.local, sev.reflector_port, sev.local_port, sev.payload_len,
            sev.reply_ttl) == (REFLECTOR_ADDR, SENDER_ADDR, 862, 862, 60, 255), \
        f"the sender's record as Python decodes it: {sev}"
    assert sev.pkt == out3[42:42 + 44], "the record's packet is not the reply's first 44 octets"
    assert sev.tlvs == out3[42 + 44:], "the record's TLV octets are not the reply's octets 44.."
    t4_ns = decode_ts(sev.t4, ptp)
    assert before - offset <= t4_ns <= after - offset, f"T4 {t4_ns} is outside the run"


@pytest.mark.parametrize("fmt", ["ntp", "ptp"])
def test_sender_t1_on_the_wire_decodes_to_the_capture_time(tmp_path_factory, fmt):
    """T1 written by a running stamp-sender's TC egress, decoded by Python, is the moment
    the frame left: just before the capture tap (which runs after TC egress), on this
    host's clock, converted with the kernel's real TAI-UTC offset. The request itself is
    a 44-octet Session-Sender packet sent with IP TTL 255 (RFC 5357 4.1.2), sequence
    numbers from 0, one non-zero SSID (RFC 8972), MBZ zero, and an Error Estimate with the right Z and S bits."""
    lab = stampnet.Lab(tmp_path_factory.mktemp("t1"))
    try:
        topo = lab.topo
        with lab.capture(topo.sender, "t1") as frames:
            svc = lab.start(topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                            "-c", 5, "-i", "0.02", "-w", "0.05", "--late-window", "0.05",
                            "--timestamp-format", fmt)
            assert svc.wait_exit() == 0, f"stamp-sender failed:\n{svc.text()[-2000:]}"
    finally:
        lab.close()
    reqs = [(ts, u) for ts, f in frames
            if (u := packets.parse_udp4(f)) and u.dport == 862 and u.src == topo.sender.addr]
    assert len(reqs) == 5, f"captured {len(reqs)} test packets, not 5"
    state = clock.read()
    for i, (ts, u) in enumerate(reqs):
        seq, t1, ee = wire.parse_sender_packet(u.payload)
        assert seq == i, f"test packet {i} carries sequence number {seq}"
        assert len(u.payload) == 44 and u.payload[16:] == bytes(28), \
            f"packet {seq} is not a 44-octet sender packet with MBZ zero: {u.payload.hex()}"
        assert u.payload[14:16] == reqs[0][1].payload[14:16] != bytes(2), \
            f"packet {seq} does not carry the session's non-zero SSID (RFC 8972 section 3)"
        assert u.ttl == 255, f"packet {seq} left with IP TTL {u.ttl}, not 255"
        assert bool(ee & wire.EE_Z) == (fmt == "ptp"), f"{fmt} sender wrote Error Estimate {ee:#06x}"
        assert bool(ee & wire.EE_S) == state.synchronized, f"S bit of {ee:#06x} vs adjtimex"
        assert ee & 0xFF, f"packet {seq} has Error Estimate {ee:#06x} with multiplier 0"
        t1_ns = wire.ts_to_ns(t1, ee, state.tai_offset_s)
        assert ts - 5_000_000 <= t1_ns <= ts, (
            f"T1 of packet {seq} decodes to {t1_ns}, but the frame was captured leaving at {ts} "
            f"({(ts - t1_ns) / 1e3:.1f} us later): T1 must be taken at TC egress, just before")
