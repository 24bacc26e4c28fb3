"""contrib/systemd: every unit passes `systemd-analyze verify`, keeps a low
exposure score, and the whole system really runs under the supervisor unit's
capabilities and sandbox (emulated: systemd is not PID 1 here; see
test_supervisor_harness.unit_sandbox_argv). The options the units leave out
are shown to break the services, as docs/supervisor.md says."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from stamp_bpf.lab.netns import Topology
from test_supervisor_harness import CAPS, SupervisorRun, unit_options, unit_sandbox_argv
from test_supervisor_netns import counting, our_filters, write_conf

pytestmark = pytest.mark.timeout(300)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(ROOT, "contrib", "systemd")
VENV = os.path.dirname(os.path.dirname(sys.executable))
NAMES = ["stamp-bpf.service", "stamp-exporter.service", "stamp-reflector.service",
         "stamp-sender.service"]


@pytest.fixture
def units(tmp_path):
    """The units with ExecStart pointing into this venv (verify checks the program exists)."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: install Debian's systemd package "
                    "(scripts/setup.sh's test packages)")
    for name in NAMES:
        text = open(os.path.join(UNITS, name)).read().replace("/opt/stamp-bpf/venv", VENV)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_every_unit_passes_systemd_analyze_verify(units):
    assert sorted(os.listdir(UNITS)) == sorted(NAMES), "contrib/systemd holds the four units."
    res = subprocess.run(["systemd-analyze", "verify", *(str(units / n) for n in NAMES)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), \
        f"systemd-analyze verify reports nothing: {res.stdout}{res.stderr}"


@pytest.mark.parametrize("name,limit", [("stamp-bpf.service", 3.0), ("stamp-sender.service", 3.0),
                                        ("stamp-reflector.service", 3.0),
                                        ("stamp-exporter.service", 1.5)])
def test_unit_exposure_stays_low(units, name, limit):
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(units / name)],
                         capture_output=True, text=True, timeout=60)
    last = res.stdout.strip().splitlines()[-1]
    score = float(last.split("level for")[1].split(":")[1].split()[0])
    assert score <= limit, f"{name}'s exposure stays at most {limit}: {last}"


def _status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@pytest.fixture
def runtime_dir():
    """A RuntimeDirectory= stand-in owned by the unit's user (uid 65534 here)."""
    rt = f"/run/stamp-bpf-{os.urandom(3).hex()}"
    os.makedirs(rt)
    os.chown(rt, 65534, 65534)
    yield rt
    shutil.rmtree(rt, ignore_errors=True)


def test_whole_system_runs_under_the_supervisor_units_sandbox(tmp_path, runtime_dir):
    """Sender host: stamp-bpf run as stamp-bpf.service would run it, measuring to a
    reflector host; then stopped with nothing left behind."""
    rt = runtime_dir
    with Topology("direct") as topo:
        ref = SupervisorRun(["--config", str(write_conf(tmp_path / "ref.toml", topo,
                                                        topo.reflector, "reflector"))],
                            ns=topo.reflector.ns)
        conf = os.path.join(rt, "snd.toml")   # /tmp is private in the sandbox
        text = write_conf(tmp_path / "snd.toml", topo, topo.sender, "sender").read_text()
        with open(conf, "w") as f:
            f.write(text.replace("/run/stamp-bpf/", rt + "/"))
        os.chmod(conf, 0o644)
        unit = os.path.join(UNITS, "stamp-bpf.service")
        snd = SupervisorRun(["--config", conf], ns=topo.sender.ns,
                            wrap=lambda argv: unit_sandbox_argv(unit, argv, rw_paths=[rt]))
        try:
            counting(topo.sender.ns, 120, "the sandboxed sender host counted replies")
            status = {e["child"]: _status(e["pid"]) for e in snd.events("child_started")}
            unit_caps = sum(1 << CAPS[c] for c in
                            unit_options(unit)["CapabilityBoundingSet"][0].split())
            assert all(s["Uid"].split()[0] == "65534" for s in status.values()), \
                "Every child runs as the unit's unprivileged user."
            assert all(int(status[c]["CapEff"], 16) == unit_caps for c in ("sender", "reflector")), \
                f"The sender and reflector hold exactly the unit's capabilities: {status}"
            assert int(status["exporter"]["CapEff"], 16) == 0, "The exporter holds no capability."
            snd.signal(signal.SIGTERM)
            assert snd.wait(60) == 0, "The sandboxed supervisor stops cleanly."
            assert our_filters(topo.sender) == [] and \
                not os.path.exists(f"{rt}/{topo.prefix}-sender.sock"), \
                "Nothing is left attached and no socket file is left."
        finally:
            snd.close()
            ref.close()


LEFT_OUT = [
    ("ProtectKernelModules", "bcc needs kernel headers at /lib/modules/"),
    ("ProtectClock", "adjtimex"),
]


@pytest.mark.parametrize("option,error", LEFT_OUT, ids=[o for o, _ in LEFT_OUT])
def test_option_left_out_of_the_units_would_break_the_reflector(option, error, runtime_dir):
    unit = os.path.join(UNITS, "stamp-reflector.service")
    assert option not in unit_options(unit), f"{option} is left out of {unit}."
    with Topology("direct") as topo:
        argv = unit_sandbox_argv(unit, [os.path.join(VENV, "bin", "stamp-reflector"),
                                        topo.reflector.ifname, "--log-format", "json",
                                        "--zmq", f"ipc://{runtime_dir}/r.sock"],
                                 rw_paths=[runtime_dir], **{option: ["yes"]})
        res = subprocess.run(["ip", "netns", "exec", topo.reflector.ns, *argv],
                             capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and error in res.stdout + res.stderr, \
        f"With {option}=yes the reflector cannot start ({error!r} expected): " \
        f"{(res.stdout + res.stderr)[-600:]}"
