"""Test hosts in network namespaces, built up and torn down as one unit.

Two shapes, addresses from the benchmarking ranges (RFC 2544, 198.18.0.0/15;
RFC 5180, 2001:2::/48 for IPv6):

    direct:    [sender 198.18.0.1/24] <-veth-> [reflector 198.18.0.2/24]
    emulated:  [sender] <-veth-> [middle: link emulator] <-veth-> [reflector]
    ipv6=True: also sender 2001:2::1/64 and reflector 2001:2::2/64, and each
               side's link-local address (fe80::/64, from its MAC)

In `emulated`, the middle namespace has no addresses: the emulator
(stamp_bpf.lab.emulator) relays Ethernet frames between its two interfaces,
so sender and reflector share one IPv4 (and IPv6) subnet. Every veth end has
TX checksum offload, TSO, GSO and GRO off: frames carry real checksums and MTU
sizes. IPv6 is off in every namespace unless ipv6=True; then it is on with no
duplicate address detection and no router solicitations (addresses usable at
once, no noise but neighbour discovery and MLD reports).

Usage:

    from stamp_bpf.lab.netns import Topology

    with Topology("emulated", emulator_args=["--fwd-delay", "3ms", "--back-delay", "7ms"]) as topo:
        topo.run(topo.reflector, ["ip", "addr"], check=True)
        proc = topo.popen(topo.reflector, ["stamp-reflector", topo.reflector.ifname])
        topo.run(topo.sender, ["ping", "-c", "3", topo.reflector.addr], check=True)
    # every namespace, interface and process started through popen is gone here

Topology(shape="direct", *, extra_addrs=0, static_neigh=True, emulator_args=None,
         prefix=None, workdir=None, stop_timeout=3.0, ipv6=False)
    extra_addrs   N more /32 addresses on the reflector (198.19.0.1 ...), reachable
                  on-link from the sender; listed in topo.reflector.extra_addrs.
    static_neigh  permanent neighbour entries both ways (IPv4, and IPv6 global and
                  link-local with ipv6=True), so no ARP or neighbour solicitation
                  delays the first packets; False leaves them to do their work.
    ipv6          IPv6 on, with the addresses above (host.addr6, host.ll6).
    emulator_args extra arguments for the emulator (emulated shape only); it is
                  started on enter, waits until ready, logs to topo.emulator_log.
    prefix        name prefix (default "sl" + 6 random hex digits).
    workdir       folder for logs and captures (default: a temporary folder,
                  removed on exit; a given folder is kept).
    stop_timeout  seconds between SIGTERM and SIGKILL when stopping a process.
Attributes: prefix, shape, workdir, sender, reflector, middle (None when direct),
            hosts (those that exist), emulator (Popen or None), emulator_log (path
            or None; complete once stop_emulator() returned, whole lines before).
Host handles: ns, ifname, addr, prefixlen, mac, extra_addrs, addr6 and ll6 (None
              without ipv6) (middle: ifname is the sender side, peer_ifname the
              reflector side; no addresses).
Methods: run(host, argv, **kw) -> CompletedProcess; popen(host, argv, **kw) -> Popen
         (tracked, stopped on exit: SIGTERM, then SIGKILL after `stop_timeout`);
         host is a Host, a namespace name, or None (the caller's namespace);
         popen processes get their own session (Ctrl-C does not reach them) and
         stopping one also kills what is left of its process group;
         stop(proc, timeout=stop_timeout) -> returncode; start_emulator(args)
         (restarts it, new log file) / stop_emulator(); close() (idempotent).
Also: SENDER_ADDR, REFLECTOR_ADDR, SENDER_ADDR6, REFLECTOR_ADDR6, list_namespaces(prefix), wait_ready(proc, path,
timeout, what) (wait for a ready file, fail early if proc exits).
cleanup(prefix) removes the namespaces and interfaces of a crashed run;
`python -m stamp_bpf.lab.netns --cleanup PREFIX` does the same from a shell.
Every topology built first removes those whose owner process died without
closing them (reap_orphans(): SIGKILL leaves no chance to clean up).
"""

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ..common import owners

# One file per live topology, named by its prefix, holding its owner's pid and start
# time: a topology whose owner died without close() (SIGKILL, a lost machine) is
# removed by the next one built (reap_orphans()).
OWNER_DIR = "/run/stamp-bpf-lab"
# Namespaces a topology makes: its default prefix and a host suffix.
_OUR_NS = re.compile(r"sl[0-9a-f]{6}-(snd|ref|mid)$")
# A namespace of ours with no owner file (made before owner files existed) is taken
# for an orphan only when empty and this old, so a run of older code is spared.
_UNOWNED_AGE_S = 3600

SENDER_ADDR = "198.18.0.1"
REFLECTOR_ADDR = "198.18.0.2"
PREFIXLEN = 24
SENDER_ADDR6 = "2001:2::1"
REFLECTOR_ADDR6 = "2001:2::2"
PREFIXLEN6 = 64
EXTRA_NET = ipaddress.ip_network("198.19.0.0/16")
SHAPES = ("direct", "emulated")
_OFFLOADS = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]


@dataclasses.dataclass
class Host:
    """One namespace of the topology and its interface."""
    ns: str
    ifname: str
    addr: str = None
    prefixlen: int = PREFIXLEN
    mac: str = None
    extra_addrs: list = dataclasses.field(default_factory=list)
    peer_ifname: str = None      # middle ns only: the interface towards the reflector
    addr6: str = None            # ipv6=True: the global IPv6 address
    ll6: str = None              # ipv6=True: the link-local IPv6 address

    def ip(self, family=4):
        """The host's address of a family: 4 (addr) or 6 (addr6)."""
        return self.addr6 if family == 6 else self.addr


def _ip(*args, ns=None, input=None):
    """Run `ip ARGS` (in namespace `ns`); raise with ip's own message on failure."""
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    res = subprocess.run(argv, input=input, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[:12])}` failed: {res.stderr.strip()}")
    return res.stdout


# IPv6 off: no router solicitations, no DAD, nothing but IPv4 on the wire.
_IPV6_OFF = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
# IPv6 on, quiet: no DAD (addresses usable at once), no router solicitations.
_IPV6_ON = ["net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
            "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.router_solicitations=0",
            "net.ipv6.conf.default.router_solicitations=0",
            "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"]


def _link_local(host):
    """The link-local IPv6 address the kernel gave `host`'s interface."""
    deadline = time.monotonic() + 5
    while True:
        info = json.loads(_ip("-j", "-6", "addr", "show", "dev", host.ifname, "scope", "link",
                              ns=host.ns))
        for a in info[0].get("addr_info", []) if info else []:
            if a.get("family") == "inet6" and "tentative" not in a:
                return a["local"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host.ifname} in {host.ns} got no link-local IPv6 address")
        time.sleep(0.02)


def _ns_exec(ns, argv):
    return (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]


def extra_addresses(count):
    """The `count` extra reflector addresses: 198.19.0.1, ... skipping .0 and .255."""
    out = []
    for host in EXTRA_NET.hosts():
        if len(out) == count:
            break
        if host.packed[3] not in (0, 255):
            out.append(str(host))
    if len(out) < count:
        raise ValueError(f"extra_addrs={count} is more than {EXTRA_NET} holds")
    return out


def wait_ready(proc, path, timeout, what):
    """Wait until `path` exists; raise if `proc` exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after {timeout:.0f} s")
        time.sleep(0.01)


class Topology:
    """Sender and reflector namespaces (and a middle one when emulated); see the module doc."""

    def __init__(self, shape="direct", *, extra_addrs=0, static_neigh=True,
                 emulator_args=None, prefix=None, workdir=None, stop_timeout=3.0,
                 ipv6=False):
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")
        if emulator_args is not None and shape != "emulated":
            raise ValueError("emulator_args needs shape='emulated'")
        self.shape = shape
        self.prefix = prefix or "sl" + secrets.token_hex(3)
        if len(self.prefix) > 10:
            raise ValueError("prefix must be at most 10 characters (interface names <= 15)")
        self.extra_addrs = extra_addrs
        self.static_neigh = static_neigh
        self.ipv6 = ipv6
        self.emulator_args = list(emulator_args or [])
        self.stop_timeout = stop_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.sender = Host(f"{self.prefix}-snd", f"{self.prefix}s0", SENDER_ADDR)
        self.reflector = Host(f"{self.prefix}-ref", f"{self.prefix}r0", REFLECTOR_ADDR)
        self.middle = (Host(f"{self.prefix}-mid", f"{self.prefix}ms", peer_ifname=f"{self.prefix}mr")
                       if shape == "emulated" else None)
        self.emulator = None
        self.emulator_log = None
        self._procs = []
        self._namespaces = []
        self._emulator_runs = 0

    @property
    def hosts(self):
        return [h for h in (self.sender, self.middle, self.reflector) if h]

    # -- build ---------------------------------------------------------------

    def __enter__(self):
        reap_orphans()
        try:
            _claim(self.prefix)
            self._build()
            if self.shape == "emulated":
                self.start_emulator(self.emulator_args)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _build(self):
        for host in self.hosts:
            _ip("netns", "add", host.ns)
            self._namespaces.append(host.ns)
            self.run(host, ["sysctl", "-qw"] + (_IPV6_ON if self.ipv6 else _IPV6_OFF), check=True)
            _ip("link", "set", "lo", "up", ns=host.ns)
        s, r, m = self.sender, self.reflector, self.middle
        if m is None:
            self._veth(s, s.ifname, r, r.ifname)
        else:
            self._veth(s, s.ifname, m, m.ifname)
            self._veth(m, m.peer_ifname, r, r.ifname)
            for ifname in (m.ifname, m.peer_ifname):
                _ip("link", "set", ifname, "promisc", "on", "up", ns=m.ns)
        for host, a6 in ((s, SENDER_ADDR6), (r, REFLECTOR_ADDR6)):
            _ip("addr", "add", f"{host.addr}/{host.prefixlen}", "dev", host.ifname, ns=host.ns)
            if self.ipv6:
                host.addr6 = a6
                _ip("addr", "add", f"{a6}/{PREFIXLEN6}", "dev", host.ifname, "nodad", ns=host.ns)
            _ip("link", "set", host.ifname, "up", ns=host.ns)
            host.mac = json.loads(_ip("-j", "link", "show", host.ifname, ns=host.ns))[0]["address"]
        for host in (s, r) if self.ipv6 else ():
            host.ll6 = _link_local(host)        # the kernel adds it once the link has carrier
        r.extra_addrs = extra_addresses(self.extra_addrs)
        if r.extra_addrs:
            _ip("-batch", "-", ns=r.ns, input="".join(
                f"addr add {a}/32 dev {r.ifname}\n" for a in r.extra_addrs))
            _ip("route", "add", str(EXTRA_NET), "dev", s.ifname, "scope", "link", ns=s.ns)
        if self.static_neigh:
            _ip("neigh", "replace", r.addr, "lladdr", r.mac, "dev", s.ifname, "nud", "permanent", ns=s.ns)
            _ip("neigh", "replace", s.addr, "lladdr", s.mac, "dev", r.ifname,
                "nud", "permanent", ns=r.ns)
            for a, b in ((s, r), (r, s)) if self.ipv6 else ():
                for peer_addr in (b.addr6, b.ll6):
                    _ip("neigh", "replace", peer_addr, "lladdr", b.mac, "dev", a.ifname,
                        "nud", "permanent", ns=a.ns)
            if r.extra_addrs:
                _ip("-batch", "-", ns=s.ns, input="".join(
                    f"neigh replace {a} lladdr {r.mac} dev {s.ifname} nud permanent\n"
                    for a in r.extra_addrs))

    def _veth(self, a, a_if, b, b_if):
        _ip("link", "add", a_if, "netns", a.ns, "type", "veth", "peer", "name", b_if, "netns", b.ns)
        for host, ifname in ((a, a_if), (b, b_if)):
            self.run(host, ["ethtool", "-K", ifname] + _OFFLOADS, check=True, capture_output=True)

    # -- processes -----------------------------------------------------------

    def _ns(self, host):
        return host.ns if isinstance(host, Host) else host

    def run(self, host, argv, **kw):
        """subprocess.run(argv) inside `host`'s namespace.

        `host` is a Host, a namespace name, or None for the caller's own namespace.
        """
        return subprocess.run(_ns_exec(self._ns(host), argv), **kw)

    def popen(self, host, argv, **kw):
        """subprocess.Popen(argv) inside `host`'s namespace, stopped on close().

        The process gets its own session (start_new_session=True) unless the
        caller says otherwise, so stopping it reaches its children too and a
        terminal's Ctrl-C does not.
        """
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(_ns_exec(self._ns(host), argv), **kw)
        proc.lab_group = kw["start_new_session"]     # it leads a process group of its own
        self._procs.append(proc)
        return proc

    def stop(self, proc, timeout=None):
        """SIGTERM `proc`, SIGKILL after `timeout` s (default stop_timeout); its returncode.

        When it leads its own process group, whatever is left in that group
        once it exited is killed too.
        """
        self._stop([proc], timeout)
        return proc.returncode

    def _stop(self, procs, timeout=None):
        """Stop `procs` together: SIGTERM all, wait, SIGKILL the rest, reap."""
        timeout = self.stop_timeout if timeout is None else timeout
        live = [p for p in procs if p.returncode is None]
        for p in live:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in live:
            if not _exited(p, deadline):
                _signal(p, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for p in live:
            if _exited(p, deadline) and getattr(p, "lab_group", False):
                _signal(p, signal.SIGKILL)           # its group's stragglers; it is still a zombie
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"pid {p.pid} survived SIGKILL for {timeout} s") from None
        for p in procs:
            if p in self._procs:
                self._procs.remove(p)

    def start_emulator(self, args):
        """(Re)start the link emulator in the middle namespace with `args`; wait until ready."""
        if self.middle is None:
            raise RuntimeError("the direct shape has no middle namespace to emulate in")
        self.stop_emulator()
        n, self._emulator_runs = self._emulator_runs, self._emulator_runs + 1
        self.emulator_log = os.path.join(self.workdir, f"emulator{n}.jsonl")
        ready = os.path.join(self.workdir, f"emulator{n}.ready")
        with open(os.path.join(self.workdir, f"emulator{n}.stderr"), "wb") as err:
            self.emulator = self.popen(self.middle, [
                sys.executable, "-m", "stamp_bpf.lab.emulator",
                self.middle.ifname, self.middle.peer_ifname,
                "--log", self.emulator_log, "--ready-file", ready, *args],
                stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_ready(self.emulator, ready, 10, "the link emulator")
        except RuntimeError as e:
            with open(err.name) as f:
                raise RuntimeError(f"{e}: {f.read().strip()[-800:]}") from None
        os.unlink(ready)
        return self.emulator

    def stop_emulator(self):
        """Stop the emulator (its log is complete afterwards); no-op when none runs."""
        if self.emulator is not None:
            rc = self.stop(self.emulator)
            self.emulator = None
            if rc not in (0, -signal.SIGTERM):
                raise RuntimeError(f"the link emulator exited with status {rc}; see {self.workdir}")

    # -- teardown ------------------------------------------------------------

    def close(self):
        """Stop every process, delete every namespace (and so its veths). Idempotent."""
        errors = []
        try:
            self._stop(list(self._procs))
        except Exception as e:          # keep tearing down; report at the end
            errors.append(str(e))
        self.emulator = None
        for ns in reversed(self._namespaces):
            try:
                _remove_lock_files(ns)
                _delete_namespace(ns)
            except Exception as e:
                errors.append(str(e))
        self._namespaces = []
        if not errors:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(OWNER_DIR, self.prefix))
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RuntimeError("teardown incomplete: " + "; ".join(errors))


def _start_time(pid):
    """The start time of process `pid` (clock ticks since boot), None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _claim(prefix):
    os.makedirs(OWNER_DIR, exist_ok=True)
    with open(os.path.join(OWNER_DIR, prefix), "w") as f:
        f.write(f"{os.getpid()} {_start_time(os.getpid())}\n")


def _owner_alive(path):
    try:
        with open(path) as f:
            pid, start = f.read().split()
        return _start_time(int(pid)) == int(start)
    except (OSError, ValueError):
        return False


def reap_orphans():
    """Remove the topologies whose owner died without close(); return what went."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for prefix in os.listdir(OWNER_DIR):
            path = os.path.join(OWNER_DIR, prefix)
            if not _owner_alive(path):
                removed += cleanup(prefix)
                with contextlib.suppress(OSError):
                    os.unlink(path)
    owned = set(os.listdir(OWNER_DIR)) if os.path.isdir(OWNER_DIR) else set()
    for ns in list_namespaces("sl"):
        prefix = ns.split("-")[0]
        if not _OUR_NS.match(ns) or prefix in owned:
            continue
        try:
            age = time.time() - os.stat(f"/run/netns/{ns}").st_mtime
        except OSError:
            continue
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        if age > _UNOWNED_AGE_S and not pids.strip():
            removed += cleanup(prefix)
    return removed


def _remove_lock_files(ns):
    """The services' hook lock files for namespace `ns` (stamp_bpf.common.owners)."""
    try:
        ino = os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return
    for path in owners.lock_files(ino):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _signal(proc, sig):
    """Send `sig` to proc's process group when it leads one, else to proc alone."""
    try:
        if getattr(proc, "lab_group", False):
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _exited(proc, deadline):
    """Wait until `proc` has exited, without reaping it (so its pid and group stay taken)."""
    while True:
        if proc.returncode is not None:
            return True
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                return True
        except ChildProcessError:        # reaped elsewhere
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _delete_namespace(ns):
    """Kill whatever still runs in `ns`, then delete it; its veths go with it."""
    res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in res.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    res = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
    if res.returncode != 0 and ns in list_namespaces(ns):
        raise RuntimeError(f"could not delete namespace {ns}: {res.stderr.strip()}")


def list_namespaces(prefix):
    """Names of the network namespaces whose name starts with `prefix`."""
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return [n["name"] for n in json.loads(out or "[]") if n["name"].startswith(prefix)]


def cleanup(prefix):
    """Remove every namespace and root-namespace interface named `prefix`*; return their names."""
    if len(prefix) < 3:
        raise ValueError("prefix must have at least 3 characters, to spare other people's namespaces")
    removed = []
    for ns in list_namespaces(prefix):
        _remove_lock_files(ns)
        _delete_namespace(ns)
        removed.append(ns)
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True).stdout or "[]")
    for link in links:
        if link["ifname"].startswith(prefix):
            subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True)
            removed.append(link["ifname"])
    return removed


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m stamp_bpf.lab.netns",
        description="remove the namespaces and interfaces a crashed lab run left behind",
        epilog="example:\n  python -m stamp_bpf.lab.netns --cleanup sl3fa9c2   # one run\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--cleanup", metavar="PREFIX", required=True,
                        help="name prefix of the run to remove (at least 3 characters)")
    args = parser.parse_args(argv)
    try:
        removed = cleanup(args.cleanup)
    except ValueError as e:
        parser.error(str(e))
    print("\n".join(removed) if removed else f"nothing named {args.cleanup}* to remove")


if __name__ == "__main__":
    main()
