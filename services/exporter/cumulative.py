"""Cumulative counts from a source that may restart, exported so they never go down."""

from operator import add, lt


class CumulativeCounts:
    """The latest counts a source reports, plus offsets carried over its restarts.

    A source (a sender or reflector session, a service process, a supervisor)
    reports counts that never decrease while it runs, and start again from 0 when
    it restarts. So a report with any count below the previous report's means a
    restart: the previous counts are added to the offsets, and totals() keeps
    increasing, even when the new process has counted past the old values by the
    next scrape (a reset Prometheus could not see).
    """

    __slots__ = ("names", "last", "offsets")

    def __init__(self, names):
        self.names = names      # of the counts, for the log
        self.last = self.offsets = (0,) * len(names)

    def update(self, counts):
        """Take a report (a tuple of the counts); return the previous counts if the
        source restarted, else None."""
        last = self.last
        self.last = counts
        if any(map(lt, counts, last)):
            self.offsets = tuple(map(add, self.offsets, last))
            return last
        return None

    def totals(self):
        """Offsets plus the latest counts: what the counters export."""
        return tuple(map(add, self.offsets, self.last))

    def log_restart(self, log, before, **source):
        """Log the restart update() saw (`before` is what it returned), naming the source."""
        log.info("source_restarted", **source, before=dict(zip(self.names, before)),
                 now=dict(zip(self.names, self.last)), note="its counts started again from "
                 "0; the exported counters continue from the previous values")
