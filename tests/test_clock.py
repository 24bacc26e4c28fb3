"""Timestamps and the clock: Error Estimate encoding, NTP/PTP conversions, adjtimex.

The adjtimex read is checked against the kernel two ways: a tiny C program
(compiled here with the system's cc against glibc's <sys/timex.h>) reads the
same struct timex, and CLOCK_TAI - CLOCK_REALTIME gives the TAI offset.
"""

import random
import shutil
import subprocess
import time

import pytest

from stamp_bpf.common import clock, wire

# The fast layer: no root, no namespaces, no BPF.
pytestmark = pytest.mark.unit

NSEC = 1_000_000_000
# 2036-02-07T06:28:16Z: NTP era 0 ends, the 32-bit seconds wrap to 0.
ERA1_UNIX = (1 << 32) - wire.NTP_UNIX_OFFSET


# -- Error Estimate (RFC 4656 4.1.2, RFC 8186 2.3) ---------------------------------

ERRORS = [0.0, -1.0, 1e-12, 2.0 ** -32, 1e-9, 232e-12, 1e-6, 12.5e-6, 1e-3, 0.5, 1.0,
          16.0, 1000.0, 2.0 ** 31]


@pytest.mark.parametrize("error_s", ERRORS)
def test_error_estimate_rounds_up_with_smallest_scale_and_nonzero_multiplier(error_s):
    ee = wire.encode_error_estimate(error_s, False, False)
    scale, mult = (ee >> 8) & 0x3F, ee & 0xFF
    assert mult != 0, f"Error Estimate {ee:#06x} for {error_s} s has multiplier 0 (RFC 4656 forbids it)"
    _, _, decoded = wire.decode_error_estimate(ee)
    assert decoded >= error_s, f"{error_s} s encoded as {decoded} s: an estimate must not be smaller"
    if scale > 0:
        assert mult > 127, f"{error_s} s: scale {scale} with multiplier {mult} is not the smallest scale"
        assert decoded < error_s * (1 + 1 / 128) + 2.0 ** (scale - 32), \
            f"{error_s} s encoded as {decoded} s: rounded up by more than one multiplier step"


def test_error_estimate_known_values():
    # 16 s, what an unsynchronised kernel reports: 128 * 2^(29-32) s.
    assert wire.encode_error_estimate(16.0, False, False) == 0x1D80
    # 1 us = 4294.97 units of 2^-32 s: scale 5 (32 units), multiplier ceil(134.2) = 135.
    assert wire.encode_error_estimate(1e-6, False, False) == 0x0587
    # Nothing to report: the smallest non-zero estimate, 2^-32 s.
    assert wire.encode_error_estimate(0.0, False, False) == 0x0001


@pytest.mark.parametrize("synced, ptp, bits", [
    (False, False, 0x0000), (True, False, 0x8000), (False, True, 0x4000), (True, True, 0xC000)])
def test_error_estimate_s_and_z_bits(synced, ptp, bits):
    ee = wire.encode_error_estimate(1e-3, synced, ptp)
    assert ee & 0xC000 == bits, f"synchronised={synced} ptp={ptp} gave S/Z bits {ee & 0xC000:#06x}"
    assert wire.decode_error_estimate(ee)[:2] == (synced, ptp)
    assert ee & 0x3FFF == wire.encode_error_estimate(1e-3, False, False), "S/Z changed scale or multiplier"


def test_clock_state_error_estimate_uses_its_own_fields():
    st = clock.ClockState(True, 1e-6, 37)
    assert st.error_estimate(ptp=True) == 0xC587
    assert clock.ClockState(False, 16.0, 0).error_estimate(ptp=False) == 0x1D80


# -- NTP and PTP timestamps ----------------------------------------------------------

def test_ntp_anchors():
    assert wire.ns_to_ntp(0) == (wire.NTP_UNIX_OFFSET, 0), "the Unix epoch is NTP second 2208988800"
    assert wire.ns_to_ntp(NSEC // 2) == (wire.NTP_UNIX_OFFSET, 1 << 31), "half a second is 2^31"
    assert wire.ntp_to_ns(wire.NTP_UNIX_OFFSET, 1 << 31) == NSEC // 2


@pytest.mark.parametrize("start, end", [
    (0, ERA1_UNIX),                              # 1970 .. 2036, era 0
    (ERA1_UNIX, ERA1_UNIX + (1 << 31) - 1),      # 2036 .. 2104, era 1
], ids=["era0", "era1"])
def test_ntp_round_trip_is_exact_to_the_nanosecond(start, end):
    rnd = random.Random(8762)
    for _ in range(20000):
        ns = rnd.randrange(start * NSEC, end * NSEC)
        sec, frac = wire.ns_to_ntp(ns)
        assert 0 <= sec < 1 << 32 and 0 <= frac < 1 << 32
        assert wire.ntp_to_ns(sec, frac) == ns, f"{ns} -> NTP ({sec}, {frac}) -> {wire.ntp_to_ns(sec, frac)}"


def test_ntp_era_boundary():
    last = ERA1_UNIX * NSEC - 1
    assert wire.ns_to_ntp(last)[0] == 0xFFFFFFFF
    assert wire.ns_to_ntp(last + 1) == (0, 0), "2036-02-07T06:28:16Z is NTP second 0 of era 1"
    assert wire.ntp_to_ns(0, 0) == ERA1_UNIX * NSEC, "NTP second 0 is read as 2036, not 1900"
    assert wire.ntp_to_ns(0xFFFFFFFF, 0) == (ERA1_UNIX - 1) * NSEC
    now = time.time_ns()
    assert abs(wire.ntp_to_ns(*wire.ns_to_ntp(now)) - now) < 1


@pytest.mark.parametrize("tai", [0, 37])
def test_ptp_round_trip_and_tai(tai):
    rnd = random.Random(tai)
    for _ in range(20000):
        ns = rnd.randrange(0, ERA1_UNIX * NSEC)
        sec, nsec = wire.ns_to_ptp(ns, tai)
        assert sec == ns // NSEC + tai and nsec == ns % NSEC, "PTP counts TAI seconds since 1970"
        assert wire.ptp_to_ns(sec, nsec, tai) == ns


def test_ts_to_ns_follows_the_z_bit():
    ns = 1_795_000_000_123_456_789
    assert wire.ts_to_ns(wire.ns_to_ntp(ns), 0x1D80, 37) == ns
    assert wire.ts_to_ns(wire.ns_to_ptp(ns, 37), 0x1D80 | wire.EE_Z, 37) == ns
    assert wire.ts_to_ns(wire.ns_to_ptp(ns, 37), 0x1D80, 37) != ns, "Z=0 must not read PTP"


# -- adjtimex ----------------------------------------------------------------------------

ADJTIMEX_C = r"""
#include <stdio.h>
#include <sys/timex.h>
int main(void) {
    struct timex tx = {0};
    int state = adjtimex(&tx);
    printf("%d %d %ld %d\n", state, tx.status, tx.esterror, tx.tai);
    return state < 0;
}
"""


@pytest.fixture(scope="module")
def c_adjtimex(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the independent adjtimex reader")
    d = tmp_path_factory.mktemp("adjtimex")
    (d / "a.c").write_text(ADJTIMEX_C)
    subprocess.run([cc, "-O0", "-o", str(d / "a"), str(d / "a.c")], check=True)

    def read():
        state, status, esterror, tai = map(int, subprocess.run(
            [str(d / "a")], capture_output=True, text=True, check=True).stdout.split())
        return state, status, esterror, tai
    return read


def test_adjtimex_read_matches_the_c_library(c_adjtimex):
    state, status, esterror, tai = c_adjtimex()
    st = clock.read()
    assert st.tai_offset_s == tai, f"clock.read() says TAI-UTC {st.tai_offset_s} s, C says {tai} s"
    assert st.error_s == pytest.approx(esterror / 1e6, abs=1e-3), \
        f"clock.read() says error {st.error_s} s, C says esterror {esterror} us"
    synced = not (status & clock.STA_UNSYNC) and state != clock.TIME_ERROR
    assert st.synchronized == synced, f"clock.read() synchronised={st.synchronized}, C status {status:#x} state {state}"


def test_tai_offset_is_what_clock_tai_shows():
    for _ in range(3):
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        tai = time.clock_gettime_ns(time.CLOCK_TAI)
        real2 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        if real2 - real < 1_000_000:
            break
    kernel = round((tai - (real + real2) / 2) / NSEC)
    assert clock.read().tai_offset_s == kernel, (
        f"adjtimex TAI offset {clock.read().tai_offset_s} s, but CLOCK_TAI - CLOCK_REALTIME is {kernel} s")
