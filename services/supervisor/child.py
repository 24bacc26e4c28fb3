"""One supervised child process: start, exit status, stop, and its restart bookkeeping."""

import ctypes
import os
import signal
import subprocess
import time

from .output import Pump

_PR_SET_PDEATHSIG = 1
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """In the child before exec: get SIGTERM when the supervisor dies, so an orphan
    never keeps measuring (or keeps its TC filters) after a SIGKILLed supervisor."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _die_with_parent_without_caps():
    """As _die_with_parent, and clear the ambient capabilities: a non-root supervisor
    (the systemd unit) passes its CAP_BPF etc. to a child that needs none as nothing."""
    _die_with_parent()
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def _block_hup():
    """In a child that re-reads its settings on SIGHUP: hold the signal until its
    handler is in place (runtime.ReloadSignal), so an early one is not fatal."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def describe_status(returncode):
    """{"exit_code": N} or {"signal": "SIGKILL"} for a Popen returncode."""
    if returncode is not None and returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": str(-returncode)}
    return {"exit_code": returncode}


class Child:
    """A child by name, with its current process (if any) and its crash history."""

    def __init__(self, name, argv, needs_caps=True, reloads_on_hup=False):
        self.name, self.argv = name, argv
        self.needs_caps = needs_caps
        self.reloads_on_hup = reloads_on_hup
        self.proc = None
        self.pidfd = None
        self.started_at = 0.0
        self.restarts = 0        # restarts after crashes, ever (stamp_supervisor_restarts_total)
        self.streak = 0          # crashes in a row, each within resetAfter of its start
        self.restart_at = None   # monotonic time of a scheduled restart
        self.finished = False    # exited 0 on its own: done, not restarted
        self._pumps = []

    @property
    def running(self):
        return self.proc is not None

    @property
    def pid(self):
        return self.proc.pid if self.proc else 0

    def last_lines(self):
        """The child's last output lines, stdout and stderr, for a give-up message."""
        return [line for p in self._pumps for line in p.last]

    def start(self, out):
        """Start the process (own session: a terminal's Ctrl-C reaches only the supervisor)."""
        setup = _die_with_parent if self.needs_caps else _die_with_parent_without_caps

        def preexec():
            setup()
            if self.reloads_on_hup:
                _block_hup()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec)
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.started_at = time.monotonic()
        self.restart_at = None
        self.finished = False
        self._pumps = [Pump(self.proc.stdout, out), Pump(self.proc.stderr, out)]

    def reap(self):
        """Collect the exit status of a child whose pidfd became readable."""
        rc = self.proc.wait()
        os.close(self.pidfd)
        self.proc, self.pidfd = None, None
        for p in self._pumps:
            p.join(1.0)
        return rc

    def stop(self, timeout, should_hurry=lambda: False):
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL. Returns (returncode, killed)."""
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = False
        while self.proc.poll() is None:
            if time.monotonic() >= deadline or should_hurry():
                self.proc.kill()
                killed = True
                self.proc.wait()
                break
            time.sleep(0.02)
        return self.reap(), killed
