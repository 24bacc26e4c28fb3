"""One direction's delay histogram for Prometheus, on top of the shared DelayStats."""

import bisect
import math

from prometheus_client.utils import floatToGoString

from ..common.delaystats import DelayStats


class DelayBuckets:
    """A bucket layout (upper bounds in seconds, ending with +Inf), shared by sessions."""

    def __init__(self, bounds_seconds):
        if not bounds_seconds or bounds_seconds[-1] != math.inf:
            raise ValueError("bucket bounds must end with +Inf")
        self.bounds_ns = [b * 1e9 for b in bounds_seconds[:-1]]
        self.le = [floatToGoString(b) for b in bounds_seconds]

    def __len__(self):
        return len(self.le)


class DelayHistogram(DelayStats):
    """Signed delays of one direction of one session, as two Prometheus histograms.

    A histogram's _sum must never go down (rate() would read a decrease as a
    counter reset), and a one-way delay between two clocks that disagree is
    negative. So delays >= 0 go into one histogram, and the magnitudes |d| of
    delays < 0 into a second one with the same buckets: both sums only grow,
    and the signed mean is (sum_pos - sum_neg) / (count_pos + count_neg)
    (docs/metrics.md). Buckets count a value into the first bound it does not
    exceed (Prometheus `le`). Last value and jitter are DelayStats' (signed).
    """

    __slots__ = ("bounds_ns", "counts", "pos_sum_ns", "neg_counts", "neg_sum_ns")

    def __init__(self, buckets):
        super().__init__()
        self.bounds_ns = buckets.bounds_ns
        self.counts = [0] * len(buckets)        # delays >= 0
        self.pos_sum_ns = 0
        self.neg_counts = [0] * len(buckets)    # |d| of delays < 0
        self.neg_sum_ns = 0

    def observe(self, delay_ns):
        self.add(delay_ns)
        if delay_ns >= 0:
            self.counts[bisect.bisect_left(self.bounds_ns, delay_ns)] += 1
            self.pos_sum_ns += delay_ns
        else:
            self.neg_counts[bisect.bisect_left(self.bounds_ns, -delay_ns)] += 1
            self.neg_sum_ns -= delay_ns

    @property
    def negative(self):
        """How many delays were below zero."""
        return self.count - sum(self.counts)
