"""One stdout shared by the supervisor and its children, a whole line at a time.

Each child's stdout and stderr are read by a thread of their own, line by line,
and every line is written unchanged under one lock, so lines of different
children never mix mid-line and `stamp-bpf run | jq` sees one JSON object per
line. The supervisor's own structlog events go through the same lock.
"""

import collections
import sys
import threading


class LineOutput:
    """Writes whole lines to a binary stream, one writer at a time."""

    def __init__(self, stream=None, tty=None):
        self._stream = stream or sys.stdout.buffer
        self._tty = self._stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._broken = False

    def isatty(self):
        return self._tty

    def write_line(self, line):
        """Write one line (bytes); a missing final newline is added."""
        if not line.endswith(b"\n"):
            line += b"\n"
        with self._lock:
            if self._broken:
                return
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                # The reader went away (`| head`); supervision goes on without output.
                self._broken = True

    def text(self):
        """A text stream for structlog's PrintLogger that emits only whole lines."""
        return _TextLines(self)


class _TextLines:
    """print() writes the message and the newline separately: join them first."""

    def __init__(self, out):
        self._out = out
        self._local = threading.local()

    def isatty(self):
        return self._out.isatty()

    def write(self, s):
        buf = getattr(self._local, "buf", "") + s
        *lines, self._local.buf = buf.split("\n")
        for line in lines:
            self._out.write_line(line.encode("utf-8", "replace") + b"\n")
        return len(s)

    def flush(self):
        pass


class Pump:
    """Copies one child's pipe to a LineOutput and keeps the last few lines."""

    def __init__(self, pipe, out, keep=3):
        self.last = collections.deque(maxlen=keep)
        self._pipe, self._out = pipe, out
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        with self._pipe:
            for line in iter(self._pipe.readline, b""):
                self._out.write_line(line)
                self.last.append(line.rstrip(b"\n").decode("utf-8", "replace"))

    def join(self, timeout):
        """Wait until the pipe closed (the child and anything it forked are gone)."""
        self._thread.join(timeout)
