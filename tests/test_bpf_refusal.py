"""When the kernel refuses BPF, both services say why in one line.

The classifier (stamp_bpf.common.bpfperm) is tested on fixture /proc and /sys
files for every cause, then for real: each service is started with its
capabilities dropped (setpriv) and under a real seccomp filter that refuses
bpf() with EPERM (libseccomp, as a container runtime's default profile does
without CAP_SYS_ADMIN), in a network namespace of its own. Each must end in one
JSON line naming the cause, never bcc's "Failed to compile BPF module".
A locked-down kernel cannot be caused here: that case is the fixture's only.
"""

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from stamp_bpf.common import bpfperm

BIN = os.path.dirname(sys.executable)
ALL_CAPS = (1 << 41) - 1
CAPS_ONLY = (1 << bpfperm.CAP_BPF) | (1 << bpfperm.CAP_NET_ADMIN) | (1 << bpfperm.CAP_PERFMON)


def fake_proc(tmp_path, caps, seccomp=0, uid_map="0 0 4294967295", lockdown=None):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "status").write_text(f"Name:\tstamp\nCapEff:\t{caps:016x}\nSeccomp:\t{seccomp}\n")
    (proc / "uid_map").write_text(f"{uid_map}\n")
    sysfs = tmp_path / "sys"
    if lockdown:
        (sysfs / "kernel" / "security").mkdir(parents=True)
        (sysfs / "kernel" / "security" / "lockdown").write_text(lockdown + "\n")
    return dict(proc=str(proc), sysfs=str(sysfs))


CASES = [
    # caps, seccomp, probe errno, uid_map, lockdown, failed, words expected (None: no refusal)
    (ALL_CAPS, 0, 0, None, None, False, None),
    (CAPS_ONLY, 2, 0, None, None, False, None),
    (CAPS_ONLY, 2, errno.EPERM, None, None, False, ["seccomp", "Seccomp: 2", "Unconfined"]),
    (1 << bpfperm.CAP_NET_ADMIN, 0, errno.EPERM, None, None, False, ["missing capability", "CAP_BPF"]),
    (1 << bpfperm.CAP_BPF, 0, 0, None, None, False, ["missing capability", "CAP_NET_ADMIN"]),
    (0, 2, errno.EPERM, None, None, False, ["missing capability", "CAP_BPF and CAP_NET_ADMIN"]),
    (1 << bpfperm.CAP_SYS_ADMIN, 0, 0, None, None, False, None),
    (CAPS_ONLY, 0, errno.EPERM, "0 100000 65536", None, False, ["user namespace"]),
    (CAPS_ONLY, 0, errno.EPERM, None, None, False, ["security module"]),
    (ALL_CAPS, 0, 0, None, "none integrity [confidentiality]", True, ["locked-down", "confidentiality"]),
    (ALL_CAPS, 0, 0, None, "none integrity [confidentiality]", False, None),
    (ALL_CAPS, 0, 0, None, "none [integrity] confidentiality", True, None),
    (ALL_CAPS, 0, 0, None, None, True, None),
]


@pytest.mark.unit
@pytest.mark.parametrize("caps,seccomp,err,uid_map,lockdown,failed,words", CASES)
def test_classifier_names_the_cause(tmp_path, caps, seccomp, err, uid_map, lockdown, failed, words):
    paths = fake_proc(tmp_path, caps, seccomp, uid_map or "0 0 4294967295", lockdown)
    line = bpfperm.refusal(**paths, probe=lambda: err, failed=failed)
    if words is None:
        assert line is None, f"Nothing refuses BPF here, yet the classifier said {line!r}."
        return
    assert line is not None, "The classifier should name a cause here and said nothing."
    assert "\n" not in line, "The cause should be one line."
    for w in words:
        assert w in line, f"The cause should mention {w!r}: {line!r}"


@pytest.mark.unit
def test_probe_sees_this_process():
    """As root with every capability and no filter, the real probe creates a map."""
    status = open("/proc/self/status").read()
    if os.geteuid() != 0 or "Seccomp:\t0" not in status:
        pytest.skip("needs root without a seccomp filter, as the suite runs")
    assert bpfperm.probe_bpf() == 0, "bpf(BPF_MAP_CREATE) failed for root without a filter."
    assert bpfperm.refusal() is None, "Root without a filter should have no refusal."


SECCOMP_EXEC = """
import errno, os, sys, seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.EPERM), "bpf")
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""

SERVICES = [("stamp-reflector", ["lo"]), ("stamp-sender", ["lo", "127.0.0.1", "--count", "1"])]


def run_confined(wrapper, cmd, argv):
    """Run a service in a new network namespace (lo up) under a wrapper; its exit and lines."""
    exe = os.path.join(BIN, cmd)
    inner = shlex.join([*wrapper, exe, *argv, "--log-format", "json"])
    proc = subprocess.run(["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {inner}"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


def failure_line(rc, out, err):
    assert rc == 1, f"The service should exit 1 when BPF is refused; it exited {rc}: {out}{err}"
    assert "Failed to compile" not in out + err, f"bcc's compile message leaked out: {out}{err}"
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    failed = [x for x in lines if x.get("event") == "failed"]
    assert len(failed) == 1, f"One 'failed' line expected, got: {out}"
    return failed[0]["reason"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cmd,argv", SERVICES)
def test_dropped_capabilities_are_named(cmd, argv):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.fail("This test needs root and setpriv (util-linux).")
    wrapper = ["setpriv", "--inh-caps=-all", "--bounding-set=-bpf,-sys_admin,-perfmon", "--"]
    reason = failure_line(*run_confined(wrapper, cmd, argv))
    assert reason.startswith("missing capability") and "CAP_BPF" in reason, (
        f"{cmd} without CAP_BPF should name the missing capability: {reason!r}")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cmd,argv", SERVICES)
def test_seccomp_filter_is_named(cmd, argv):
    pytest.importorskip("seccomp", reason="Debian's python3-seccomp (scripts/setup.sh installs it)")
    wrapper = [sys.executable, "-c", SECCOMP_EXEC]
    reason = failure_line(*run_confined(wrapper, cmd, argv))
    assert reason.startswith("seccomp:") and "Unconfined" in reason, (
        f"{cmd} under a filter refusing bpf() should name seccomp: {reason!r}")
