"""Why the kernel refuses BPF to this process, in one line.

When bpf() is refused, bcc says only "Failed to compile BPF module", which sends
the user looking for a compiler problem. refusal() names the real cause from
what the kernel reports about this process:

- a missing capability: CapEff in /proc/self/status lacks CAP_BPF (or
  CAP_SYS_ADMIN) for bpf(), or CAP_NET_ADMIN (or CAP_SYS_ADMIN) for TC programs;
- seccomp: the capabilities are there, bpf() still fails with EPERM, and
  /proc/self/status says Seccomp: 2 (a filter, such as a container runtime's
  default profile, which allows bpf() only with CAP_SYS_ADMIN);
- a locked-down kernel: /sys/kernel/security/lockdown is [confidentiality];
- a user namespace (rootless containers), whose capabilities do not count for
  bpf(), or else a security module.

The probe is the smallest real bpf() call: BPF_MAP_CREATE of a one-entry array,
closed at once. Paths and the probe are parameters, so tests can pass their own.
"""

import ctypes
import os
import platform

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

SYS_BPF = {"x86_64": 321, "aarch64": 280}   # bpf()'s syscall number (asm/unistd.h)
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
SECCOMP_MODE_FILTER = 2         # /proc/<pid>/status "Seccomp:" values: 0 none, 1 strict, 2 filter
FULL_UID_MAP = ["0", "0", "4294967295"]   # the initial user namespace's uid_map

FIX_CAPS = ("run the service privileged, or grant it CAP_BPF and CAP_NET_ADMIN "
            "(chart: security.containerSecurityContext, see chart/README.md)")
FIX_SECCOMP = ("run it with seccompProfile type Unconfined (the chart's capabilities-only "
               "values do) or a profile that allows bpf()")


def probe_bpf():
    """0 when this process may create a BPF map, else the errno bpf() gave."""
    number = SYS_BPF.get(platform.machine())
    if number is None:
        return 0                # unknown here: let bcc try and report
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 5)(BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0)   # type, key, value, max_entries, flags
    fd = libc.syscall(number, BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


def _status(proc):
    fields = {}
    with open(os.path.join(proc, "status")) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _lockdown(sysfs):
    """The active lockdown mode (none, integrity, confidentiality), or None if unknown."""
    try:
        with open(os.path.join(sysfs, "kernel", "security", "lockdown")) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def _in_user_namespace(proc):
    try:
        with open(os.path.join(proc, "uid_map")) as f:
            return f.read().split() != FULL_UID_MAP
    except OSError:
        return False


def _has(caps, *bits):
    return any(caps >> b & 1 for b in bits)


def refusal(proc="/proc/self", sysfs="/sys", probe=probe_bpf, failed=False):
    """One line naming why BPF is refused to this process, or None when nothing is seen.

    Before loading, failed=False reports only what refuses every BPF program; after
    a failed load, failed=True also names a lockdown that refuses some of them.
    """
    status = _status(proc)
    caps = int(status.get("CapEff", "0"), 16)
    seccomp = int(status.get("Seccomp", "0"))
    err = probe()
    missing = []
    if not _has(caps, CAP_BPF, CAP_SYS_ADMIN):
        missing.append("CAP_BPF")
    if not _has(caps, CAP_NET_ADMIN, CAP_SYS_ADMIN):
        missing.append("CAP_NET_ADMIN")
    if missing:
        return (f"missing capability: the kernel refuses BPF to this process because its "
                f"effective capabilities (CapEff {caps:#x}) lack {' and '.join(missing)}; "
                f"{FIX_CAPS}")
    if err == 0:
        if failed and _lockdown(sysfs) == "confidentiality":
            return ("locked-down kernel: /sys/kernel/security/lockdown is [confidentiality], "
                    "which refuses BPF programs that read kernel memory; boot with "
                    "lockdown=integrity or none")
        return None
    name = os.strerror(err)
    if seccomp == SECCOMP_MODE_FILTER:
        return (f"seccomp: bpf() fails with '{name}' though the process holds CAP_BPF, and it "
                f"runs under a seccomp filter (Seccomp: 2 in /proc/self/status), such as a "
                f"container runtime's default profile; {FIX_SECCOMP}")
    if _in_user_namespace(proc):
        return (f"user namespace: bpf() fails with '{name}' because the process runs in a user "
                f"namespace (a rootless container), where capabilities do not count for "
                f"bpf(); run it in the host's user namespace as root")
    return (f"bpf() fails with '{name}' though the process holds CAP_BPF and no seccomp "
            f"filter applies: a security module (AppArmor, SELinux) refuses it; check "
            f"the kernel log")
