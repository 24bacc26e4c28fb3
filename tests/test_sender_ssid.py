"""The sender's SSID on the wire (RFC 8972 section 3): sent non-zero, echoed by our
reflector, a zeroed one accepted and noted once, another session's not counted.

The "other reflectors" are plain UDP sockets in the reflector namespace that
answer in the Session-Reflector format with the SSID zeroed (as an RFC
8762-only reflector does) or changed; the sender takes their replies at TC
ingress like any reflector's.
"""

import struct
import threading

import pytest

from stamp_bpf.common import wire

import stampnet

pytestmark = pytest.mark.timeout(240)
COUNT = 5


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = stampnet.Lab(tmp_path_factory.mktemp("ssid"))
    yield lab
    lab.close()


def run_sender(lab, *args):
    t = lab.topo
    svc = lab.start(t.sender, "stamp-sender", t.sender.ifname, t.reflector.addr, "-c", COUNT,
                    "-i", "0.02", "-w", "0.2", "--late-window", "0.1", *args)
    assert svc.wait_exit() == 0, f"stamp-sender failed:\n{svc.text()[-2000:]}"
    (s,) = svc.summary()["sessions"]
    return svc, s


def test_ssid_is_sent_and_echoed_by_our_reflector(lab):
    refl = lab.reflector()
    try:
        with lab.capture(lab.topo.sender, "ssid") as frames:
            _, s = run_sender(lab, "--ssid", "100")
        _, auto = run_sender(lab)
    finally:
        refl.stop()
    assert s["ssid"] == 100 and s["ssid_echoed"] is True and s["received"] == COUNT, s
    assert 1 <= auto["ssid"] <= 0xFFFF and auto["ssid_echoed"] is True, auto
    seen = {(u.src, struct.unpack_from("!H", u.payload, 14)[0]) for _, u in stampnet.udp_frames(frames)}
    t = lab.topo
    assert seen == {(t.sender.addr, 100), (t.reflector.addr, 100)}, \
        f"(source, SSID) on the wire: {seen}; want 100 both ways"


def fake_reflector(lab, ssid_of):
    """A thread answering test packets on the reflector host with SSID ssid_of(request SSID)."""
    sock = stampnet.udp_socket(lab.topo.reflector, 862, timeout=0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except OSError:
                continue
            seq, ts, ee = wire.parse_sender_packet(data)
            req_ssid = struct.unpack_from("!H", data, 14)[0]
            rx = wire.ns_to_ntp(__import__("time").time_ns())
            sock.sendto(wire.build_reflector_packet(seq, rx, 0x0001, rx, seq, ts, ee, 64,
                                                    ssid=ssid_of(req_ssid)), peer)

    th = threading.Thread(target=serve, daemon=True)
    th.start()

    def close():
        stop.set()
        th.join(2)
        sock.close()
    return close


def test_a_zeroed_ssid_is_accepted_and_noted_once(lab):
    close = fake_reflector(lab, lambda ssid: 0)
    try:
        svc, s = run_sender(lab, "--ssid", "7")
    finally:
        close()
    assert s["received"] == COUNT and s["ssid_echoed"] is False, \
        f"replies with SSID 0 (an RFC 8762 reflector) must count: {s}"
    assert len(svc.events("ssid_not_echoed")) == 1, "the zeroed SSID must be noted once"


def test_a_reply_with_another_ssid_is_not_counted(lab):
    close = fake_reflector(lab, lambda ssid: ssid ^ 0x0F0F)
    try:
        svc, s = run_sender(lab, "--ssid", "7")
    finally:
        close()
    assert s["received"] == 0 and s["lost"] == COUNT and s["ssid_mismatched"] == COUNT, \
        f"replies carrying another SSID must not be counted: {s}"
    assert len(svc.events("ssid_mismatch")) == 1, "the mismatch must be logged once"
