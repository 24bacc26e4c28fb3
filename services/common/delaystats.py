"""Running delay statistics: min, avg, max, last and RFC 3550 jitter.

Delays are signed integers in nanoseconds: a one-way delay between two
clocks that disagree can be negative, and stays negative here.

Jitter is RFC 3550 section 6.4.1's interarrival jitter: for consecutive
packets (in arrival order), D = delay_i - delay_(i-1) and
J += (|D| - J) / 16.
"""


class DelayStats:
    __slots__ = ("count", "total", "min", "max", "last", "_jitter")

    def __init__(self):
        self.count = 0
        self.total = 0
        self.min = None
        self.max = None
        self.last = None
        self._jitter = 0.0

    def add(self, delay_ns):
        if self.last is not None:
            self._jitter += (abs(delay_ns - self.last) - self._jitter) / 16
        self.count += 1
        self.total += delay_ns
        self.last = delay_ns
        if self.min is None or delay_ns < self.min:
            self.min = delay_ns
        if self.max is None or delay_ns > self.max:
            self.max = delay_ns

    @property
    def avg(self):
        return round(self.total / self.count) if self.count else None

    @property
    def jitter(self):
        return round(self._jitter) if self.count else None

    def summary(self):
        """{min_ns, avg_ns, max_ns, last_ns, jitter_ns}: integers, None before any packet."""
        return {"min_ns": self.min, "avg_ns": self.avg, "max_ns": self.max,
                "last_ns": self.last, "jitter_ns": self.jitter}
