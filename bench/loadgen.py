#!/usr/bin/env python3
"""loadgen: send STAMP test packets as fast as asked (or as fast as it can), with sendmmsg.

USAGE: loadgen.py DST [-p PORT] [-s SPORT] [-r RATE] [-t SECONDS] [-b BATCH] [-c CPU]

One process, one CPU, one connected UDP socket: the same 44-octet Session-
Sender packet (RFC 8762, unauthenticated, Timestamp zero) goes out in
batches of BATCH per sendmmsg() call (called through ctypes), each batch due
at start + k * BATCH / RATE on the monotonic clock; RATE 0 means no pacing.
Prints one JSON line: packets sent (accepted by the kernel), seconds, and
this process's CPU seconds. Run several, one per CPU, for more.

examples:
  loadgen.py 198.18.0.2 -r 10000 -t 5     # 10,000 packets/s for 5 s
  loadgen.py 198.18.0.2 -r 0 -c 1         # flat out, pinned to CPU 1
"""

import argparse
import ctypes
import json
import os
import resource
import socket
import time

from stamp_bpf.common import wire


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(IoVec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dst", help="reflector IPv4 address")
    p.add_argument("-p", "--port", type=int, default=862, help="reflector port; default 862")
    p.add_argument("-s", "--sport", type=int, default=863, help="source port; default 863")
    p.add_argument("-r", "--rate", type=float, default=0, help="packets/s, 0 = flat out")
    p.add_argument("-t", "--seconds", type=float, default=2.0, help="how long; default 2")
    p.add_argument("-b", "--batch", type=int, default=32, help="packets per sendmmsg; default 32")
    p.add_argument("-c", "--cpu", type=int, help="pin to this CPU")
    a = p.parse_args()
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    libc = ctypes.CDLL(None, use_errno=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("0.0.0.0", a.sport))
    sock.connect((a.dst, a.port))
    payload = ctypes.create_string_buffer(wire.build_sender_packet(1), wire.BASE_LEN)
    iov = IoVec(ctypes.addressof(payload), wire.BASE_LEN)
    msgs = (MMsgHdr * a.batch)()
    for m in msgs:
        m.hdr.iov = ctypes.pointer(iov)
        m.hdr.iovlen = 1
    fd, batch = sock.fileno(), a.batch
    period = batch / a.rate if a.rate else 0.0
    sent = errors = 0
    start = time.monotonic()
    end = start + a.seconds
    k = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if period:
            due = start + k * period
            if due > now:
                if due - now > 0.0002:
                    time.sleep(due - now - 0.0001)
                continue
            k += 1
        n = libc.sendmmsg(fd, msgs, batch, 0)
        if n > 0:
            sent += n
        else:
            errors += 1
    elapsed = time.monotonic() - start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"sent": sent, "seconds": elapsed, "errors": errors,
                      "cpu_s": ru.ru_utime + ru.ru_stime}), flush=True)


if __name__ == "__main__":
    main()
