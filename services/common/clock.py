"""What the kernel says about the system clock: sync state, error, TAI offset.

Read with adjtimex(2) (ntp_adjtime with modes 0: a read, never a change).
bpf_ktime_get_tai_ns() is CLOCK_TAI; NTP timestamps are UTC, so the TAI-UTC
offset used to convert is the kernel's `tai` field, never a constant.
"""

import ctypes
import ctypes.util
import glob
import os
from typing import NamedTuple

from . import wire

STA_UNSYNC = 0x0040
TIME_ERROR = 5
# An unsynchronised kernel reports esterror 16 s (NTP_PHASE_LIMIT).


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex from <sys/timex.h> (glibc, 64-bit)."""
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


class ClockState(NamedTuple):
    synchronized: bool
    error_s: float      # the kernel's estimated error, seconds
    tai_offset_s: int   # TAI - UTC, seconds

    def error_estimate(self, ptp):
        """The Error Estimate field for timestamps taken with this clock."""
        return wire.encode_error_estimate(self.error_s, self.synchronized, ptp)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def read():
    """The clock's state now."""
    tx = _Timex()
    state = _libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"adjtimex failed ({os.strerror(err)}): the clock's sync state, error "
                           "and TAI offset cannot be read; under systemd, drop ProtectClock= "
                           "(it forbids even reading them)")
    synced = not (tx.status & STA_UNSYNC) and state != TIME_ERROR
    return ClockState(synced, tx.esterror / 1e6, tx.tai)


def ptp_evidence():
    """(ok, reason): is a PTP hardware clock disciplining the system clock?

    Checked: a /dev/ptp* device exists, a PTP daemon (ptp4l, phc2sys or
    ts2phc) is running, and adjtimex reports the clock synchronised.
    """
    devices = sorted(glob.glob("/dev/ptp*"))
    if not devices:
        return False, "no PTP hardware clock (/dev/ptp* is absent)"
    daemons = _running({"ptp4l", "phc2sys", "ts2phc"})
    if not daemons:
        return False, f"{', '.join(devices)} present but no ptp4l/phc2sys/ts2phc is running"
    if not read().synchronized:
        return False, f"{', '.join(sorted(daemons))} running but adjtimex reports the clock unsynchronised"
    return True, f"{', '.join(devices)} disciplined by {', '.join(sorted(daemons))}"


def _running(names):
    found = set()
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            with open(comm) as f:
                name = f.read().strip()
        except OSError:
            continue
        if name in names:
            found.add(name)
    return found


def tai_offset_problem(ptp, state):
    """None, or why PTP timestamps made with this clock state are wrong.

    A PTP timestamp counts TAI seconds, converted from the kernel's UTC clock
    with adjtimex's TAI offset. The kernel keeps that offset at 0 until chrony
    (`leapsectz right/UTC`), ptp4l/phc2sys or ntpd sets it; with 0, every PTP
    timestamp is 37 s (the offset since 2017) behind the truth, and a peer with
    a correct offset sees one-way delays 37 s off.
    """
    if ptp and state.tai_offset_s == 0:
        return ("--timestamp-format ptp but the kernel's TAI-UTC offset is 0 (adjtimex), so "
                "every PTP timestamp is about 37 s off; have chrony set it (leapsectz "
                "right/UTC in chrony.conf) or run phc2sys/ptp4l, which set it "
                "(docs/cli.md, 'PTP timestamps and the TAI offset')")
    return None


def check_enforce(enforce_sync, enforce_ptp):
    """None when the requested guarantees hold, else one line saying why not."""
    if enforce_ptp:
        ok, why = ptp_evidence()
        if not ok:
            return f"--enforce-ptp: {why}; run ptp4l and phc2sys against a PTP hardware clock, or drop --enforce-ptp"
    if enforce_sync and not read().synchronized:
        return ("--enforce-sync: adjtimex reports the system clock unsynchronised (STA_UNSYNC); "
                "start chrony, ntpd or ptp4l/phc2sys and wait for sync, or drop --enforce-sync")
    return None
