"""Shared fixtures: test hosts in namespaces and the real services running in them.

Every namespace, process and TC filter a test creates is removed by these
fixtures, also when the test fails. Services are the installed console
scripts (the same ones a user runs), started inside the namespaces.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stamp_bpf.lab import jsonlog
from stamp_bpf.lab.netns import Topology

BIN = os.path.dirname(sys.executable)
# Extra flags for every stamp-reflector the tests start, e.g. STAMP_TEST_REFLECTOR_ARGS=
# --stateful runs the reflector suites against the stateful mode.
REFLECTOR_ARGS = os.environ.get("STAMP_TEST_REFLECTOR_ARGS", "").split()
STATEFUL = "--stateful" in REFLECTOR_ARGS


def command(name):
    """Path of an installed console script (stamp-sender, ...)."""
    path = os.path.join(BIN, name)
    assert os.path.exists(path), f"{path} is missing: install the project (scripts/setup.sh)"
    return path


def require_root():
    if os.geteuid() != 0:
        pytest.fail("these tests need root (namespaces, BPF, TC); run them through `make test`")


@pytest.fixture(scope="module")
def one_cpu():
    """Root, and this process on one CPU for the module's BPF_PROG_TEST_RUN calls:
    the per-CPU counters and the reflector's hand-off from ingress to egress are
    then all on the CPU the test reads."""
    require_root()
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    yield
    os.sched_setaffinity(0, old)


class Service:
    """A service process in a namespace, its JSON log lines in a file."""

    def __init__(self, topo, host, argv, log_path):
        self.topo = topo
        self.log_path = log_path
        # Not to the user-space reflector, nor to authenticated mode's (also user space):
        # the stateful mode is the kernel's only.
        if (REFLECTOR_ARGS and os.path.basename(argv[0]) == "stamp-reflector"
                and "user" not in argv and "--auth-key-file" not in argv):
            argv = [*argv, *REFLECTOR_ARGS]
        self.argv = argv
        with open(log_path, "wb") as out:
            self.proc = topo.popen(host, argv, stdout=out, stderr=subprocess.STDOUT)

    def lines(self):
        """Every JSON log line so far, as dicts (other lines are skipped)."""
        return jsonlog.events(self.log_path)

    def events(self, name):
        return jsonlog.events(self.log_path, name)

    def text(self):
        return jsonlog.tail(self.log_path, 1 << 30)

    def wait_event(self, name, timeout=120):
        """Wait until the service logs `name`; fail with its log if it exits first."""
        try:
            return jsonlog.wait_event(self.proc, self.log_path, name,
                                      os.path.basename(self.argv[0]), timeout)
        except RuntimeError as e:
            pytest.fail(str(e))

    def wait_exit(self, timeout=120):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{os.path.basename(self.argv[0])} still running after {timeout} s:\n"
                        f"{self.text()[-3000:]}")

    def stop(self, timeout=10.0):
        """SIGTERM, wait; returns the exit code."""
        return self.topo.stop(self.proc, timeout)

    def summary(self):
        """The final `summary` event (the sender's last stdout line)."""
        found = self.events("summary")
        assert found, f"no summary in the log:\n{self.text()[-3000:]}"
        return found[-1]


@pytest.fixture
def topology(tmp_path):
    """Factory: topology(shape, **kw) -> an entered Topology, closed after the test."""
    require_root()
    made = []

    def make(shape="direct", **kw):
        workdir = tmp_path / f"topo{len(made)}"
        workdir.mkdir()
        topo = Topology(shape, workdir=str(workdir), **kw)
        topo.__enter__()
        made.append(topo)
        return topo

    yield make
    for topo in reversed(made):
        topo.__exit__(None, None, None)


@pytest.fixture
def service(tmp_path):
    """Factory: service(topo, host, name, *args, ready=EVENT) -> a running Service."""
    count = [0]

    def start(topo, host, name, *args, ready=None, timeout=120):
        count[0] += 1
        svc = Service(topo, host, [command(name), *map(str, args)],
                      str(tmp_path / f"{name}-{count[0]}.log"))
        if ready:
            svc.wait_event(ready, timeout)
        return svc

    return start


@pytest.fixture
def resolv_confs():
    """/etc/netns/<ns>/resolv.conf files (ip netns exec mounts them), removed afterwards."""
    made = []

    def make(ns, text):
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True)
        made.append(d)
        (d / "resolv.conf").write_text(text)

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def reflector(service, topo, *args, host=None):
    """A stamp-reflector on the reflector host, attached and reflecting."""
    host = host or topo.reflector
    return service(topo, host, "stamp-reflector", host.ifname, *args, ready="reflecting")


def tc_filters(topo, host, hook):
    """`tc filter show` lines for a host's interface ("ingress" or "egress")."""
    out = topo.run(host, ["tc", "filter", "show", "dev", host.ifname, hook],
                   capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]
