"""TC attachment of stamp-bpf's programs: one live owner per hook, never two.

A service attaches its egress program, then its ingress program (so the
first packet reflected at ingress already finds the egress program that
writes T3), and on exit detaches them in reverse order, only its own.

tcx (Linux 6.6+), the default where the kernel has it: each program is a
tcx link, a file descriptor of this process. The kernel detaches a link
when its holder dies, so a killed service leaves nothing, and nobody can
remove another process's links. Our programs go last in the hook's list
(after other software's tcx programs), the sender's ingress program just
before the reflector's; they all run before any clsact filter.

clsact filters, on kernels without tcx (or with STAMP_TC_ATTACH=clsact):
each service owns one priority and handle. A filter outlives its process,
so a lock (services/common/owners.py) tells a live owner from a dead one:
stale filters of ours are removed only when no process holds the lock or
the filter's program. The clsact qdisc is created when missing and never
deleted (Cilium's filters live on it too).

Either way a second service of the same role on the same interface
refuses to start and names the first.
"""

import contextlib
import errno
import os
import platform
import struct
from collections import namedtuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import bpfperm, bpfsys, owners

INGRESS = "ffff:fff2"
EGRESS = "ffff:fff3"
HOOK_NAMES = {INGRESS: "ingress", EGRESS: "egress"}
TCX_HOOKS = {INGRESS: bpfsys.TCX_INGRESS, EGRESS: bpfsys.TCX_EGRESS}
# Egress first: a test packet reflected by the ingress program leaves
# through egress at once, and must find the program that writes T3 there.
ATTACH_ORDER = (EGRESS, INGRESS)

MODE_ENV = "STAMP_TC_ATTACH"    # "tcx" or "clsact"; unset: tcx where the kernel has it

Role = namedtuple("Role", "name prio handle")
# clsact filters run in ascending priority. The sender's ingress filter must
# see its replies before the reflector's (RFC 8762 replies and a peer's test
# packets share addresses and ports in a mesh), so the sender's number is lower.
SENDER = Role("sender", 0x5300, 0x53454E44)        # handle "SEND"
REFLECTOR = Role("reflector", 0x5301, 0x5245464C)  # handle "REFL"
# With tcx the same rule is a place in the list: the sender's ingress program
# goes just before the reflector's (names as the kernel keeps them, 15 chars).
RUNS_BEFORE = {("sender", INGRESS): bpfsys.short_name("reflector_ingress")}


class TcError(Exception):
    """The TC attachment failed or was refused; the message says what and where."""


def ifindex(ipr, ifname):
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise TcError(f"no network interface named {ifname!r}; see `ip link` for the names here")
    return found[0]


def tcx_supported(index):
    """True when the kernel has tcx hooks (BPF_PROG_QUERY knows them)."""
    try:
        bpfsys.prog_query(index, bpfsys.TCX_INGRESS)
    except OSError as e:
        if e.errno == errno.EINVAL:
            return False
        # The first bpf() call a service makes: a refusal by the kernel is named
        # here (capability, seccomp, lockdown), as bpfprog.load names it.
        raise TcError(bpfperm.refusal(failed=True)
                      or f"cannot query the tcx hooks: {e}") from None
    return True


def mode(index):
    """"tcx" or "clsact", as STAMP_TC_ATTACH says or the kernel allows."""
    forced = os.environ.get(MODE_ENV, "")
    if forced not in ("", "tcx", "clsact"):
        raise TcError(f"{MODE_ENV}={forced!r}: use tcx, clsact, or leave it unset")
    if forced == "clsact":
        return "clsact"
    if tcx_supported(index):
        return "tcx"
    if forced == "tcx":
        raise TcError(f"{MODE_ENV}=tcx, but Linux {platform.release()} has no tcx "
                      "(it came in 6.6): unset it to use clsact filters")
    return "clsact"


# --- what is on a hook ---------------------------------------------------------

def tcx_programs(index, hook):
    """[(program id, link id, name or None)] on a tcx hook, in running order.
    Names need CAP_SYS_ADMIN; without it they are None."""
    out = []
    for prog, link in bpfsys.prog_query(index, TCX_HOOKS[hook]):
        try:
            name = bpfsys.prog_name(prog)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOENT):
                raise
            name = None
        out.append((prog, link, name))
    return out


def our_filters(ipr, index, role):
    """[(parent, program id)] of clsact filters with our prio and handle."""
    found = []
    for parent in (INGRESS, EGRESS):
        try:
            msgs = ipr.get_filters(index=index, parent=parent)
        except NetlinkError as e:
            if e.code in (errno.EINVAL, errno.ENOENT):   # no clsact yet
                continue
            raise
        for msg in msgs:
            if msg["info"] >> 16 == role.prio and msg["handle"] == role.handle:
                found.append((parent, _filter_prog_id(msg.get_attr("TCA_OPTIONS"))))
    return found


TCA_BPF_ID = 11     # include/uapi/linux/pkt_cls.h; pyroute2 0.9 leaves it unnamed


def _filter_prog_id(opts):
    """The program id of a bpf filter (its TCA_BPF_ID attribute), or None."""
    if opts is None:
        return None
    named = opts.get_attr("TCA_BPF_ID")
    if named is not None:
        return named
    for name, nla in opts["attrs"]:
        if name == "UNKNOWN" and nla["header"]["type"] == TCA_BPF_ID:
            return struct.unpack_from("=I", nla.data, nla.offset + 4)[0]
    return None


def _owner_text(pids_by_id, some_id):
    pids = [p for p in pids_by_id.get(some_id, []) if p != os.getpid()]
    if pids:
        return owners.describe(pids[0])
    return "a process not visible from here (another PID namespace, e.g. another pod on this node)"


def _refuse(role, ifname, owner):
    raise TcError(f"another stamp-{role.name} is attached to {ifname}: {owner}; stop it "
                  f"first, or run this one on another interface")


# --- start-up checks -----------------------------------------------------------

def _check_tcx(index, ifname, names, role):
    """Refuse when programs of ours already run on a tcx hook of `index`.
    Returns False when some program there could not be named (no CAP_SYS_ADMIN)."""
    named = True
    for hook in ATTACH_ORDER:
        listing = tcx_programs(index, hook)
        named = named and all(name is not None for _, _, name in listing)
        theirs = [(p, link) for p, link, name in listing if name in names]
        if theirs:
            prog, link = theirs[0]
            where = f"tcx link {link}, program {prog}" if link else f"program {prog}"
            _refuse(role, ifname, _owner_text(owners.holders("link_id", [link]), link)
                    + f" ({where} on {HOOK_NAMES[hook]})")
    return named


def _remove_stale_filters(ipr, index, ifname, role, log):
    """Remove clsact filters of ours that no live process owns; refuse when one does."""
    found = our_filters(ipr, index, role)
    if not found:
        return
    ids = [p for _, p in found if p]
    live = {i: [p for p in pids if p != os.getpid()]
            for i, pids in owners.holders("prog_id", ids).items()}
    for prog in ids:
        if live.get(prog):
            _refuse(role, ifname, f"{owners.describe(live[prog][0])} (clsact filter, "
                                  f"program {prog})")
    removed = 0
    for parent, _ in found:
        with contextlib.suppress(NetlinkError):
            ipr.tc("del-filter", "bpf", index, role.handle, parent=parent, prio=role.prio)
            removed += 1
    log.warning("stale_filters_removed", interface=ifname, count=removed,
                hint="a previous instance was killed without cleaning up")


# --- attach --------------------------------------------------------------------

def _attach_tcx(stack, index, ifname, programs, role, log):
    for hook in ATTACH_ORDER:
        fn = programs[hook]
        flags = rel = 0
        before = RUNS_BEFORE.get((role.name, hook))
        if before:
            rel = next((p for p, _, name in tcx_programs(index, hook) if name == before), 0)
            if rel:
                flags = bpfsys.F_BEFORE | bpfsys.F_ID
        try:
            fd = bpfsys.link_create(fn.fd, index, TCX_HOOKS[hook], flags, rel)
        except OSError as e:
            raise TcError(f"cannot attach {fn.name.decode()} to {ifname} "
                          f"{HOOK_NAMES[hook]} (tcx): {e.strerror}") from None
        link, prog = bpfsys.link_ids(fd)
        stack.callback(_close_link, fd, ifname, hook, link, log)
        log.info("attached", interface=ifname, ifindex=index, program=fn.name.decode(),
                 hook=HOOK_NAMES[hook], mode="tcx", link_id=link, prog_id=prog)


def _close_link(fd, ifname, hook, link, log):
    os.close(fd)
    log.info("detached", interface=ifname, hook=HOOK_NAMES[hook], mode="tcx", link_id=link)


def _attach_clsact(stack, ipr, index, ifname, programs, role, log):
    try:
        ipr.tc("add", "clsact", index)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise TcError(f"cannot add clsact qdisc to {ifname}: {e}") from None
    for hook in ATTACH_ORDER:
        fn = programs[hook]
        try:
            ipr.tc("add-filter", "bpf", index, role.handle, fd=fn.fd, name=fn.name,
                   parent=hook, classid=1, direct_action=True, prio=role.prio)
        except NetlinkError as e:
            raise TcError(f"cannot attach BPF filter to {ifname} {HOOK_NAMES[hook]}: {e}") from None
        prog = bpfsys.prog_id(fn.fd)
        stack.callback(_del_filter, ipr, index, ifname, hook, role, prog, log)
        log.info("attached", interface=ifname, ifindex=index, program=fn.name.decode(),
                 hook=HOOK_NAMES[hook], mode="clsact", prio=role.prio, handle=hex(role.handle),
                 prog_id=prog)


def _del_filter(ipr, index, ifname, hook, role, prog, log):
    """Remove our filter from `hook`, if it is still ours (runs our program)."""
    if (hook, prog) not in our_filters(ipr, index, role):
        log.warning("filter_replaced", interface=ifname, hook=HOOK_NAMES[hook], prog_id=prog,
                    hint="another process replaced our clsact filter; it is left alone")
        return
    with contextlib.suppress(NetlinkError):
        ipr.tc("del-filter", "bpf", index, role.handle, parent=hook, prio=role.prio)
    log.info("detached", interface=ifname, hook=HOOK_NAMES[hook], mode="clsact", prog_id=prog)


def _lock(index, role, ifname, how, log):
    """The hook's lock, held; refuses when a live process holds it.

    clsact needs it (a filter outlives its owner); with tcx it only names
    the owner sooner, so a lock directory that cannot be written is no error."""
    lock = owners.HookLock(role.name, index)
    try:
        holder = lock.acquire()
    except OSError as e:
        if how == "tcx":
            log.debug("lock_unavailable", path=lock.path, reason=str(e))
            return lock
        raise TcError(f"cannot lock {lock.path}: {e.strerror}; clsact filters need it to tell "
                      f"a live owner from a dead one: make {os.path.dirname(lock.path)} "
                      f"writable or point {owners.LOCK_DIR_ENV} at a directory that is "
                      "(tcx, Linux 6.6+, needs no lock)") from None
    if holder:
        _refuse(role, ifname, holder)
    return lock


def check_free(ifname, role, program_names):
    """Refuse (TcError) at once when a live process has this role's programs on
    `ifname`. Called before the programs are compiled, so that a second
    instance fails in a moment rather than after seconds of CPU; attached()
    checks again."""
    with IPRoute() as ipr:
        index = ifindex(ipr, ifname)
        if mode(index) == "tcx":
            _check_tcx(index, ifname, {bpfsys.short_name(n) for n in program_names}, role)
    lock = owners.HookLock(role.name, index)
    try:
        holder = lock.acquire()
    except OSError:
        return          # attached() says whether that matters
    lock.release()
    if holder:
        _refuse(role, ifname, holder)


@contextlib.contextmanager
def attached(ifname, programs, role, log):
    """Attach {EGRESS: fn, INGRESS: fn} (bcc functions) to `ifname` for the with block.

    Refuses (TcError) when another live process has this role's programs
    there; removes stale clsact filters of ours; detaches only its own.
    """
    with IPRoute() as ipr, contextlib.ExitStack() as stack:
        index = ifindex(ipr, ifname)
        how = mode(index)
        named = True
        if how == "tcx":    # the kernel's word first: it names the link too
            names = {bpfsys.short_name(fn.name.decode()) for fn in programs.values()}
            named = _check_tcx(index, ifname, names, role)
        lock = _lock(index, role, ifname, how, log)
        stack.callback(lock.release)
        if not named and lock.fd is None:
            log.warning("owner_check_limited", interface=ifname, lock=lock.path,
                        hint="without CAP_SYS_ADMIN the tcx programs on the interface cannot "
                             "be named and the lock cannot be taken: a second instance in "
                             "another PID namespace is not noticed (it still cannot detach "
                             "this one)")
        _remove_stale_filters(ipr, index, ifname, role, log)
        if how == "tcx":
            _attach_tcx(stack, index, ifname, programs, role, log)
        else:
            _attach_clsact(stack, ipr, index, ifname, programs, role, log)
        yield index
