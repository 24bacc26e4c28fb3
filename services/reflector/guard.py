"""Whom the reflector answers: the allow-list and the per-source rate limit.

The kernel does the checking (bpf/guard.h); this module holds the settings:
the prefixes from --allow and --allow-file, checked and merged, and the
rate limit (--max-rate, --burst) as the two numbers the kernel's token bucket
needs. The same rules run in user space for --timestamping user
(SourceGuard), so both datapaths answer the same senders.

The allow file is one prefix per line (10.0.0.0/8, 2001:db8::/32, or a bare
address for a /32 or /128), '#' starts a comment. It is read at start and
again on SIGHUP or when the file changes (Kubernetes updates a mounted
ConfigMap in place and sends no signal); a file that cannot be read or holds
a bad line at a reload leaves the running list in force.
"""

import argparse
import collections
import ipaddress
import os
import time
from typing import NamedTuple

# Prefixes per family; both share bpf/guard.h's trie of GUARD_ALLOW_PREFIXES (2 x this).
MAX_PREFIXES = 1024
# The default limit, per sender address: above the 10,000 packets/s of
# stamp-sender's shortest interval (0.1 ms), so no legitimate sender reaches
# it; 100 ms of it as burst absorbs a sender's catch-up after a stall.
DEFAULT_MAX_RATE = 12000
DEFAULT_BURST = 1200
# Senders the rate limiter tracks (an LRU map). A sender pushed out starts
# again with a full burst, so the table holds many more senders than the
# reflector keeps sessions for (--max-sessions, 1024): 16,384 entries are
# about 1.5 MiB of kernel memory.
DEFAULT_RATE_SOURCES = 16384
# The longest bucket (burst / rate) the kernel's arithmetic takes: 2^62 ns,
# 146 years (bpf/guard.h guard_rate_ok()).
MAX_TOLERANCE_NS = 1 << 62


class GuardError(ValueError):
    """A bad prefix, file or limit; the text is one line saying what and how to fix it."""


def prefix(text):
    """An IPv4 or IPv6 network from 'ADDR/LEN' or a bare address; GuardError if not."""
    text = text.strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise GuardError(f"{text!r} is not an IPv4 or IPv6 prefix ({e}); write it as "
                             "10.0.0.0/8, 2001:db8::/32 or a single address") from None
        raise GuardError(f"{text!r} has bits set past its prefix length; "
                         f"did you mean {loose}?") from None


def allow_arg(text):
    """argparse type for --allow."""
    try:
        return prefix(text)
    except GuardError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def read_allow_file(path):
    """The prefixes listed in the file at `path`, in order; GuardError naming the line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise GuardError(f"--allow-file {path}: cannot read it: {e.strerror}") from None
    nets = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            nets.append(prefix(text))
        except GuardError as e:
            raise GuardError(f"--allow-file {path} line {n}: {e}") from None
    if not nets:
        raise GuardError(f"--allow-file {path}: lists no prefix; an allow-list that admits no "
                         "one is refused (to answer everyone, give no --allow-file)")
    return nets


def merge(nets):
    """The prefixes without duplicates, checked against the tries' size."""
    out = sorted(set(nets), key=lambda n: (n.version, n))
    for version in (4, 6):
        count = sum(1 for n in out if n.version == version)
        if count > MAX_PREFIXES:
            raise GuardError(f"the allow-list has {count} IPv{version} prefixes, more than the "
                             f"{MAX_PREFIXES} the kernel's table holds; merge them into "
                             "shorter prefixes")
    return out


class RateLimit(NamedTuple):
    """A token bucket of `rate` packets/s and `burst` packets, as the kernel keeps it.

    The kernel stores per sender the time its bucket would be full again
    (GCRA's theoretical arrival time, one 64-bit word it can update with one
    compare-and-swap): each packet moves it on by interval_ns, and a packet is
    over the limit when it would move it more than tolerance_ns past now.
    """
    rate: float     # packets/s; 0 = no limit
    burst: int

    @property
    def interval_ns(self):
        return round(1e9 / self.rate) if self.rate else 0

    @property
    def tolerance_ns(self):
        return (self.burst - 1) * self.interval_ns


def rate_limit(max_rate, burst):
    """RateLimit from the flags' values; GuardError with the fix if they do not make one."""
    if not max_rate >= 0 or max_rate > 1e9:
        raise GuardError(f"--max-rate {max_rate:g}: must be 0 (no limit) up to 1e9 packets/s")
    if max_rate and 0 < max_rate < 0.001:
        raise GuardError(f"--max-rate {max_rate:g}: below one packet in 1000 s; use 0.001 "
                         "or more, or 0 for no limit")
    if burst < 1:
        raise GuardError(f"--burst {burst}: must be 1 or more packets")
    limit = RateLimit(float(max_rate), int(burst))
    # bpf/guard.h's bucket arithmetic stays clear of 64-bit overflow below this.
    if limit.tolerance_ns >= MAX_TOLERANCE_NS:
        raise GuardError(f"--burst {burst} at --max-rate {max_rate:g} is a bucket of "
                         f"{limit.tolerance_ns / 1e9:.3g} s of packets, more than the "
                         f"{MAX_TOLERANCE_NS / 1e9:.3g} s the kernel keeps; give a smaller --burst")
    return limit


class FileWatch:
    """Tells when a file was replaced or rewritten (inode, size, mtime)."""

    def __init__(self, path):
        self.path = path
        self.seen = self._stat()

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def changed(self):
        now = self._stat()
        if now is None or now == self.seen:
            return False
        self.seen = now
        return True


class AllowList:
    """The prefixes in force: --allow ones (fixed) plus the file's (re-read on reload)."""

    def __init__(self, fixed, path=None):
        self.fixed = list(fixed)
        self.path = path
        self.watch = FileWatch(path) if path else None
        self.prefixes = merge(self.fixed + (read_allow_file(path) if path else []))

    @property
    def enabled(self):
        return bool(self.prefixes)

    def reload(self):
        """Re-read the file: (added, removed) prefixes; GuardError leaves the list as it was."""
        if not self.path:
            return [], []
        if self.watch:
            self.watch.changed()    # this read takes the file as it is now: no second reload
        new = merge(self.fixed + read_allow_file(self.path))
        added = [n for n in new if n not in self.prefixes]
        removed = [n for n in self.prefixes if n not in new]
        self.prefixes = new
        return added, removed

    def allows(self, addr):
        """Whether an address (ipaddress object) is in the list (no list: everyone)."""
        return not self.prefixes or any(addr in n for n in self.prefixes)


class SourceGuard:
    """The kernel's checks, for the user-space reflector: allow-list, then rate limit."""

    def __init__(self, allow, limit, sources=DEFAULT_RATE_SOURCES, clock=time.monotonic_ns):
        self.allow, self.limit, self.sources = allow, limit, sources
        self._tat = collections.OrderedDict()   # sender address -> theoretical arrival, ns
        self._clock = clock

    def allowed(self, addr):
        """Whether the allow-list admits a sender (a string address)."""
        return not self.allow.prefixes or self.allow.allows(ipaddress.ip_address(addr))

    def within_rate(self, addr):
        """Take one packet from the sender's bucket: False when it is over the limit."""
        if not self.limit.rate:
            return True
        now = self._clock()
        tat = max(self._tat.pop(addr, now), now)
        if tat - now > self.limit.tolerance_ns:
            self._tat[addr] = tat
            return False
        self._tat[addr] = tat + self.limit.interval_ns
        if len(self._tat) > self.sources:
            self._tat.popitem(last=False)
        return True
