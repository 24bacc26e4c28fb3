"""The one meaning of `--hist BINS FLOOR CEIL`, shared by sender, reflector and exporter.

FLOOR and CEIL are ten times the base-10 logarithm of a delay in nanoseconds
(25 -> 10**2.5 ns = 316 ns, 75 -> 10**7.5 ns = 31.6 ms). BINS counts every bin:
bin 0 is the underflow (below FLOOR, negative delays included), bin BINS-1 the
overflow (at or above CEIL), and the BINS-2 bins between are log-spaced, each
from its lower edge (included) to its upper edge (excluded). The BINS-1 edges
are the exporter's Prometheus bucket bounds, plus +Inf.
"""

import bisect
import math
from dataclasses import dataclass

DEFAULT = (28, 25.0, 75.0)     # the chart's histogram.bins/floor/ceiling
MAX_BINS = 1000                # keeps files and label sets small
MIN_LEVEL, MAX_LEVEL = 0.0, 110.0   # 1 ns .. 100 s


def default_buckets():
    """The exporter's buckets without --hist: 10 us doubling to about 10 s, in seconds."""
    return [10e-6 * 2 ** k for k in range(21)] + [math.inf]


def parse_buckets(text):
    """--buckets "0.001,0.005,0.02": ascending upper bounds in seconds, +Inf added.

    Raises ValueError with a sentence that says what is wrong.
    """
    try:
        bounds = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--buckets wants seconds separated by commas, e.g. 0.001,0.005,0.02; "
                         f"got {text!r}") from None
    if not bounds:
        raise ValueError("--buckets needs at least one bound, e.g. 0.001,0.005,0.02")
    if any(not math.isfinite(b) for b in bounds) or any(b >= c for b, c in zip(bounds, bounds[1:])):
        raise ValueError(f"--buckets bounds must be finite and strictly ascending, got {text!r}")
    return bounds + [math.inf]


@dataclass(frozen=True)
class HistLayout:
    """Bins defined by BINS, FLOOR and CEIL (see the module docstring)."""
    bins: int
    floor: float
    ceil: float

    def __post_init__(self):
        problem = check(self.bins, self.floor, self.ceil)
        if problem:
            raise ValueError(problem)
        step = (self.ceil - self.floor) / (self.bins - 2)
        edges = [10 ** ((self.floor + k * step) / 10) for k in range(self.bins - 1)]
        object.__setattr__(self, "edges_ns", edges)

    def edges_seconds(self):
        """The BINS-1 finite edges, in seconds, ascending."""
        return [e / 1e9 for e in self.edges_ns]

    def bin_edges_seconds(self, i):
        """(lower, upper) of bin i in seconds; -inf and +inf for the outer bins."""
        lo = -math.inf if i == 0 else self.edges_ns[i - 1] / 1e9
        hi = math.inf if i == self.bins - 1 else self.edges_ns[i] / 1e9
        return lo, hi

    def bin_index(self, delay_ns):
        """The bin (0 .. BINS-1) that holds a delay in nanoseconds."""
        return bisect.bisect_right(self.edges_ns, delay_ns)

    def prometheus_buckets(self):
        """Prometheus bucket upper bounds: the finite edges in seconds, then +Inf."""
        return self.edges_seconds() + [math.inf]


def check(bins, floor, ceil):
    """One line saying what is wrong with BINS FLOOR CEIL, or None when they are fine."""
    if not isinstance(bins, int) or isinstance(bins, bool) or not 3 <= bins <= MAX_BINS:
        return (f"--hist BINS must be an integer from 3 to {MAX_BINS} (the underflow and "
                f"overflow bins included), got {bins!r}")
    for name, v in (("FLOOR", floor), ("CEIL", ceil)):
        if not isinstance(v, (int, float)) or not MIN_LEVEL <= v <= MAX_LEVEL:
            return (f"--hist {name} must be a number from {MIN_LEVEL:g} to {MAX_LEVEL:g} "
                    f"(10*log10 of the delay in ns; 25 = 316 ns, 75 = 31.6 ms), got {v!r}")
    if floor >= ceil:
        return f"--hist FLOOR ({floor:g}) must be below CEIL ({ceil:g}), e.g. --hist 28 25 75"
    return None


def add_arguments(parser, histpath=False):
    """Add --hist BINS FLOOR CEIL (and --histpath PATH) to an argparse parser."""
    parser.add_argument(
        "--hist", nargs=3, metavar=("BINS", "FLOOR", "CEIL"),
        help="log-spaced delay histogram: BINS bins counting underflow and overflow, "
             "edges FLOOR..CEIL in 10*log10(ns) (e.g. 28 25 75 = 316 ns .. 31.6 ms)")
    if histpath:
        parser.add_argument(
            "--histpath", metavar="PATH",
            help="write the histograms to PATH (text, rewritten atomically every few "
                 "seconds); needs --hist")


def from_args(parser, args):
    """The HistLayout asked for on the command line, or None; bad values end in parser.error."""
    raw = getattr(args, "hist", None)
    if raw is None:
        if getattr(args, "histpath", None):
            parser.error("--histpath needs --hist BINS FLOOR CEIL, e.g. --hist 28 25 75")
        return None
    try:
        bins = int(raw[0])
    except ValueError:
        parser.error(f"--hist BINS must be an integer, got {raw[0]!r}; e.g. --hist 28 25 75")
    try:
        floor, ceil = float(raw[1]), float(raw[2])
    except ValueError:
        parser.error(f"--hist FLOOR and CEIL must be numbers, got {raw[1]!r} {raw[2]!r}; "
                     "e.g. --hist 28 25 75")
    problem = check(bins, floor, ceil)
    if problem:
        parser.error(problem)
    return HistLayout(bins, floor, ceil)
