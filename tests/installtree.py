"""The folders an installed stamp_bpf runs from, for tests that sandbox a process.

A copy (`pip install .`, the image) lives in the venv; the developer's editable
install (scripts/setup.sh) imports services/ and bpf/ from the checkout. A
sandbox that hides /tmp, /root or /home (where CI may clone) must keep these
folders visible at their own paths: keep_visible() gives the shell commands.
"""

import os

import stamp_bpf


def install_dirs(venv):
    """The venv, plus the checkout when the install is editable; none inside another."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(stamp_bpf.__file__)))
    dirs = {os.path.abspath(venv), pkg_parent}
    return sorted(d for d in dirs
                  if not any(d != o and d.startswith(o.rstrip("/") + "/") for o in dirs))


def park(dirs, spare="/mnt"):
    """Commands (argv lists) run BEFORE the sandbox's mounts: bind each dir under `spare`."""
    cmds = [["mount", "-t", "tmpfs", "tmpfs", spare]]
    for i, d in enumerate(dirs):
        cmds += [["mkdir", f"{spare}/{i}"], ["mount", "--bind", d, f"{spare}/{i}"]]
    return cmds


def restore(dirs, spare="/mnt"):
    """Shell snippets run AFTER them: put each hidden dir back at its own path."""
    return [f'{{ [ -d "{d}" ] || {{ mkdir -p "{d}" && mount --bind {spare}/{i} "{d}"; }}; }}'
            for i, d in enumerate(dirs)]
