"""Helpers for the supervisor tests (no tests here): a running `stamp-bpf run`
whose output is parsed as it comes, and stand-in children for the logic tests."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import installtree

STAMP_BPF = os.path.join(os.path.dirname(sys.executable), "stamp-bpf")
SERVICES = ("exporter", "reflector", "sender")

# A stand-in for stamp-sender, -reflector and -exporter, installed under each
# name in a temporary bin directory. It records what happens to it as JSON lines
# in DIR/events.log and takes orders from files in DIR named after it:
#   NAME.crash     exit 3 at once, after one line on stderr (a crash on start)
#   NAME.stubborn  ignore SIGTERM (the supervisor has to SIGKILL it)
#   NAME.spam      write N long JSON lines (N in the file) as fast as it can
# Otherwise it prints a JSON line every 0.2 s and exits 0 on SIGTERM. As the
# exporter, it listens on its --listen address, as the real one serves /metrics.
# As the reflector, it takes SIGHUP as the real one does (an event "hup", with
# the content of its --allow-file), after NAME.hupdelay seconds if that file exists.
STANDIN = r'''
import json, os, signal, socket, sys, time
here = os.path.dirname(os.path.abspath(__file__))
name = os.path.basename(sys.argv[0]).removeprefix("stamp-")

def event(what, **kw):
    line = json.dumps({"event": what, "name": name, "pid": os.getpid(),
                       "t": time.monotonic(), **kw}) + "\n"
    fd = os.open(os.path.join(here, "events.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line.encode())
    os.close(fd)

def order(what):
    path = os.path.join(here, f"{name}.{what}")
    return open(path).read().strip() if os.path.exists(path) else None

def on_term(signum, frame):
    event("term")
    print(json.dumps({"event": "stopping", "service": name}), flush=True)
    sys.exit(0)

def on_hup(signum, frame):
    path = sys.argv[sys.argv.index("--allow-file") + 1] if "--allow-file" in sys.argv else None
    event("hup", allow=open(path).read() if path else None)

signal.signal(signal.SIGTERM, signal.SIG_IGN if order("stubborn") is not None else on_term)
event("start", argv=sys.argv[1:])
if name == "reflector":
    time.sleep(float(order("hupdelay") or 0))
    signal.signal(signal.SIGHUP, on_hup)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
if order("crash") is not None:
    print(f"{name}: cannot start: the crash order file says so", file=sys.stderr, flush=True)
    sys.exit(3)
if "--listen" in sys.argv:
    host, _, port = sys.argv[sys.argv.index("--listen") + 1].rpartition(":")
    listener = socket.create_server((host, int(port)))
spam = order("spam")
if spam:
    for i in range(int(spam)):
        print(json.dumps({"event": "spam", "service": name, "i": i, "pad": name[0] * 3000}))
    sys.stdout.flush()
    event("spammed")
while True:
    print(json.dumps({"event": "tick", "service": name}), flush=True)
    time.sleep(0.2)
'''


def install_standins(bin_dir):
    """Write the stand-in under the three service names into bin_dir."""
    os.makedirs(bin_dir, exist_ok=True)
    for svc in SERVICES:
        path = os.path.join(bin_dir, f"stamp-{svc}")
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\n{STANDIN}")
        os.chmod(path, 0o755)
    return bin_dir


def free_port():
    """A TCP port nobody listens on right now (for a stand-in exporter's --listen)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standin_events(bin_dir, what=None, name=None):
    """The stand-ins' events so far, optionally only one kind and one child."""
    path = os.path.join(bin_dir, "events.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        evs = [json.loads(line) for line in f if line.strip()]
    return [e for e in evs if (what is None or e["event"] == what)
            and (name is None or e["name"] == name)]


def wait_until(pred, timeout, what):
    """Poll pred() until it returns something true; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"Waited {timeout} s in vain for this: {what}.")
        time.sleep(0.05)


class SupervisorRun:
    """`stamp-bpf run ARGS` (in namespace `ns`), stdout and stderr collected by line.

    Its pid is the supervisor's: `ip netns exec` and the sandbox exec, not fork."""

    def __init__(self, args, ns=None, wrap=lambda argv: argv):
        """wrap(argv) may put the command inside another (a sandbox)."""
        argv = wrap([STAMP_BPF, "run", "--log-format", "json", *args])
        if ns:
            argv = ["ip", "netns", "exec", ns, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stdout, self.stderr = [], []
        self._threads = [threading.Thread(target=self._read, args=(p, dst), daemon=True)
                         for p, dst in ((self.proc.stdout, self.stdout),
                                        (self.proc.stderr, self.stderr))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(pipe, dst):
        for line in iter(pipe.readline, b""):
            dst.append(line)

    def json_lines(self, strict=True):
        """Every stdout line parsed. Strict: a line that is not one JSON object fails
        the test; otherwise such lines (a child's traceback, say) are skipped."""
        out = []
        for line in list(self.stdout):
            try:
                out.append(json.loads(line))
            except ValueError:
                if strict:
                    raise AssertionError(f"Supervisor stdout line is not one JSON object: "
                                         f"{line[:200]!r}") from None
        return out

    def events(self, event=None, **match):
        """The supervisor's own events, optionally one kind with matching fields."""
        return [e for e in self.json_lines(strict=False) if e.get("service") == "supervisor"
                and (event is None or e.get("event") == event)
                and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, event, timeout=10, count=1, **match):
        return wait_until(lambda: (evs := self.events(event, **match)) and len(evs) >= count
                          and evs, timeout,
                          f"the supervisor logged {event} {match} fewer than {count} times; "
                          f"stderr: {b''.join(self.stderr)[-500:]!r}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"The supervisor did not exit within {timeout} s.") from None
        for t in self._threads:
            t.join(5)
        return rc

    def close(self):
        """Finalizer: SIGTERM, then SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- systemd sandbox emulation ------------------------------------------------
# systemd is not PID 1 in the test container, so `systemd-run -p ...` cannot run
# a service under a unit's sandbox. unit_sandbox_argv() rebuilds the parts that
# can stop bcc or the services from working, from the unit file's own lines:
#   DynamicUser=/User=            uid and gid 65534, ambient capabilities kept
#   CapabilityBoundingSet=        every other capability dropped from the bounding set
#   ProtectSystem=strict, ProtectHome=, PrivateTmp=
#                                 / read-only (RuntimeDirectory= writable), tmpfs on /tmp,
#                                 /var/tmp, /root, /home
#   ProtectKernelTunables=        /sys and /proc/sys read-only
#   ProtectKernelModules=         /usr/lib/modules inaccessible
#   NoNewPrivileges=              PR_SET_NO_NEW_PRIVS
#   MemoryDenyWriteExecute=       seccomp, as systemd 252 does: no W+X mmap, no mprotect(PROT_EXEC)
#   SystemCallFilter=, ProtectClock=, RestrictAddressFamilies=
#                                 one seccomp allow list (EPERM otherwise), groups expanded
#                                 with systemd-analyze syscall-filter
# Not emulated (they cannot get in bcc's way): ProtectKernelLogs, ProtectControlGroups,
# ProtectHostname, DevicePolicy, RestrictNamespaces, RestrictRealtime, RestrictSUIDSGID,
# LockPersonality, RemoveIPC, PrivateMounts, UMask.

CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12,
        "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38,
        "CAP_BPF": 39}
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}


def unit_options(path):
    """The [Service] lines of a unit: {key: [value, ...]} in file order."""
    opts, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                opts.setdefault(k, []).append(v)
    return opts


def unit_sandbox_argv(unit_path, argv, rw_paths=(), **override):
    """argv wrapped to run as under the unit's sandbox (run as root, in any netns).

    override replaces unit options, e.g. ProtectKernelModules=["yes"]."""
    opts = dict(unit_options(unit_path), **override)
    spec = {"opts": opts, "rw": list(rw_paths), "argv": list(argv)}
    return ["unshare", "--mount", "--", sys.executable, os.path.abspath(__file__),
            json.dumps(spec)]


def _syscall_group(name, cache={}):
    if name not in cache:
        out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True,
                             text=True, check=True).stdout
        names = set()
        for line in out.splitlines()[1:]:
            line = line.strip()
            if line and not line.startswith("#"):
                names |= _syscall_group(line) if line.startswith("@") else {line}
        cache[name] = names
    return cache[name]


def _syscalls(words):
    return set().union(*(_syscall_group(w) if w.startswith("@") else {w} for w in words))


def _sandbox_exec(spec):
    import ctypes
    import seccomp  # Debian's python3-seccomp
    libc = ctypes.CDLL(None, use_errno=True)
    opts, yes = spec["opts"], lambda k: opts.get(k, [""])[-1] in ("yes", "true", "strict")

    def sh(*a):
        subprocess.run(a, check=True)

    sh("mount", "--make-rprivate", "/")
    if yes("ProtectKernelModules"):
        sh("mount", "-t", "tmpfs", "-o", "mode=000", "tmpfs", "/usr/lib/modules")
    if yes("ProtectKernelTunables"):
        for p in ("/sys", "/proc/sys"):
            sh("mount", "--bind", p, p)
            sh("mount", "-o", "remount,bind,ro", p)
    if yes("ProtectSystem") or yes("DynamicUser"):
        # This checkout's venv may sit in a folder the sandbox hides (CI may
        # clone under /tmp); an installed unit's ExecStart= points into /opt.
        # Keep the venv at its own path: parked on /mnt across the tmpfs mounts.
        # An editable install also runs from the checkout: both are kept (installtree.py).
        venv = os.path.dirname(os.path.dirname(os.path.abspath(spec["argv"][0])))
        keep = installtree.install_dirs(venv)
        for cmd in installtree.park(keep):
            sh(*cmd)
        for p in ("/tmp", "/var/tmp", "/root", "/home"):
            sh("mount", "-t", "tmpfs", "tmpfs", p)
        for snippet in installtree.restore(keep):
            sh("sh", "-c", snippet)
        for p in spec["rw"]:
            sh("mount", "--bind", p, p)
        sh("mount", "-o", "remount,bind,ro", "/")
    keep = [CAPS[c] for v in opts.get("CapabilityBoundingSet", []) for c in v.split()]
    for cap in range(0, 41):
        if cap not in keep:
            libc.prctl(24, cap, 0, 0, 0)                        # PR_CAPBSET_DROP
    if yes("DynamicUser"):
        ambient = [CAPS[c] for v in opts.get("AmbientCapabilities", []) for c in v.split()]
        libc.prctl(8, 1, 0, 0, 0)                               # PR_SET_KEEPCAPS
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

        class Hdr(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("eff", ctypes.c_uint32), ("perm", ctypes.c_uint32),
                        ("inh", ctypes.c_uint32)]
        hdr, data = Hdr(0x20080522, 0), (Data * 2)()
        libc.capget(ctypes.byref(hdr), data)
        for c in ambient:
            data[c // 32].inh |= 1 << (c % 32)
            data[c // 32].eff |= 1 << (c % 32)
        if libc.capset(ctypes.byref(hdr), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        for c in ambient:
            if libc.prctl(47, 2, c, 0, 0) != 0:                 # PR_CAP_AMBIENT_RAISE
                raise OSError(ctypes.get_errno(), "PR_CAP_AMBIENT_RAISE")
    if yes("NoNewPrivileges") or yes("DynamicUser"):
        libc.prctl(38, 1, 0, 0, 0)                              # PR_SET_NO_NEW_PRIVS
    if yes("MemoryDenyWriteExecute"):
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        w_x = 0x2 | 0x4
        f.add_rule(seccomp.ERRNO(1), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, w_x, w_x))
        for call in ("mprotect", "pkey_mprotect"):
            f.add_rule(seccomp.ERRNO(1), call, seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
        f.load()
    allow, deny = set(), set()
    for v in opts.get("SystemCallFilter", []):
        (deny if v.startswith("~") else allow).update(_syscalls(v.lstrip("~").split()))
    if yes("ProtectClock"):
        deny |= _syscall_group("@clock")
    families = [FAMILIES[a] for v in opts.get("RestrictAddressFamilies", []) for a in v.split()]
    if allow or deny or families:
        f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(1) if allow else seccomp.ALLOW)
        for call in sorted(allow - deny - ({"socket"} if families and allow else set())):
            try:
                f.add_rule(seccomp.ALLOW, call)
            except (RuntimeError, ValueError):
                pass  # a name this libseccomp or architecture does not know
        for call in sorted(deny) if not allow else []:
            try:
                f.add_rule(seccomp.ERRNO(1), call)
            except (RuntimeError, ValueError):
                pass
        for fam in families if allow else []:
            f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, fam))
        f.load()
    os.execvp(spec["argv"][0], spec["argv"])


if __name__ == "__main__":
    _sandbox_exec(json.loads(sys.argv[1]))
