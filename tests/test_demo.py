"""`make demo`: each simulated host runs `stamp-bpf run`, the output shows the
measurements, and the run ends cleanly on --count and on Ctrl-C.

The demo runs as a user runs it, as a process of its own; `--log-format console`
gives the output a terminal user sees (the sender's ping-like lines), and
`-k DIR` keeps each host's supervisor log for the checks.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from stamp_bpf.lab import netns

pytestmark = pytest.mark.timeout(240)

PING = re.compile(r"^198\.18\.0\.2: seq=(\d+) hops=0 near=([\d.]+) ms far=([\d.]+) ms rtt=([\d.]+) ms$")


class Demo:
    """The demo as a process in a session of its own (as a terminal's foreground job)."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "stamp_bpf.lab.demo", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines, self.prefix = [], None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("lab: namespaces "):
                self.prefix = line.split()[2].rsplit("-", 1)[0]

    def pings(self):
        return [m for m in map(PING.match, list(self.lines)) if m]

    def finish(self, timeout=180):
        """Wait for the exit; (returncode, stdout, stderr)."""
        err = self.proc.stderr.read()
        self.proc.wait(timeout)
        self._reader.join(10)
        return self.proc.returncode, "\n".join(self.lines), err

    def kill(self):
        """Finalizer: whatever a failed test left running or built is removed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)       # the demo cleans up on SIGTERM
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.prefix:
            netns.cleanup(self.prefix)


@pytest.fixture
def demo():
    made = []

    def start(*args):
        made.append(Demo(*args))
        return made[-1]

    yield start
    for d in made:
        d.kill()


def events(path):
    """The JSON events of a host's supervisor log (its children's lines included)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def check_nothing_left(d, out):
    assert d.prefix and netns.list_namespaces(d.prefix) == [], \
        f"The demo should remove its namespaces ({d.prefix}-*)."
    left = glob.glob(f"/run/stamp-bpf/demo-{d.prefix}-*")
    assert left == [], f"The supervisors' exporters should remove their sockets, left: {left}."
    assert ("no TC filter and no socket file left" in out), \
        f"The demo should have checked each host for TC filters and sockets after the stop: {out}"


def check_reflector_host(workdir):
    """The reflector host ran a supervisor with only the exporter and the reflector,
    and stopped them in order on SIGTERM."""
    evs = events(os.path.join(workdir, "reflector-host.log"))
    sup = [e for e in evs if e.get("service") == "supervisor"]
    started = next(e for e in sup if e["event"] == "supervisor_started")
    assert started["children"] == ["exporter", "reflector"], \
        f"The reflector host's supervisor should run only the exporter and the reflector: {started}"
    stopped = [(e["child"], e["killed"]) for e in sup if e["event"] == "child_stopped"]
    assert stopped == [("reflector", False), ("exporter", False)], \
        f"The reflector, then the exporter should stop on SIGTERM without a kill: {stopped}"
    assert sup[-1]["event"] == "supervisor_stopped" and sup[-1]["exit_code"] == 0, \
        f"The reflector host's supervisor should exit 0: {sup[-1]}"
    assert any(e.get("service") == "reflector" and e["event"] == "reflecting" for e in evs), \
        "The reflector's own lines should pass through its supervisor."


def test_demo_count_runs_a_supervisor_per_host_and_shows_measurements(demo, tmp_path):
    d = demo("-c", "5", "-i", "0.1", "-f", "2ms", "-b", "4ms", "-j", "0", "-m",
             "--log-format", "console", "-k", str(tmp_path))
    rc, out, err = d.finish()
    assert rc == 0, f"The demo should end cleanly after 5 packets: {out}\n{err}"
    check_nothing_left(d, out)

    pings = d.pings()
    assert [int(m[1]) for m in pings] == list(range(5)), \
        f"The sender's ping-like line for each of the 5 packets should be shown: {out}"
    near = sorted(float(m[2]) for m in pings)
    far = sorted(float(m[3]) for m in pings)
    assert 2.0 <= near[2] < 3.0 and 4.0 <= far[2] < 5.0, \
        f"The sender's medians should be about 2 ms forward and 4 ms back: near {near}, far {far}."
    summary = json.loads(next(line for line in out.splitlines() if line.startswith('{"event": "summary"')))
    assert summary["sessions"][0]["received"] == 5, f"The sender's summary should show 5 replies: {summary}."

    # The sender host: its supervisor's console lines, in the output shown.
    assert re.search(r"supervisor_started +children=\['exporter', 'sender'\]", out), \
        f"The sender host's supervisor should run only the exporter and the sender: {out}"
    assert re.search(r"child_exited +child=sender exit_code=0 .*restart='no \(finished\)'", out), \
        f"The sender should finish its 5 packets under its supervisor, and not be restarted: {out}"
    stops = re.findall(r"child_stopped +child=(\w+) exit_code=0 killed=False", out)
    assert stops == ["exporter"], f"SIGTERM should then stop the sender host's exporter: {out}"
    assert re.search(r"supervisor_stopped +exit_code=0", out), f"The sender host's supervisor should exit 0: {out}"
    check_reflector_host(tmp_path)

    # -m: each host's exporter, scraped inside its namespace before the stop.
    assert re.search(r'^  stamp_packets_received_total\{reflector="198.18.0.2:862",sender="198.18.0.1:862"\} 5$',
                     out, re.M), f"The sender host's exporter should count 5 replies: {out}"
    assert re.search(r'^  stamp_reflector_packets_reflected_total\{.*\} 5$', out, re.M), \
        f"The reflector host's exporter should count 5 reflected packets: {out}"
    assert re.search(r'^  stamp_supervisor_up\{service="reflector"\} 1', out, re.M), \
        f"The reflector host's supervisor should report its reflector up: {out}"

    # The truth from the captures, after the stop.
    assert "5 test packets sent; lost forward 0, lost backward 0." in out, f"Truth missing: {out}"
    medians = {line.split()[0]: float(line.split("median")[1].split()[0])
               for line in out.splitlines() if "median" in line}
    assert 2.0 <= medians["forward"] < 3.0 and 4.0 <= medians["backward"] < 5.0, \
        f"The captured medians should be about 2 ms forward and 4 ms backward: {medians}."


def test_demo_ctrl_c_stops_both_hosts_cleanly(demo, tmp_path):
    d = demo("-i", "0.1", "-j", "0", "--log-format", "console", "-k", str(tmp_path))
    deadline = time.monotonic() + 150
    while len(d.pings()) < 3 and d.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(d.pings()) >= 3, f"The sender's ping-like lines should appear: {d.lines}"
    os.killpg(d.proc.pid, signal.SIGINT)             # what a terminal's Ctrl-C does
    rc, out, err = d.finish()
    assert rc == 0, f"Ctrl-C should end the demo cleanly: {out}\n{err}"
    check_nothing_left(d, out)
    totals = re.search(r"^--- 198\.18\.0\.2:862: (\d+) sent, (\d+) received, 0 late, 0 lost", out, re.M)
    # A SIGTERM stops the sender at once: the packet then in flight is neither received nor lost.
    assert totals and 0 <= int(totals[1]) - int(totals[2]) <= 1, \
        f"The sender should print its totals when stopped, every packet but one in flight answered: {out}"
    assert re.search(r"signal_received +service=supervisor signal=SIGTERM", out), \
        f"The demo should stop the sender host's supervisor with SIGTERM: {out}"
    stops = re.findall(r"child_stopped +child=(\w+) exit_code=0 killed=False", out)
    assert stops == ["sender", "exporter"], f"The sender host should stop sender, then exporter: {out}"
    check_reflector_host(tmp_path)
    assert "lost forward 0, lost backward 0." in out, f"The truth should follow a Ctrl-C: {out}"
