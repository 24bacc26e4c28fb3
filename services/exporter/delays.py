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
    """Signed delays of one direction of one session, in arrival order.

    Buckets count a delay d into the first bound with d <= bound (Prometheus `le`),
    so negative delays land in the first bucket. Last value and jitter are
    DelayStats'.
    """

    __slots__ = ("bounds_ns", "counts", "negative")

    def __init__(self, buckets):
        super().__init__()
        self.bounds_ns = buckets.bounds_ns
        self.counts = [0] * len(buckets)
        self.negative = 0

    def observe(self, delay_ns):
        self.add(delay_ns)
        self.counts[bisect.bisect_left(self.bounds_ns, delay_ns)] += 1
        if delay_ns < 0:
            self.negative += 1
