"""The reflector's allow-list as a file: written from reflector.allowedSources.

The supervisor passes `--allow-file reflector.allowFile` to stamp-reflector
rather than one --allow per prefix, so that a change of the list on reload is
a new file and a SIGHUP to the running reflector, which updates its kernel
tables in place: no restart, no session dropped (docs/supervisor.md).
"""

import os

HEADER = "# Written by stamp-bpf from reflector.allowedSources; rewritten on reload.\n"


def text(cfg):
    return HEADER + "".join(f"{p}\n" for p in cfg["reflector.allowedSources"])


def write(cfg):
    """Write the file if the reflector needs one; True when its content changed.

    The new content goes to a temporary file renamed over the old one, so the
    reflector never reads half a list.
    """
    if not (cfg["reflector.enabled"] and cfg["reflector.allowedSources"]):
        return False
    path, new = cfg["reflector.allowFile"], text(cfg)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == new:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)
    return True
