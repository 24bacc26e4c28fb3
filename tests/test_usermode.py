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


def test_user_mode_measures_ipv4_and_ipv6_side_by_side(topology, service, tmp_path):
    """One user-space sender, one user-space reflector, both families at once (global and
    link-local IPv6): the summary, the logs and the exporter's series carry each."""
    import time
    import urllib.request
    topo = topology("emulated", ipv6=True, emulator_args=["--fwd-delay", "2ms", "--back-delay", "5ms"])
    r = topo.reflector
    zmq = f"ipc://{tmp_path}/records.sock"
    port = 19862
    exporter = service(topo, topo.sender, "stamp-exporter", "--listen", f"127.0.0.1:{port}",
                       "--zmq", zmq, ready="started")
    refl = service(topo, r, "stamp-reflector", r.ifname, "--timestamping", "user", "--output",
                   "--zmq", f"ipc://{tmp_path}/refl.sock", ready="reflecting")
    snd = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, r.addr, r.addr6, r.ll6,
                  "-c", 10, "-i", 0.02, "-w", 0.5, "--timestamping", "user", "--zmq", zmq)
    assert snd.wait_exit() == 0, snd.text()[-3000:]
    by = {s["reflector"]: s for s in snd.summary()["sessions"]}
    assert set(by) == {r.addr, r.addr6, r.ll6}, f"One session per address: {sorted(by)}"
    for ip, s in by.items():
        assert (s["sent"], s["received"], s["lost"]) == (10, 10, 0), f"{ip}: {s}"
        assert 1_900_000 <= s["near_end"]["min_ns"] < 4_000_000, f"{ip}: {s['near_end']}"
        assert 4_900_000 <= s["far_end"]["min_ns"] < 7_000_000, f"{ip}: {s['far_end']}"
    time.sleep(1)
    res = topo.run(topo.sender, ["python3", "-c", "import urllib.request,sys;sys.stdout.write("
                                 f"urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"],
                   capture_output=True, text=True, timeout=30)
    text = res.stdout
    for label in (f'reflector="[{r.addr6}]:862"', f'reflector="[{r.ll6}]:862"',
                  f'reflector="{r.addr}:862"', f'sender="[{topo.sender.addr6}]:862"'):
        assert label in text, f"The exporter must label the session {label}:\n{text[:2000]}"
    refl.stop()
    senders = {s["sender"] for s in refl.summary()["sessions"]}
    assert senders == {f"{topo.sender.addr}:862", f"[{topo.sender.addr6}]:862",
                       f"[{topo.sender.ll6}]:862"}, f"The reflector's sessions: {senders}"
