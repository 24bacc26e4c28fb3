"""The supervisor's process logic, run for real (`stamp-bpf run`) with stand-in
children: start and stop order, restart with backoff, giving up, SIGKILL after
the stop timeout, SIGHUP reload, whole-line output, stats records over ZeroMQ."""

import json
import os
import signal
import time

import pytest

from stamp_bpf.common import records
from stamp_bpf.common.recordpipe import RecordPuller
from test_supervisor_harness import (SupervisorRun, free_port, install_standins,
                                     standin_events, wait_until)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bin_dir(tmp_path):
    """A bin directory of stand-ins; any stand-in still alive afterwards is killed."""
    d = install_standins(str(tmp_path / "bin"))
    yield d
    for e in standin_events(d, "start"):
        try:
            os.kill(e["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def run(bin_dir, tmp_path):
    """Start `stamp-bpf run` on the stand-ins with fast supervisor settings."""
    runs = []

    def start(*extra, config=None, endpoint=True):
        args = ["--bin-dir", bin_dir,
                "--set", "sender.interface=lo", "--set", "reflector.interface=lo",
                "--set", "sender.reflectorIPs=127.0.0.1",
                "--set", f"monitoring.listen=127.0.0.1:{free_port()}",
                "--set", "supervisor.backoffInitial=0.4", "--set", "supervisor.stopTimeout=2",
                "--set", "supervisor.statsInterval=0.5", *extra]
        if endpoint:
            args += ["--set", f"zmq.endpoint=ipc://{tmp_path}/records.sock"]
        if config:
            args = ["--config", str(config), *args]
        r = SupervisorRun(args)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.close()


def started(bin_dir, name=None):
    return standin_events(bin_dir, "start", name)


def test_starts_exporter_first_and_stops_it_last(run, bin_dir):
    sup = run()
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    assert [e["child"] for e in sup.events("child_started")] == \
        ["exporter", "reflector", "sender"], \
        "The exporter starts first, then the reflector, then the sender."
    ready = sup.events("exporter_ready")
    assert ready and started(bin_dir)[0]["name"] == "exporter", \
        "The exporter was up and listening before the services started."
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0, "A supervisor stopped by SIGTERM exits 0."
    terms = [e["name"] for e in standin_events(bin_dir, "term")]
    assert terms == ["sender", "reflector", "exporter"], \
        f"Children are stopped sender, reflector, exporter; the order was {terms}."
    stopped = [e["child"] for e in sup.events("child_stopped")]
    assert stopped == terms and all(e["exit_code"] == 0 and not e["killed"]
                                    for e in sup.events("child_stopped")), \
        "Each stop is logged in order with the child's exit code, and none needed SIGKILL."
    argv = sup.events("child_started", child="sender")[0]["argv"]
    assert argv[1:3] == ["lo", "127.0.0.1"] and "--log-format" in argv, \
        f"The sender gets the interface, the reflectors and the flags a user types: {argv}."


def test_sigint_stops_in_order_too(run, bin_dir):
    sup = run()
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    sup.signal(signal.SIGINT)
    assert sup.wait(15) == 0, "A supervisor stopped by SIGINT exits 0."
    assert [e["name"] for e in standin_events(bin_dir, "term")] == \
        ["sender", "reflector", "exporter"], "SIGINT stops the children in the same order."


def test_killed_child_comes_back_with_doubling_backoff(run, bin_dir):
    sup = run()
    first = wait_until(lambda: started(bin_dir, "sender"), 10, "the sender started")[0]
    delays = []
    pid = first["pid"]
    for n in (1, 2):
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        new = wait_until(lambda: len(started(bin_dir, "sender")) > n and
                         started(bin_dir, "sender")[n], 10, f"the sender restarted ({n})")
        delays.append(new["t"] - killed_at)
        pid = new["pid"]
    assert 0.4 <= delays[0] < 2.0, \
        f"The first restart waits backoffInitial (0.4 s); it took {delays[0]:.2f} s."
    assert 0.8 <= delays[1] < 3.0, \
        f"The second crash in a row waits twice as long (0.8 s); it took {delays[1]:.2f} s."
    exits = sup.events("child_exited", child="sender")
    assert [e["signal"] for e in exits] == ["SIGKILL", "SIGKILL"] and \
        [e["crashes_in_a_row"] for e in exits] == [1, 2], \
        f"Each exit is logged with the signal and the crash count: {exits}."
    restarted = sup.events("child_restarted", child="sender")
    assert [e["restarts"] for e in restarted] == [1, 2] and restarted[-1]["pid"] == pid, \
        "Each restart is logged with the new pid and the restart count."
    assert len(started(bin_dir, "exporter")) == 1 and len(started(bin_dir, "reflector")) == 1, \
        "A crash of the sender restarts the sender only."


def test_child_crashing_on_start_makes_the_supervisor_give_up(run, bin_dir):
    open(os.path.join(bin_dir, "sender.crash"), "w").close()
    sup = run("--set", "supervisor.maxRestarts=2", "--set", "supervisor.backoffInitial=0.1")
    rc = sup.wait(20)
    assert rc == 1, f"A supervisor that gives up exits 1, not {rc}."
    assert len(started(bin_dir, "sender")) == 3, \
        "maxRestarts=2 means the first start plus two restarts, then no more."
    err = b"".join(sup.stderr).decode()
    assert "sender crashed 3 times in a row (last: exit code 3)" in err \
        and "the crash order file says so" in err, \
        f"The give-up line on stderr names the child, the count, the exit code and its last words: {err!r}"
    gave_up = sup.events("child_gave_up", child="sender")
    assert gave_up and gave_up[0]["level"] == "error" and gave_up[0]["exit_code"] == 3, \
        "Giving up is an error event with the exit code."
    assert [e["name"] for e in standin_events(bin_dir, "term")] == ["reflector", "exporter"], \
        "After giving up, the supervisor stops the other children in order."


def test_stubborn_child_is_killed_after_the_stop_timeout(run, bin_dir):
    open(os.path.join(bin_dir, "reflector.stubborn"), "w").close()
    sup = run("--set", "supervisor.stopTimeout=0.5")
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    began = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0, "The supervisor exits 0 even when it had to kill a child."
    took = time.monotonic() - began
    assert took < 3, f"One stubborn child costs about stopTimeout (0.5 s); stopping took {took:.1f} s."
    stop = sup.events("child_stopped", child="reflector")[0]
    assert stop["killed"] and stop["signal"] == "SIGKILL" and stop["level"] == "warning", \
        f"The reflector was SIGKILLed after ignoring SIGTERM, and that is a warning: {stop}."
    assert [e["name"] for e in standin_events(bin_dir, "term")] == ["sender", "exporter"], \
        "The exporter still stops last."


def test_children_stop_when_the_supervisor_is_killed(run, bin_dir):
    sup = run()
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    sup.signal(signal.SIGKILL)
    sup.wait(10)
    wait_until(lambda: len(standin_events(bin_dir, "term")) == 3, 10,
               "every child got SIGTERM when its supervisor died (PR_SET_PDEATHSIG)")


def test_second_sigterm_kills_what_is_still_stopping(run, bin_dir):
    open(os.path.join(bin_dir, "sender.stubborn"), "w").close()
    sup = run("--set", "supervisor.stopTimeout=30")
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    sup.signal(signal.SIGTERM)
    sup.wait_event("child_stopping", child="sender")
    time.sleep(0.3)
    sup.signal(signal.SIGTERM)
    assert sup.wait(10) == 0, "A second SIGTERM ends the wait for a stubborn child at once."
    stop = sup.events("child_stopped", child="sender")[0]
    assert stop["killed"] and stop["took_s"] < 5, f"The sender was killed, not waited for: {stop}"


def test_child_that_finishes_is_not_restarted(run, bin_dir):
    sup = run()
    first = wait_until(lambda: started(bin_dir, "sender"), 10, "the sender started")[0]
    time.sleep(0.3)
    os.kill(first["pid"], signal.SIGTERM)   # the stand-in exits 0, like a finite --count
    sup.wait_event("child_exited", child="sender", exit_code=0)
    time.sleep(1.0)
    assert len(started(bin_dir, "sender")) == 1, "A child that exits 0 has finished: no restart."
    assert sup.proc.poll() is None, "The supervisor keeps the exporter and reflector running."


def test_output_lines_pass_through_whole(run, bin_dir):
    for svc in ("sender", "reflector", "exporter"):
        with open(os.path.join(bin_dir, f"{svc}.spam"), "w") as f:
            f.write("2000")
    sup = run()
    wait_until(lambda: len(standin_events(bin_dir, "spammed")) == 3, 30,
               "the three children wrote their lines")
    wait_until(lambda: sum(1 for line in sup.stdout if b'"spam"' in line) == 6000, 30,
               "all 6000 long lines reached the supervisor's stdout")
    spam = [e for e in sup.json_lines() if e["event"] == "spam"]
    for svc in ("sender", "reflector", "exporter"):
        mine = [e for e in spam if e["service"] == svc]
        assert [e["i"] for e in mine] == list(range(2000)) and \
            all(e["pad"] == svc[0] * 3000 for e in mine), \
            f"Every {svc} line arrives whole, once, in order."


def test_stats_records_reach_the_exporter_endpoint(run, bin_dir, tmp_path):
    with RecordPuller(f"ipc://{tmp_path}/records.sock") as puller:
        sup = run()
        first = wait_until(lambda: started(bin_dir, "sender"), 10, "the sender started")[0]
        sup.wait_event("child_started", child="sender")
        os.kill(first["pid"], signal.SIGKILL)
        sup.wait_event("child_restarted", child="sender")
        latest = {}

        def restarted_seen():
            while (msg := puller.recv(100)) is not None:
                for rec in records.decode(msg):
                    latest[rec.service] = rec
            s = latest.get("sender")
            return s and s.restarts == 1 and s.up

        wait_until(restarted_seen, 5, "a SupervisorStats record showed the sender restarted once")
    assert set(latest) == {"exporter", "reflector", "sender"} and \
        all(r.up and r.pid > 0 for r in latest.values()), \
        f"Each child has a stats record with up and pid: {latest}."
    assert latest["sender"].pid == sup.events("child_restarted", child="sender")[-1]["pid"], \
        "The sender's record carries the pid of the restarted process."


def test_sighup_restarts_only_the_changed_child(run, bin_dir, tmp_path):
    conf = tmp_path / "stamp-bpf.toml"
    conf.write_text("[sender]\ninterval = 1.0\n")
    sup = run(config=conf)
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    conf.write_text("[sender]\ninterval = 0.5\n")
    sup.signal(signal.SIGHUP)
    sup.wait_event("reloaded")
    wait_until(lambda: len(started(bin_dir, "sender")) == 2, 10, "the sender restarted")
    assert sup.events("reloaded")[0]["restarted"] == ["sender"], \
        "The reload names the sender as the one child restarted."
    assert len(started(bin_dir, "exporter")) == 1 and len(started(bin_dir, "reflector")) == 1, \
        "The exporter and the reflector, whose settings did not change, keep running."
    argv = started(bin_dir, "sender")[-1]["argv"]
    assert argv[argv.index("--interval") + 1] == "0.5", "The new sender runs with the new interval."
    assert not sup.events("child_restarted"), "A reload is not counted as a crash restart."

    conf.write_text("[sender]\ninterval = -1\n")
    sup.signal(signal.SIGHUP)
    failed = sup.wait_event("reload_failed")[0]
    assert "sender.interval: -1 must be greater than 0" in failed["error"], \
        f"A bad config on SIGHUP is refused with the key named: {failed}."
    time.sleep(0.5)
    assert len(started(bin_dir)) == 4 and sup.proc.poll() is None, \
        "After a refused reload every child keeps running as before."


def test_sighup_with_a_new_allow_list_reaches_the_reflector_without_a_restart(run, bin_dir,
                                                                              tmp_path):
    allow = tmp_path / "allowed-sources"
    conf = tmp_path / "stamp-bpf.yaml"
    conf.write_text(f"reflector: {{allowedSources: [10.0.0.0/8], allowFile: '{allow}'}}\n")
    # The stand-in reflector takes SIGHUP only 2 s after its start, as the real one
    # does only once it runs Python: an early SIGHUP must wait, not end it.
    (tmp_path / "bin" / "reflector.hupdelay").write_text("2")
    sup = run(config=conf)
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    argv = started(bin_dir, "reflector")[0]["argv"]
    assert argv[argv.index("--allow-file") + 1] == str(allow), \
        "The reflector gets the list as a file."
    assert "10.0.0.0/8\n" in allow.read_text()
    conf.write_text(f"reflector: {{allowedSources: [10.0.0.0/8, 'fd00::/8'], "
                    f"allowFile: '{allow}'}}\n")
    sup.signal(signal.SIGHUP)
    assert sup.wait_event("reloaded")[0]["restarted"] == [], \
        "A new allow-list restarts no child."
    hup = wait_until(lambda: standin_events(bin_dir, "hup", "reflector"), 10,
                     "the reflector got SIGHUP")
    assert "fd00::/8" in hup[0]["allow"], \
        "The file holds the new list by the time the reflector is told."
    assert len(started(bin_dir, "reflector")) == 1, "The reflector kept running."
    sup.signal(signal.SIGHUP)                   # nothing changed
    sup.wait_event("reloaded", count=2)
    time.sleep(0.5)
    assert len(standin_events(bin_dir, "hup", "reflector")) == 1, \
        "A reload that does not change the list does not signal the reflector."


def test_sighup_with_a_new_endpoint_moves_everything_to_it(run, bin_dir, tmp_path):
    conf = tmp_path / "stamp-bpf.toml"
    conf.write_text(f'[zmq]\nendpoint = "ipc://{tmp_path}/old.sock"\n')
    sup = run(config=conf, endpoint=False)   # a --set endpoint would win over the file
    wait_until(lambda: len(started(bin_dir)) == 3, 10, "the three children started")
    with RecordPuller(f"ipc://{tmp_path}/new.sock") as puller:
        conf.write_text(f'[zmq]\nendpoint = "ipc://{tmp_path}/new.sock"\n')
        sup.signal(signal.SIGHUP)
        assert sup.wait_event("reloaded")[0]["restarted"] == ["exporter", "reflector", "sender"], \
            "A new endpoint restarts all three children."
        msg = puller.recv(3000)
        assert msg is not None and {r.service for r in records.decode(msg)} == \
            {"exporter", "reflector", "sender"}, \
            "The supervisor's stats records go to the new endpoint."
    assert all("ipc://" + str(tmp_path) + "/new.sock" in e["argv"]
               for e in started(bin_dir)[3:]), "The children were restarted with --zmq NEW."


def test_bad_config_starts_nothing(run, bin_dir):
    sup = run("--set", "sender.sourcePort=70000")
    assert sup.wait(10) == 2, "A bad config exits 2."
    err = b"".join(sup.stderr).decode().strip()
    assert err == "stamp-bpf: sender.sourcePort: 70000 is not a UDP port; use 1 to 65535", \
        f"One line names the key and the fix: {err!r}"
    assert not started(bin_dir) and not sup.stdout, "Nothing started, nothing logged to stdout."
