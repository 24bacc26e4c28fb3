"""Delays: the one formula for each direction, and running statistics of them.

Delays are signed integers in nanoseconds: a one-way delay between two
clocks that disagree can be negative, and stays negative here.

    near_end    T2 - T1              forward, sender clock to reflector clock
    far_end     T4 - T3              backward, reflector clock to sender clock
    round_trip  (T4 - T1) - (T3 - T2) each clock only against itself

Jitter is RFC 3550 section 6.4.1's interarrival jitter: for consecutive
packets (in arrival order), D = delay_i - delay_(i-1) and
J += (|D| - J) / 16.
"""

DIRECTIONS = ("near_end", "far_end", "round_trip")


def near_end(t1, t2):
    """The forward one-way delay T2 - T1, ns, signed."""
    return t2 - t1


def delays(t1, t2, t3, t4):
    """(near_end, far_end, round_trip) in ns, signed, from the four timestamps."""
    return t2 - t1, t4 - t3, (t4 - t1) - (t3 - t2)


class DelayStats:
    """Running count, sum, min, max, last value and RFC 3550 jitter of one direction."""

    __slots__ = ("count", "total", "min", "max", "last", "jitter_ns")

    def __init__(self):
        self.count = 0
        self.total = 0
        self.min = None
        self.max = None
        self.last = None
        self.jitter_ns = 0.0     # float ns; rounded by .jitter

    def add(self, delay_ns):
        last = self.last
        if last is not None:
            self.jitter_ns += (abs(delay_ns - last) - self.jitter_ns) / 16
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
        return round(self.jitter_ns) if self.count else None

    def summary(self):
        """{min_ns, avg_ns, max_ns, last_ns, jitter_ns}: integers, None before any packet."""
        return {"min_ns": self.min, "avg_ns": self.avg, "max_ns": self.max,
                "last_ns": self.last, "jitter_ns": self.jitter}
