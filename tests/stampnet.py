"""Helpers for the sender/reflector tests: one lab per test module, sockets in its
namespaces, hand-made frames and RFC 1071 checksums.

bcc compiles take seconds per service start, so a test module builds one
topology and starts its services once (module-scoped fixtures built on Lab),
and its tests share them. Sockets are opened inside a namespace by switching
this thread's network namespace for the socket() call only (setns(2)); the
socket stays in that namespace afterwards.
"""

import contextlib
import ctypes
import hashlib
import os
import signal
import socket
import struct
import threading
import time

from stamp_bpf.lab import capture, packets
from stamp_bpf.lab.netns import Topology

from conftest import REFLECTOR_ARGS, STATEFUL, Service, command, require_root  # noqa: F401

CLONE_NEWNET = 0x40000000
SO_NO_CHECK = 11             # socket(7): send IPv4/UDP with checksum 0
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def netns(name):
    """Make this thread's network namespace `name` for the with block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), f"setns into {name} failed")
            try:
                yield
            finally:
                if _libc.setns(own, CLONE_NEWNET):
                    raise OSError(ctypes.get_errno(), "setns back failed")
        finally:
            os.close(target)
    finally:
        os.close(own)


def socket_in(host, family=socket.AF_INET, kind=socket.SOCK_DGRAM, proto=0):
    """A socket that lives in `host`'s namespace (a netns.Host)."""
    with netns(host.ns):
        return socket.socket(family, kind, proto)


def tcp_round_trip(client_host, server_host, server_addr, size, family=socket.AF_INET, port=5201):
    """Send `size` random octets over TCP from `client_host` to an echo server on
    `server_host` and read them back: (sha256 sent, sha256 the server got, sha256 back)."""
    data = os.urandom(size)
    server = socket_in(server_host, family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((server_addr, port))
    server.listen(1)
    server.settimeout(20)
    got = {}

    def serve():
        conn, _ = server.accept()
        conn.settimeout(20)
        buf = bytearray()
        while len(buf) < len(data):
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
        got["server"] = hashlib.sha256(buf).hexdigest()
        conn.sendall(buf)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = socket_in(client_host, family, socket.SOCK_STREAM)
    client.settimeout(20)
    try:
        client.connect((server_addr, port))
        tx = threading.Thread(target=client.sendall, args=(data,), daemon=True)
        tx.start()
        back = bytearray()
        while len(back) < len(data):
            chunk = client.recv(1 << 16)
            if not chunk:
                break
            back += chunk
        tx.join(20)
        t.join(20)
    finally:
        client.close()
        server.close()
    return hashlib.sha256(data).hexdigest(), got.get("server"), hashlib.sha256(back).hexdigest()


def udp_socket(host, port=0, addr="0.0.0.0", timeout=2.0):
    """A bound UDP socket in `host`'s namespace."""
    s = socket_in(host)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.settimeout(timeout)
    return s


def frame_socket(host):
    """An AF_PACKET socket on `host`'s interface for sending hand-made frames."""
    s = socket_in(host, socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((host.ifname, 0))
    return s


def recv_all(sock, quiet=0.3):
    """Every datagram that arrives until none has for `quiet` seconds."""
    sock.settimeout(quiet)
    out = []
    while True:
        try:
            out.append(sock.recvfrom(65535))
        except (TimeoutError, socket.timeout):
            return out


def kill(proc):
    """SIGKILL a process started by Topology.popen (it leads its own group) and reap it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


# -- checksums ----------------------------------------------------------------

def ip_header_ok(frame):
    """True when the IPv4 header of an Ethernet frame sums to zero (valid)."""
    ihl = (frame[14] & 0x0F) * 4
    return packets.rfc1071(frame[14:14 + ihl]) == 0


def udp_checksum(frame):
    """(stored, correct) UDP checksum of an Ethernet/IPv4/UDP frame."""
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    ulen = struct.unpack_from("!H", frame, udp + 4)[0]
    segment = bytearray(frame[udp:udp + ulen])
    stored = struct.unpack_from("!H", segment, 6)[0]
    segment[6:8] = b"\0\0"
    pseudo = frame[26:34] + struct.pack("!BBH", 0, 17, ulen)
    correct = packets.rfc1071(pseudo + bytes(segment)) or 0xFFFF   # 0 goes on the wire as 0xFFFF
    return stored, correct


# -- the lab ------------------------------------------------------------------

class Lab:
    """One topology for a test module and the services started in it.

    Services get their own ZeroMQ endpoint in `workdir`, so no exporter of
    another test (or of the machine) sees their records.
    """

    def __init__(self, workdir, shape="direct", **kw):
        require_root()
        self.workdir = workdir
        self.zmq = f"ipc://{workdir}/records.sock"
        (workdir / "topo").mkdir(exist_ok=True)     # the emulated shape writes its logs there
        self.topo = Topology(shape, workdir=str(workdir / "topo"), **kw)
        self.topo.__enter__()
        self._count = 0

    def start(self, host, name, *args, ready=None, timeout=90):
        """Start an installed service in `host`'s namespace; wait for its `ready` event."""
        self._count += 1
        argv = [command(name), *map(str, args), "--zmq", self.zmq]
        svc = Service(self.topo, host, argv, str(self.workdir / f"{name}-{self._count}.log"))
        if ready:
            svc.wait_event(ready, timeout)
        return svc

    def reflector(self, *args, host=None):
        """A stamp-reflector on `host` (default: the reflector host), attached."""
        host = host or self.topo.reflector
        return self.start(host, "stamp-reflector", host.ifname, *args, ready="reflecting")

    def sender(self, *args):
        """A stamp-sender on the sender host measuring the reflector host, sending."""
        s, r = self.topo.sender, self.topo.reflector
        return self.start(s, "stamp-sender", s.ifname, r.addr, *args, ready="sending")

    @contextlib.contextmanager
    def capture(self, host, name):
        """Capture `host`'s interface for the with block; yields a list filled with
        the (ts_ns, frame) pairs when the block ends."""
        path = str(self.workdir / f"{name}.pcap")
        frames = []
        with capture.start(self.topo, host, path):
            yield frames
            time.sleep(0.2)      # let the last frames reach the capture socket
        frames.extend(capture.read_pcap(path))

    def close(self):
        self.topo.__exit__(None, None, None)


def udp_frames(frames, port=862):
    """[(frame, capture.packets.Udp)] of the UDP frames to or from `port`."""
    out = []
    for _ts, frame in frames:
        udp = packets.parse_udp4(frame)
        if udp is not None and port in (udp.sport, udp.dport):
            out.append((frame, udp))
    return out


def stamp_kinds(frames):
    """{(src, 'request'|'reply', seq): copies} of the STAMP frames, port 862 to 862
    and either family, among captured `frames`."""
    seen = {}
    for _ts, frame in frames:
        u = packets.parse_udp(frame)
        if not u or u.sport != 862 or u.dport != 862 or len(u.payload) < 44:
            continue
        reply = u.payload[16:24] != bytes(8)
        seq = struct.unpack_from("!I", u.payload, 24 if reply else 0)[0]
        key = (u.src, "reply" if reply else "request", seq)
        seen[key] = seen.get(key, 0) + 1
    return seen
