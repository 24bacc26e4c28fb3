"""--timestamping user speaks the same protocol as the BPF datapath, both ways round."""

import pytest

from conftest import command


@pytest.mark.parametrize("reflector_mode,sender_mode", [("bpf", "user"), ("user", "bpf")])
def test_user_and_bpf_interoperate(topology, service, reflector_mode, sender_mode):
    topo = topology("emulated", emulator_args=["--fwd-delay", "2ms", "--back-delay", "5ms"])
    refl = service(topo, topo.reflector, "stamp-reflector", topo.reflector.ifname,
                   "--timestamping", reflector_mode, ready="reflecting")
    snd = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                  "-c", 10, "-i", 0.02, "-w", 0.5, "--timestamping", sender_mode)
    assert snd.wait_exit() == 0, snd.text()[-3000:]
    assert snd.events("sending")[0]["timestamping"] == sender_mode
    (s,) = snd.summary()["sessions"]
    assert (s["sent"], s["received"], s["lost"]) == (10, 10, 0), s
    # 2 ms forward and 5 ms back: user-space timestamps are noisier, never that far off.
    assert 1_900_000 <= s["near_end"]["min_ns"] < 4_000_000, s["near_end"]
    assert 4_900_000 <= s["far_end"]["min_ns"] < 7_000_000, s["far_end"]
    refl.stop()
    reflected = refl.summary()["sessions"]
    assert reflected and reflected[0]["reflected"] == 10, reflected
    assert refl.events("reflecting")[0]["timestamping"] == reflector_mode
