"""A topology whose owner is SIGKILLed (no close(), no finally) is removed by the
next topology built: tests and the demo leave no namespaces behind even then."""

import subprocess
import sys

import pytest

from stamp_bpf.lab import netns

from conftest import require_root

pytestmark = pytest.mark.timeout(120)

OWNER = """
import os, signal, sys
from stamp_bpf.lab import netns
topo = netns.Topology("emulated").__enter__()
print(topo.prefix, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_owners_namespaces_go_with_the_next_topology():
    require_root()
    proc = subprocess.run([sys.executable, "-c", OWNER], capture_output=True, text=True, timeout=60)
    prefix = proc.stdout.strip()
    assert proc.returncode == -9 and prefix, f"the owner should die by SIGKILL: {proc}"
    try:
        assert len(netns.list_namespaces(prefix)) == 3, "the killed owner's namespaces are left"
        with netns.Topology() as topo:
            assert netns.list_namespaces(prefix) == [], \
                "a new topology should have removed the namespaces of its killed owner"
            assert netns.list_namespaces(topo.prefix), "and built its own"
    finally:
        netns.cleanup(prefix)
