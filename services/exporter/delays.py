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
    """Signed delays of one direction of one session: a histogram of those >= 0 and
    the sum and count of the magnitudes of those < 0.

    A histogram's _sum must never go down (rate() would read a decrease as a
    counter reset), and a one-way delay between two clocks that disagree is
    negative. So delays >= 0 go into the histogram (buckets, sum, count), and
    the magnitudes |d| of delays < 0 into a sum and a count of their own (a
    summary without quantiles: two series per direction where a second
    histogram would cost as many as the first). Both sums only grow, and the
    signed mean is (sum_pos - sum_neg) / (count_pos + count_neg)
    (docs/metrics.md). Buckets count a value into the first bound it does not
    exceed (Prometheus `le`). Last value and jitter are DelayStats' (signed).
    """

    __slots__ = ("bounds_ns", "counts", "pos_sum_ns", "negative", "neg_sum_ns")

    def __init__(self, buckets):
        super().__init__()
        self.bounds_ns = buckets.bounds_ns
        self.counts = [0] * len(buckets)        # delays >= 0
        self.pos_sum_ns = 0
        self.negative = 0                       # delays < 0: how many, and the sum of |d|
        self.neg_sum_ns = 0

    def observe(self, delay_ns):
        self.add(delay_ns)
        if delay_ns >= 0:
            self.counts[bisect.bisect_left(self.bounds_ns, delay_ns)] += 1
            self.pos_sum_ns += delay_ns
        else:
            self.negative += 1
            self.neg_sum_ns -= delay_ns
