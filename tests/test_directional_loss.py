"""Loss per direction (--directional-loss) through the link emulator, against a stateful
reflector (exact) and a stateless one (null).

The emulator drops chosen packets on the way there and back, reorders one each way and
holds one reply past the timeout (late, not lost); its log is the truth. The emulator
keys back frames by their first 4 octets, the reflector's Sequence Number: a stateful
reflector's own count, which skips the packets dropped on the way there.
"""

import json

import pytest

from conftest import Service, command, require_root

pytestmark = pytest.mark.timeout(300)
COUNT = 40
DROP_FWD = {3, 17}
DROP_BACK = {9, 30}          # sender Sequence Numbers
REORDER_FWD = {25}           # sent on after 26
REORDER_BACK = {13}
LATE_BACK = 22               # held 450 ms on the way back: late (-w 0.3), not lost


def reflector_seq(seq, stateful):
    """The reflected Sequence Number of test packet `seq` (no reordering before it)."""
    return seq - sum(f < seq for f in DROP_FWD) if stateful else seq


def run(tmp_path, stateful):
    from stamp_bpf.lab.netns import Topology
    require_root()
    back = lambda seqs: ",".join(str(reflector_seq(q, stateful)) for q in sorted(seqs))  # noqa: E731
    emu = ["--fwd-delay", "2ms", "--back-delay", "3ms",
           "--drop", "fwd:" + ",".join(map(str, sorted(DROP_FWD))), "--drop", "back:" + back(DROP_BACK),
           "--reorder", "fwd:" + ",".join(map(str, REORDER_FWD)), "--reorder", "back:" + back(REORDER_BACK),
           "--delay-seq", f"back:{reflector_seq(LATE_BACK, stateful)}=450ms"]
    (tmp_path / "topo").mkdir()
    with Topology("emulated", emulator_args=emu, workdir=str(tmp_path / "topo")) as topo:
        refl = Service(topo, topo.reflector, [command("stamp-reflector"), topo.reflector.ifname,
                                              *(["--stateful"] if stateful else [])],
                       str(tmp_path / "reflector.log"))
        refl.wait_event("reflecting")
        snd = Service(topo, topo.sender, [command("stamp-sender"), topo.sender.ifname,
                                          topo.reflector.addr, "-c", str(COUNT), "-i", "0.03",
                                          "-w", "0.3", "--directional-loss"],
                      str(tmp_path / "sender.log"))
        assert snd.wait_exit(120) == 0, f"the sender failed:\n{snd.text()[-3000:]}"
        refl.stop()
        emu_log = [json.loads(line) for line in open(topo.emulator_log)]
    (s,) = snd.summary()["sessions"]
    drops = {d: sum(1 for e in emu_log if e.get("event") == "drop" and e["dir"] == d)
             for d in ("fwd", "back")}
    return s, drops


def test_stateful_reflector_gives_exact_loss_per_direction(tmp_path):
    s, drops = run(tmp_path, stateful=True)
    assert drops == {"fwd": len(DROP_FWD), "back": len(DROP_BACK)}, f"emulator drops {drops}"
    assert s["lost"] == len(DROP_FWD) + len(DROP_BACK) and s["late"] == 1, s
    assert (s["lost_forward"], s["lost_backward"]) == (drops["fwd"], drops["back"]), (
        f"lost_forward {s['lost_forward']} and lost_backward {s['lost_backward']}, but the "
        f"emulator dropped {drops['fwd']} on the way there and {drops['back']} back: {s}")
    assert s["lost_direction_unknown"] == 0, s
    assert s["reordered"] >= 1 and s["ssid_echoed"] is True, s


def test_stateless_reflector_gives_null(tmp_path):
    s, drops = run(tmp_path, stateful=False)
    assert s["lost"] == sum(drops.values()) == len(DROP_FWD) + len(DROP_BACK), (s, drops)
    assert s["lost_forward"] is None and s["lost_backward"] is None, (
        f"a stateless reflector cannot tell the directions apart: want null, got {s}")
