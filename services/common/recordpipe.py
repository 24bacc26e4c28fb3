"""The ZeroMQ pipe that carries record messages from the services to the exporter.

The exporter binds a PULL socket (RecordPuller); each sender and reflector
connects a PUSH socket (RecordPusher). Pushing never blocks and never raises:
a message ZeroMQ cannot queue (exporter gone and the queue at its high-water
mark) is dropped and its records counted in `dropped`. ZeroMQ reconnects by
itself, so the stream resumes when the exporter comes back. Closing waits at
most half a second for queued messages, so a service's last records still go.
"""

import os

import zmq

from . import records

DEFAULT_ENDPOINT = "ipc:///run/stamp-bpf/records.sock"


def ipc_path(endpoint):
    """The filesystem path of an ipc:// endpoint, or None for other transports."""
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


class RecordPusher:
    """Non-blocking, counted sender of record messages (the services' side).

    hwm bounds the queue, in messages; `sent` and `dropped` count records.
    """

    def __init__(self, endpoint=DEFAULT_ENDPOINT, hwm=10000, log=None):
        self.endpoint = endpoint
        self.sent = 0
        self.dropped = 0
        self._log = log
        self._dropping = False
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.linger = 0
        self._sock.sndhwm = hwm
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise ValueError(f"cannot connect to {endpoint!r}: {e}") from None

    def push(self, recs):
        """Queue `recs` (one kind) as one message; False if they were dropped."""
        if not recs:
            return True
        if len(recs) > records.MAX_COUNT:
            ok = True
            for i in range(0, len(recs), records.MAX_COUNT):
                ok = self.push(recs[i:i + records.MAX_COUNT]) and ok
            return ok
        try:
            self._sock.send(records.encode(recs), zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:  # zmq.Again: queue full, or no peer and nothing queued
            self.dropped += len(recs)
            if not self._dropping and self._log is not None:
                self._log.warning("records_dropping", endpoint=self.endpoint,
                                  dropped=self.dropped, reason="exporter queue full")
            self._dropping = True
            return False
        self.sent += len(recs)
        if self._dropping and self._log is not None:
            self._log.info("records_flowing", endpoint=self.endpoint, dropped=self.dropped)
        self._dropping = False
        return True

    def close(self, linger_ms=500):
        """Close, giving queued messages (a final SessionStats, say) at most linger_ms to go.

        With the exporter down nothing can go, and close returns after linger_ms.
        """
        self._sock.close(linger=linger_ms)
        self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RecordPuller:
    """The exporter's bound PULL socket; creates the folder of an ipc:// endpoint."""

    def __init__(self, endpoint=DEFAULT_ENDPOINT, hwm=100000):
        self.endpoint = endpoint
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.linger = 0
        self._sock.rcvhwm = hwm
        # The largest valid message; ZeroMQ drops the connection of a peer that sends more.
        self._sock.maxmsgsize = records.HEADER.size + records.MAX_COUNT * max(
            k.size for k in records.KINDS.values())
        self._path, self._inode = ipc_path(endpoint), None
        try:
            if self._path and os.path.dirname(self._path):
                os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self._sock.bind(endpoint)
            self.endpoint = self._sock.last_endpoint.decode()  # tcp://host:* gets its port
            if self._path:
                self._inode = os.stat(self._path).st_ino
        except (OSError, zmq.ZMQError) as e:
            self.close()
            raise ValueError(f"cannot bind {endpoint!r}: {e}") from None
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def recv(self, timeout_ms=None):
        """The next message as bytes, or None when none came within timeout_ms."""
        if timeout_ms is not None and not self._poller.poll(timeout_ms):
            return None
        return self._sock.recv()

    def recv_nowait(self):
        """The next queued message, or None when the queue is empty."""
        try:
            return self._sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def close(self):
        """Close, and remove our ipc:// socket file (not one a successor has bound since)."""
        self._sock.close(linger=0)
        self._ctx.term()
        if self._inode is not None:
            try:
                if os.stat(self._path).st_ino == self._inode:
                    os.unlink(self._path)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
