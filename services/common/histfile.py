"""The histogram file (--histpath): per session and direction, each bin's edges and count.

Text, tab-separated, one line per bin, documented in docs/metrics.md:

    # stamp-bpf histogram format 1
    # bins 28 floor 25 ceil 75 updated 2026-11-26T04:50:00.123Z
    # session	direction	lower_seconds	upper_seconds	count
    10.0.0.2:862	near_end	-inf	3.16228e-07	0
    ...

The file is rewritten whole (temporary file in the same folder, then rename),
so a reader never sees half of it. Write errors are logged once, never raised.
"""

import datetime
import os
import time

from .histogram import HistLayout

FORMAT = 1


class HistogramFile:
    """Per-session, per-direction bin counts, written to `path` every `interval` s."""

    def __init__(self, path, bins, floor, ceil, interval=2.0, log=None):
        self.path = path
        self.layout = HistLayout(bins, floor, ceil)
        self.interval = interval
        self._log = log
        self._counts = {}          # (session_label, direction) -> [count per bin]
        self._next_flush = time.monotonic() + interval
        self._failing = False

    def observe(self, session_label, direction, delay_ns):
        """Count one delay (ns, signed) for a session and direction."""
        counts = self._counts.get((session_label, direction))
        if counts is None:
            counts = self._counts[(session_label, direction)] = [0] * self.layout.bins
        counts[self.layout.bin_index(delay_ns)] += 1

    def maybe_flush(self):
        """Write the file if `interval` has passed since the last write."""
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self):
        """Write the file now (atomically); True when it was written."""
        self._next_flush = time.monotonic() + self.interval
        tmp = f"{self.path}.tmp.{os.getpid()}"
        try:
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(self.render())
            os.replace(tmp, self.path)
        except OSError as e:
            if not self._failing and self._log is not None:
                self._log.error("histogram_write_failed", path=self.path, error=str(e))
            self._failing = True
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        if self._failing and self._log is not None:
            self._log.info("histogram_write_recovered", path=self.path)
        self._failing = False
        return True

    def render(self):
        """The file's text."""
        lay = self.layout
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        lines = [f"# stamp-bpf histogram format {FORMAT}",
                 f"# bins {lay.bins} floor {lay.floor:g} ceil {lay.ceil:g} updated "
                 f"{now.replace('+00:00', 'Z')}",
                 "# session\tdirection\tlower_seconds\tupper_seconds\tcount"]
        edges = [lay.bin_edges_seconds(i) for i in range(lay.bins)]
        for (label, direction), counts in sorted(self._counts.items()):
            for (lo, hi), n in zip(edges, counts):
                lines.append(f"{label}\t{direction}\t{lo:.6g}\t{hi:.6g}\t{n}")
        return "\n".join(lines) + "\n"
