"""Compile and load stamp-bpf's BPF programs with bcc.

bcc only treats functions of its main source as programs, so the program
files of one service (and the maps header they share) are joined into one
source, compiled once. The C stays in files under bpf/, shipped as package
data; knobs go in as -D cflags. `source()` returns exactly what is compiled,
for --ebpf.
"""

import ctypes
import ctypes.util
import os
import platform
from importlib import resources

from . import bpfperm


class BpfSetupError(Exception):
    """bcc or the kernel headers are missing; the message says how to fix it."""


def bpf_dir():
    """The folder holding the C sources (package data of stamp_bpf.bpf)."""
    return str(resources.files("stamp_bpf.bpf"))


FALLBACK_ENV = "STAMP_FALLBACK_KERNEL_HEADERS"   # set by the image (docs/image.md)


def _has_headers(path):
    return os.path.isfile(os.path.join(path, "include", "linux", "kconfig.h"))


def kernel_headers():
    """Where bcc will find kernel headers: (where from, resolved path).

    In order: $BCC_KERNEL_SOURCE (bcc's own override); the node's
    /lib/modules/$(uname -r)/build; the image's merged fallback tree named by
    $STAMP_FALLBACK_KERNEL_HEADERS, which is then handed to bcc as
    BCC_KERNEL_SOURCE.
    """
    override = os.environ.get("BCC_KERNEL_SOURCE")
    if override:
        if not _has_headers(override):
            raise BpfSetupError(
                f"BCC_KERNEL_SOURCE={override} has no include/linux/kconfig.h: point it "
                "at a complete kernel header tree, or unset it")
        return "BCC_KERNEL_SOURCE", os.path.realpath(override)
    build = f"/lib/modules/{platform.release()}/build"
    if os.path.isdir(os.path.join(build, "include")):
        return build, os.path.realpath(build)
    fallback = os.environ.get(FALLBACK_ENV)
    if fallback and _has_headers(fallback):
        os.environ["BCC_KERNEL_SOURCE"] = fallback
        return "image fallback", os.path.realpath(fallback)
    raise BpfSetupError(
        f"bcc needs kernel headers at {build} and there are none: run "
        "scripts/setup.sh (it links Debian's linux-headers-amd64 there) or "
        f"install linux-headers-{platform.release()}")


def source(files):
    """The one C source bcc compiles: the given files of bpf/, joined."""
    parts = []
    for name in files:
        with open(os.path.join(bpf_dir(), name)) as f:
            parts.append(f"/* ---- {name} ---- */\n{f.read()}")
    return "\n".join(parts)


def cflags(defines):
    return [f"-I{bpf_dir()}"] + [f"-D{k}={v}" for k, v in sorted(defines.items())]


def load(files, defines, programs, debug=False):
    """Compile `files` with `defines` and load each of `programs` as SCHED_CLS.

    Returns (bpf, {name: function}). With debug, bcc prints the verifier log.
    """
    try:
        from bcc import BPF, DEBUG_BPF
    except ImportError as e:
        raise BpfSetupError(
            "cannot import bcc: it comes from Debian's python3-bpfcc, not PyPI; run "
            "scripts/setup.sh, or make a venv from /usr/bin/python3 with "
            f"--system-site-packages ({e})") from None
    kernel_headers()
    # Refused before the compile: one line naming why, not bcc's compile error.
    refused = bpfperm.refusal()
    if refused:
        raise BpfSetupError(refused)
    debug_flags = DEBUG_BPF if debug else 0
    try:
        bpf = BPF(text=source(files).encode(), cflags=cflags(defines), debug=debug_flags)
        funcs = {name: bpf.load_func(name, BPF.SCHED_CLS) for name in programs}
    except Exception as e:
        refused = bpfperm.refusal(failed=True)
        raise BpfSetupError(refused or f"loading BPF programs {', '.join(programs)} failed: {e}") from None
    # The compile leaves ~120 MB of freed heap that glibc keeps; give it back.
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    return bpf, funcs

