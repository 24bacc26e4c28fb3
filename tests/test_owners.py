"""The hook lock and the owner look-ups of services/common/owners.py, without root."""

import os
import signal
import subprocess
import sys

import pytest

from stamp_bpf.common import owners, tc

pytestmark = pytest.mark.unit

HOLD = """
import sys, time
from stamp_bpf.common import owners
lock = owners.HookLock("reflector", 7, lock_dir=sys.argv[1])
assert lock.acquire() is None
print("locked", flush=True)
time.sleep(60)
"""


def holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_holder_is_named_and_a_killed_one_holds_nothing(tmp_path):
    proc = holder(tmp_path)
    try:
        lock = owners.HookLock("reflector", 7, lock_dir=str(tmp_path))
        held = lock.acquire()
        assert held and f"pid {proc.pid} (" in held and "python" in held and "\n" not in held, \
            f"the live holder should be named by pid and command: {held!r}"
        assert lock.fd is None
        other = owners.HookLock("reflector", 8, lock_dir=str(tmp_path))
        assert other.acquire() is None, "another interface's lock is another lock"
        other.release()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = owners.HookLock("reflector", 7, lock_dir=str(tmp_path))
    assert lock.acquire() is None, "a SIGKILLed holder should hold no lock"
    lock.release()
    assert not os.path.exists(lock.path), "release removes the lock file"


def test_the_lock_file_names_the_holder_and_release_removes_it(tmp_path):
    lock = owners.HookLock("sender", 3, lock_dir=str(tmp_path))
    assert lock.acquire() is None
    with open(lock.path) as f:
        assert f'"pid": {os.getpid()}' in f.read()
    lock.release()
    assert os.listdir(tmp_path) == []


def test_lock_files_of_a_namespace(tmp_path, monkeypatch):
    monkeypatch.setenv(owners.LOCK_DIR_ENV, str(tmp_path))
    ino = os.stat("/proc/thread-self/ns/net").st_ino
    lock = owners.HookLock("sender", 3)
    assert lock.acquire() is None
    try:
        assert owners.lock_files(ino) == [lock.path]
        assert owners.lock_files(ino + 1) == []
    finally:
        lock.release()


@pytest.mark.parametrize("family, bind", [("AF_INET", "('127.0.0.1', 0)"), ("AF_INET6", "('::', 0)")],
                         ids=["ipv4", "dual-stack"])
def test_the_holder_of_a_udp_port_is_named(family, bind):
    """The sender's dual-stack socket is listed in /proc/net/udp6, not udp."""
    code = (f"import socket, time; s = socket.socket(socket.{family}, socket.SOCK_DGRAM); "
            f"s.bind({bind}); print(s.getsockname()[1], flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        assert owners.udp_port_holders(port) == [proc.pid]
        assert proc.pid not in owners.udp_port_holders(port + 1 if port < 65535 else port - 1)
    finally:
        proc.kill()
        proc.wait()


def test_a_bad_attach_mode_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(tc.MODE_ENV, "legacy")
    with pytest.raises(tc.TcError, match="use tcx, clsact"):
        tc.mode(1)
