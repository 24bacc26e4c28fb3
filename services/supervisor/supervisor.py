"""The supervision loop: start the children in order, restart crashed ones with
backoff, give up on a child that keeps crashing, reload on SIGHUP, stop in order.

One thread waits on a selector for three things: a child's pidfd (it exited),
the signal wakeup pipe (SIGTERM, SIGINT, SIGHUP), and the next timer (a
scheduled restart or the periodic stats record). Output is copied by the
children's pump threads (output.py) and never waits on this loop.
"""

import os
import selectors
import signal
import socket
import sys
import time

from ..common import records
from ..common.recordpipe import ipc_path
from . import allowfile
from .child import Child, describe_status
from .commands import START_ORDER, STOP_ORDER
from .config import ConfigError

_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Supervisor:
    """Runs `commands` ({name: argv}) under the settings of `cfg` (see config.py).

    reload() -> (cfg, commands) re-reads the configuration on SIGHUP;
    make_pusher(endpoint) -> RecordPusher carries the supervisor's stats records.
    """

    def __init__(self, cfg, commands, out, log, reload=None, make_pusher=None):
        self.cfg = cfg
        self.children = {n: _child(n, argv) for n, argv in commands.items()}
        self._out, self._log = out, log
        self._reload, self._make_pusher = reload, make_pusher
        self._pusher = make_pusher(cfg["zmq.endpoint"]) if make_pusher else None
        self._records = {"records_sent": 0, "records_dropped": 0}  # of closed pushers
        self._signals = []
        self._exit_code = None
        self._sel = selectors.DefaultSelector()
        self._next_stats = 0.0
        self._waiting = []       # children to start once the exporter is ready
        self._ready_by = 0.0

    # -- the loop ---------------------------------------------------------------

    def run(self):
        """Supervise until SIGTERM/SIGINT (exit code 0) or a child gives up (1)."""
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(rfd, selectors.EVENT_READ, None)
        old = {s: signal.signal(s, self._on_signal) for s in _HANDLED}
        old_fd = signal.set_wakeup_fd(wfd)
        self._log.info("supervisor_started", children=list(self.children), pid=os.getpid())
        try:
            self._write_allow_file()
            self._start(self.children["exporter"])
            self._waiting = [n for n in START_ORDER[1:] if n in self.children]
            self._ready_by = time.monotonic() + self.cfg["supervisor.readyTimeout"]
            while self._exit_code is None:
                self._step(rfd)
        finally:
            self._shutdown()
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)
            self._sel.close()
            os.close(rfd)
            os.close(wfd)
        self._log.info("supervisor_stopped", exit_code=self._exit_code, **self._records)
        return self._exit_code

    def _on_signal(self, signum, frame):
        self._signals.append(signum)

    def _step(self, rfd):
        now = time.monotonic()
        due = [c.restart_at for c in self.children.values() if c.restart_at is not None]
        timeout = max(0.0, min([self._next_stats, *due]) - now)
        if self._waiting:
            timeout = min(timeout, 0.05)
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                _drain(rfd)
            elif key.data.running:
                self._on_exit(key.data)
        while self._signals and self._exit_code is None:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                self._on_reload()
            else:
                self._log.info("signal_received", signal=signal.Signals(signum).name)
                self._exit_code = 0
        if self._waiting and self._exit_code is None:
            self._start_when_exporter_ready()
        now = time.monotonic()
        for c in list(self.children.values()):
            if self._exit_code is None and c.restart_at is not None and c.restart_at <= now:
                self._start(c, restart=True)
        if now >= self._next_stats:
            self._push_stats()

    # -- one child --------------------------------------------------------------

    def _start(self, child, restart=False):
        try:
            child.start(self._out)
        except OSError as e:
            self._log.error("child_start_failed", child=child.name, argv=child.argv,
                            error=str(e))
            self._crashed(child, {"error": str(e)}, ran=0.0)
            return
        self._sel.register(child.pidfd, selectors.EVENT_READ, child)
        if restart:
            child.restarts += 1
            self._log.warning("child_restarted", child=child.name, pid=child.pid,
                              restarts=child.restarts, crashes_in_a_row=child.streak)
        else:
            self._log.info("child_started", child=child.name, pid=child.pid, argv=child.argv)
        self._push_stats()

    def _start_when_exporter_ready(self):
        """Start the waiting children once the exporter accepts connections on
        monitoring.listen, or has exited, or supervisor.readyTimeout has passed."""
        exporter = self.children["exporter"]
        ready = exporter.running and _accepts(self.cfg["monitoring.listen"])
        if not ready and exporter.running and time.monotonic() < self._ready_by:
            return
        waited = round(time.monotonic() - exporter.started_at, 3)
        if ready:
            self._log.info("exporter_ready", pid=exporter.pid, waited_s=waited)
        else:
            self._log.warning("exporter_not_ready", waited_s=waited,
                              action="starting the services anyway; they queue their records")
        waiting, self._waiting = self._waiting, []
        for name in waiting:
            child = self.children.get(name)
            if child is not None and not child.running:
                self._start(child)

    def _reap(self, child):
        self._sel.unregister(child.pidfd)
        return child.reap()

    def _on_exit(self, child):
        pid, ran = child.pid, time.monotonic() - child.started_at
        rc = self._reap(child)
        status = describe_status(rc)
        if rc == 0:
            child.finished = True
            self._log.info("child_exited", child=child.name, pid=pid, ran_s=round(ran, 3),
                           restart="no (finished)", **status)
        else:
            self._crashed(child, dict(status, pid=pid), ran)
        self._push_stats()

    def _crashed(self, child, status, ran):
        s = self.cfg
        if ran >= s["supervisor.resetAfter"]:
            child.streak = 0
        child.streak += 1
        if child.streak > s["supervisor.maxRestarts"]:
            self._give_up(child, status)
            return
        delay = min(s["supervisor.backoffInitial"] * 2 ** (child.streak - 1),
                    s["supervisor.backoffMax"])
        child.restart_at = time.monotonic() + delay
        self._log.warning("child_exited", child=child.name, ran_s=round(ran, 3),
                          restart_in_s=round(delay, 3), crashes_in_a_row=child.streak, **status)

    def _give_up(self, child, status):
        how = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in status.items() if k != "pid")
        last = child.last_lines()
        message = (f"{child.name} crashed {child.streak} times in a row (last: {how}); "
                   f"giving up after supervisor.maxRestarts = {self.cfg['supervisor.maxRestarts']} "
                   f"restarts and stopping everything")
        self._log.error("child_gave_up", child=child.name, crashes_in_a_row=child.streak,
                        message=message, last_output=last, **status)
        print(f"stamp-bpf: {message}" + (f"; its last line: {last[-1]}" if last else ""),
              file=sys.stderr, flush=True)
        self._exit_code = 1

    def _stop(self, child):
        pid, began = child.pid, time.monotonic()
        self._log.info("child_stopping", child=child.name, pid=pid)
        self._sel.unregister(child.pidfd)
        rc, killed = child.stop(self.cfg["supervisor.stopTimeout"], self._hurry)
        log = self._log.warning if killed else self._log.info
        log("child_stopped", child=child.name, pid=pid, killed=killed,
            took_s=round(time.monotonic() - began, 3), **describe_status(rc))

    def _hurry(self):
        """A second SIGTERM/SIGINT while stopping: kill instead of waiting."""
        return any(s != signal.SIGHUP for s in self._signals)

    # -- reload and shutdown ----------------------------------------------------

    def _on_reload(self):
        self._log.info("signal_received", signal="SIGHUP")
        try:
            cfg, commands = self._reload()
        except ConfigError as e:
            self._log.error("reload_failed", error=str(e), action="kept the running configuration")
            return
        names = set(commands) | set(self.children)
        changed = [n for n in START_ORDER if n in names and
                   commands.get(n) != (self.children[n].argv if n in self.children else None)]
        self.cfg = cfg
        if self._write_allow_file() and "reflector" not in changed:
            reflector = self.children.get("reflector")
            if reflector is not None and reflector.running:
                # Same command line, new list: it re-reads the file, keeping its sessions.
                reflector.proc.send_signal(signal.SIGHUP)
                self._log.info("allow_list_sent", child="reflector", pid=reflector.pid,
                               path=cfg["reflector.allowFile"])
        restarts = {}
        for name in STOP_ORDER:
            if name in changed and name in self.children:
                child = self.children.pop(name)
                restarts[name] = child.restarts
                if child.running:
                    self._stop(child)
        for name in START_ORDER:
            if name in changed and name in commands:
                child = self.children[name] = _child(name, commands[name])
                child.restarts = restarts.get(name, 0)
                if name not in self._waiting:   # else it starts once the exporter is ready
                    self._start(child)
        self._waiting = [n for n in self._waiting if n in self.children]
        if self._pusher is not None and self._pusher.endpoint != cfg["zmq.endpoint"]:
            self._close_pusher()
            try:
                self._pusher = self._make_pusher(cfg["zmq.endpoint"])
            except ValueError as e:
                self._log.error("stats_off", error=str(e), action="no supervisor records")
            self._push_stats()
        self._log.info("reloaded", restarted=changed,
                       unchanged=[n for n in START_ORDER if n in names and n not in changed])

    def _write_allow_file(self):
        """Write reflector.allowedSources to its file; True when it changed."""
        try:
            return allowfile.write(self.cfg)
        except OSError as e:
            self._log.error("allow_file_failed", path=self.cfg["reflector.allowFile"],
                            error=str(e), action="the reflector keeps the list it has")
            return False

    def _shutdown(self):
        for name in STOP_ORDER:
            child = self.children.get(name)
            if child is None:
                continue
            child.restart_at = None
            if child.running:
                self._stop(child)
        path = ipc_path(self.cfg["zmq.endpoint"])
        if "exporter" in self.children and path and os.path.exists(path):
            # The exporter removes its socket on a clean exit; this one was left by a
            # killed or crashed exporter, and nothing listens on it any more.
            os.unlink(path)
            self._log.warning("stale_socket_removed", path=path)
        self._close_pusher()

    def _close_pusher(self):
        if self._pusher is not None:
            self._records["records_sent"] += self._pusher.sent
            self._records["records_dropped"] += self._pusher.dropped
            self._pusher.close()
            self._pusher = None

    def _push_stats(self):
        self._next_stats = time.monotonic() + self.cfg["supervisor.statsInterval"]
        if self._pusher is None:
            return
        self._pusher.push([records.SupervisorStats(n, c.running, c.restarts, c.pid)
                           for n, c in self.children.items()])


def _child(name, argv):
    """The exporter needs no capability: it serves HTTP and reads a socket. The
    reflector re-reads its allow-list on SIGHUP."""
    return Child(name, argv, needs_caps=name != "exporter", reloads_on_hup=name == "reflector")


def _accepts(listen):
    """Whether HOST:PORT accepts a TCP connection (a wildcard host means this host)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        socket.create_connection((host, int(port)), timeout=0.2).close()
        return True
    except OSError:
        return False


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
