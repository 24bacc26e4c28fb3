"""The JSON-lines log of a service process, for tests, benchmarks and the demo.

    events(path)                         every JSON event logged so far
    wait_event(proc, path, name, what)   the last `name` event, once logged

wait_event raises RuntimeError when the process exits first or the timeout
passes; the message carries the log's tail.
"""

import json
import time


def events(path, name=None):
    """The JSON events in the log file at `path` (only `name` ones if given)."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if name is None or e.get("event") == name:
                out.append(e)
    return out


def tail(path, n=3000):
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def wait_event(proc, path, name, what, timeout=120):
    """The last `name` event of `proc`'s log at `path`, waiting up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(path, name)
        if found:
            return found[-1]
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before logging "
                               f"{name!r}:\n{tail(path)}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not log {name!r} within {timeout} s:\n{tail(path)}")
