"""The sender's TLVs end to end (RFC 8972 section 4): --dscp, --location, --timestamp-info,
--padding against a running stamp-reflector, directly and through the link emulator,
which re-marks the DSCP differently in each direction."""

import json

import pytest

from conftest import Service, command, require_root

pytestmark = pytest.mark.timeout(300)
COUNT = 6
OPTS = ["--dscp", "46", "--location", "--timestamp-info", "--padding", "11",
        "--directional-loss"]


def run(tmp_path, emulator_args=None, stateful=True):
    from stamp_bpf.lab.netns import Topology
    require_root()
    (tmp_path / "topo").mkdir()
    shape = "emulated" if emulator_args is not None else "direct"
    kw = {"emulator_args": emulator_args} if emulator_args is not None else {}
    with Topology(shape, workdir=str(tmp_path / "topo"), **kw) as topo:
        refl = Service(topo, topo.reflector, [command("stamp-reflector"), topo.reflector.ifname,
                                              *(["--stateful"] if stateful else [])],
                       str(tmp_path / "reflector.log"))
        refl.wait_event("reflecting")
        snd = Service(topo, topo.sender, [command("stamp-sender"), topo.sender.ifname,
                                          topo.reflector.addr, "-c", str(COUNT), "-i", "0.02",
                                          "-w", "0.3", *OPTS], str(tmp_path / "sender.log"))
        assert snd.wait_exit(120) == 0, f"the sender failed:\n{snd.text()[-3000:]}"
        refl.stop()
        emu = ([json.loads(line) for line in open(topo.emulator_log)]
               if emulator_args is not None else [])
        (s,) = snd.summary()["sessions"]
        return topo, s, emu


def test_reports_what_the_reflector_saw(tmp_path):
    topo, s, _ = run(tmp_path)
    assert s["received"] == COUNT and s["lost_forward"] == 0 and s["lost_backward"] == 0, s
    assert s["cos"] == {"dscp_sent": 46, "dscp_at_reflector": 46, "ecn_at_reflector": 0,
                        "dscp_on_reply": 46, "ecn_on_reply": 0, "reverse_path_refused": False,
                        "remarked_forward": 0, "remarked_backward": 0}, s["cos"]
    loc = s["location"]
    assert (loc["src_addr"], loc["dst_addr"], loc["src_port"], loc["dst_port"], loc["nat_seen"]) \
        == (topo.sender.addr, topo.reflector.addr, 862, 862, False), loc
    assert loc["src_mac"] == topo.sender.mac, loc
    ti = s["timestamp_info"]
    assert ti["timestamp_in"] == ti["timestamp_out"] == "sw-local", ti
    assert ti["sync_src_in"] in ("ntp", "free-running"), ti
    assert "tlvs_unanswered" not in s, s


def test_re_marking_is_reported_in_the_right_direction(tmp_path):
    _, s, emu = run(tmp_path, ["--remark", "fwd:10", "--remark", "back:12"])
    assert sum(1 for e in emu if e.get("dscp") == 10 and e["dir"] == "fwd") == COUNT, emu[:3]
    cos = s["cos"]
    assert (cos["dscp_at_reflector"], cos["dscp_on_reply"]) == (10, 12), (
        f"the emulator re-marked forward to 10 and back to 12; the sender reports {cos}")
    assert (cos["remarked_forward"], cos["remarked_backward"]) == (COUNT, COUNT), cos
