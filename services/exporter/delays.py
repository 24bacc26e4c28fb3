"""One direction's delay statistics: Prometheus histogram, last value, RFC 3550 jitter."""

import bisect
import math

from prometheus_client.utils import floatToGoString


class DelayBuckets:
    """A bucket layout (upper bounds in seconds, ending with +Inf), shared by sessions."""

    def __init__(self, bounds_seconds):
        if not bounds_seconds or bounds_seconds[-1] != math.inf:
            raise ValueError("bucket bounds must end with +Inf")
        self.bounds_ns = [b * 1e9 for b in bounds_seconds[:-1]]
        self.le = [floatToGoString(b) for b in bounds_seconds]

    def __len__(self):
        return len(self.le)


class DelayStats:
    """Signed delays of one direction of one session, in arrival order.

    Buckets count a delay d into the first bound with d <= bound (Prometheus `le`),
    so negative delays land in the first bucket. Jitter is RFC 3550 section 6.4.1:
    J += (|D| - J) / 16, D being the difference of two consecutive delays.
    """

    __slots__ = ("buckets", "bounds_ns", "counts", "sum_ns", "count", "last_ns", "jitter_ns",
                 "negative")

    def __init__(self, buckets):
        self.buckets = buckets
        self.bounds_ns = buckets.bounds_ns
        self.counts = [0] * len(buckets)
        self.sum_ns = 0
        self.count = 0
        self.last_ns = None
        self.jitter_ns = 0.0
        self.negative = 0

    def observe(self, delay_ns):
        self.counts[bisect.bisect_left(self.bounds_ns, delay_ns)] += 1
        self.sum_ns += delay_ns
        self.count += 1
        last = self.last_ns
        if last is not None:
            self.jitter_ns += (abs(delay_ns - last) - self.jitter_ns) / 16
        self.last_ns = delay_ns
        if delay_ns < 0:
            self.negative += 1
