"""Who owns a hook: the live process behind a BPF link or program, and a lock.

Two ways to tell a live owner from a dead one, both answered by the kernel:
- a process holds the link or program open: /proc/PID/fdinfo names the
  link_id or prog_id of each BPF file descriptor (visible for processes of
  this PID namespace that we may inspect);
- a process holds the hook's lock file: flock(2) locks go with their holder,
  so a killed service holds none, and the file names the last holder.
"""

import fcntl
import json
import os

LOCK_DIR_ENV = "STAMP_LOCK_DIR"
LOCK_DIR = "/run/stamp-bpf"     # the systemd units' RuntimeDirectory


def locks_dir():
    return os.environ.get(LOCK_DIR_ENV) or LOCK_DIR


def lock_files(netns_ino):
    """The lock files of one network namespace (by its inode), for cleaning up
    after a namespace is gone (a killed service leaves its file, unlocked)."""
    d = locks_dir()
    try:
        names = os.listdir(d)
    except OSError:
        return []
    return [os.path.join(d, n) for n in names
            if n.endswith(".lock") and f"-{netns_ino}-" in n]


COMMAND_MAX = 200     # characters of a command line quoted in a message


def command_of(pid):
    """A process's command line on one line, cut to COMMAND_MAX ('' when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = " ".join(f.read().decode(errors="replace").replace("\0", " ").split())
    except OSError:
        return ""
    return cmd if len(cmd) <= COMMAND_MAX else cmd[:COMMAND_MAX - 3] + "..."


def holders(key, ids, proc="/proc"):
    """{id: [pid, ...]} of visible processes holding a BPF fd whose fdinfo
    line `key` ("link_id" or "prog_id") is one of `ids`. Our own pid counts."""
    want = {str(i) for i in ids}
    found = {}
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue                    # gone, or not ours to look at
        for fd in fds:
            try:
                if not os.readlink(f"{proc}/{pid}/fd/{fd}").startswith("anon_inode:bpf"):
                    continue
                with open(f"{proc}/{pid}/fdinfo/{fd}") as f:
                    for line in f:
                        name, _, value = line.partition(":")
                        if name == key and value.strip() in want:
                            found.setdefault(int(value), []).append(int(pid))
            except OSError:
                continue
    return found


def describe(pid):
    """'pid 1234 (stamp-reflector r0 ...)' for messages."""
    cmd = command_of(pid)
    return f"pid {pid} ({cmd})" if cmd else f"pid {pid}"


class HookLock:
    """An exclusive flock on <dir>/<role>-<netns>-<ifindex>.lock.

    The network namespace's inode is in the name because interface names and
    indexes repeat across namespaces. acquire() returns None when we hold it,
    or the holder's description when a live process does.
    """

    def __init__(self, role, ifindex, lock_dir=None):
        netns = os.stat("/proc/thread-self/ns/net").st_ino
        self.path = os.path.join(lock_dir or locks_dir(), f"{role}-{netns}-{ifindex}.lock")
        self.fd = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                return holder
            except OSError:
                os.close(fd)
                raise
            # The holder we waited on may have removed the file on its way
            # out: a lock on a removed file guards nothing, so start again.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command_of(os.getpid())})
                  .encode() + b"\n", 0)
        self.fd = fd
        return None

    @staticmethod
    def _read(fd):
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {info['pid']} ({info.get('command', '')})"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that holds the lock but has not written its pid yet"

    def release(self):
        """Remove the file, then unlock (acquire() checks that the file it
        locked is still the one of that name)."""
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def udp_port_holders(port, proc="/proc"):
    """Pids of visible processes with a UDP socket bound to `port` in this
    network namespace (/proc/net/udp and udp6, for dual-stack sockets, give
    the socket's inode)."""
    inodes = set()
    for table in ("udp", "udp6"):
        try:
            with open(f"{proc}/net/{table}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{cols[9]}]")
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    if not inodes:
        return []
    pids = []
    for pid in os.listdir(proc):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") in inodes:
                    pids.append(int(pid))
                    break
            except OSError:
                continue
    return pids
