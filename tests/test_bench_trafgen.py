"""The capacity bench's trafgen config: the wire module's test packets, with valid checksums.

bench/trafgen.py writes the frames trafgen sends as literal bytes; these
tests read them back and check them with scapy (an independent decoder): the
payload is what stamp_bpf.common.wire builds for that sequence number, the
ports and addresses are the ones asked, and the IPv4 and UDP checksums
verify. When trafgen is installed (and we are root), trafgen itself renders
the config to a pcap, which must hold the same bytes.
"""

import os
import shutil
import subprocess
import sys

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from stamp_bpf.common import wire

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import trafgen  # noqa: E402

SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
PORT = 862


def _checksums_ok(frame):
    """Both checksums as scapy recomputes them (fields deleted, packet rebuilt) equal the frame's."""
    pkt = Ether(frame)
    fresh = pkt.copy()
    del fresh[IP].chksum
    del fresh[UDP].chksum
    fresh = Ether(bytes(fresh))
    return pkt[IP].chksum == fresh[IP].chksum and pkt[UDP].chksum == fresh[UDP].chksum


@pytest.mark.unit
def test_config_holds_the_wire_modules_packets_with_valid_checksums():
    text = trafgen.config(SRC_MAC, DST_MAC, PORT)
    frames = trafgen.parse_config(text)
    assert len(frames) == trafgen.FLOWS * trafgen.SEQS, "the config should hold one frame per flow and sequence number"
    assert frames == trafgen.packets(SRC_MAC, DST_MAC, PORT), "the config's bytes should be packets()' bytes"
    seen = set()
    for i, frame in enumerate(frames):
        flow, seq = divmod(i, trafgen.SEQS)
        pkt = Ether(frame)
        assert (pkt.src, pkt.dst) == (SRC_MAC, DST_MAC), f"frame {i} has the wrong MAC addresses"
        assert (pkt[UDP].sport, pkt[UDP].dport) == (trafgen.FIRST_SPORT + flow, PORT), \
            f"frame {i} should go from port {trafgen.FIRST_SPORT + flow} to {PORT}"
        assert bytes(pkt[UDP].payload) == wire.build_sender_packet(seq), \
            f"frame {i}'s payload should be wire.build_sender_packet({seq})"
        assert _checksums_ok(frame), f"frame {i}'s IPv4 or UDP checksum does not verify"
        assert pkt[UDP].chksum != 0, f"frame {i} has no UDP checksum"
        seen.add((pkt[UDP].sport, wire.parse_sender_packet(bytes(pkt[UDP].payload))[0]))
    assert len(seen) == len(frames), "every frame should be a distinct (flow, sequence number)"


@pytest.mark.unit
def test_a_corrupted_frame_fails_the_checksum_check():
    """The check above can fail: one flipped payload bit breaks the UDP checksum."""
    frame = bytearray(trafgen.packets(SRC_MAC, DST_MAC, PORT, flows=1, seqs=1)[0])
    frame[-1] ^= 1
    assert not _checksums_ok(bytes(frame)), "a flipped bit should make the UDP checksum wrong"


@pytest.mark.unit
def test_trafgen_sends_exactly_those_bytes(tmp_path):
    if shutil.which("trafgen") is None or os.geteuid() != 0:
        pytest.skip("needs trafgen (Debian netsniff-ng) and root")
    cfg, pcap = tmp_path / "t.cfg", tmp_path / "out.pcap"
    cfg.write_text(trafgen.config(SRC_MAC, DST_MAC, PORT))
    want = trafgen.packets(SRC_MAC, DST_MAC, PORT)
    res = subprocess.run(["trafgen", "--in", str(cfg), "--out", str(pcap), "--num", str(len(want)),
                          "--cpus", "1", "--no-sock-mem", "--no-cpu-stats"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"trafgen could not render the config: {res.stderr.strip()[-300:]}"
    got = [bytes(p) for p in rdpcap(str(pcap))]
    assert got == want, "trafgen should send the config's frames byte for byte, in order"
