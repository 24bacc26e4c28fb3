"""BPF_PROG_TEST_RUN through a plain bpf() syscall (bcc does not wrap it).

    from stamp_bpf.lab.progtest import TestRunner
    runner = TestRunner(frame)
    retval, ns_per_run = runner.run(prog_fd, repeat=3000)
    frame_after = runner.output()

The kernel runs the program `repeat` times on one skb built from `frame` and
reports the mean time per run, harness included (its loop, the program's
run context, and one clock read spread over the repeats). The packet is NOT
restored between repeats: a program that rewrites it sees its own output on
the second run. Used by tests/test_wire_layout.py and bench/kernel_cost.py.
"""

import contextlib
import ctypes
import os

SYS_BPF = 321                   # x86_64
BPF_PROG_TEST_RUN = 10


class _TestAttr(ctypes.Structure):
    """The `test` member of union bpf_attr (include/uapi/linux/bpf.h)."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class TestRunner:
    """Reusable buffers for many test runs of one frame size (keeps Python out of the way)."""

    def __init__(self, frame):
        self.frame = bytes(frame)
        self._in = ctypes.create_string_buffer(self.frame, len(self.frame))
        self._out = ctypes.create_string_buffer(len(self.frame) + 256)
        self._attr = _TestAttr()
        self._ptr = ctypes.byref(self._attr)

    def run(self, prog_fd, repeat=1):
        """(retval, mean ns per run) of `repeat` runs on a fresh copy of the frame.

        retval is the program's return as an unsigned 32-bit number
        (TC_ACT_UNSPEC, -1, reads 4294967295); signed() turns it back.
        """
        a = self._attr
        a.prog_fd = prog_fd
        a.data_in = ctypes.addressof(self._in)
        a.data_size_in = len(self.frame)
        a.data_out = ctypes.addressof(self._out)
        a.data_size_out = len(self._out)
        a.repeat = repeat
        a.duration = 0
        if _libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, self._ptr, ctypes.sizeof(a)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF_PROG_TEST_RUN on fd {prog_fd}: {os.strerror(err)}")
        return a.retval, a.duration

    def output(self):
        """The frame as the last run left it."""
        return self._out.raw[:self._attr.data_size_out]


# The TC actions the programs return (linux/pkt_cls.h), as signed() gives them.
TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT = -1, 2, 7


def run_once(prog_fd, frame):
    """Run a loaded SCHED_CLS program once on `frame`: (its return code as the C
    returned it, the frame as it left)."""
    runner = TestRunner(frame)
    retval, _ = runner.run(prog_fd)
    return signed(retval), runner.output()


def signed(retval):
    """A program's 32-bit return value as the int the C returned (-1 for TC_ACT_UNSPEC)."""
    return ctypes.c_int32(retval).value


@contextlib.contextmanager
def loaded_pair(sender_addr, reflector_addr, port=862):
    """The reflector's and the sender's programs loaded and configured by the
    services' own datapath code, for one session from `sender_addr` to
    `reflector_addr`: (reflector datapath, its programs, sender datapath, its
    programs), the programs by tc.INGRESS and tc.EGRESS. Unloaded on exit."""
    from ..common import clock
    from ..reflector import datapath as reflector_dp
    from ..sender import datapath as sender_dp

    state = clock.ClockState(False, 16.0, 37)
    r_dp, r_fns = reflector_dp.load(port, False)
    s_dp, s_fns = sender_dp.load(port, port, False)
    try:
        for dp in (r_dp, s_dp):
            dp.configure(state)
        r_dp.set_addresses([reflector_addr])
        s_dp.add_session(reflector_addr, sender_addr)
        yield r_dp, r_fns, s_dp, s_fns
    finally:
        for dp in (r_dp, s_dp):
            dp.bpf.cleanup()
