"""stamp-sender and stamp-reflector command lines: bad input gives one clear line and a
non-zero exit; --ebpf prints what would be compiled; --help shows examples.

The installed console scripts run as a user runs them. Flag errors are
argparse's (usage, then one `PROG: error: ...` line); errors found at start
are one JSON log line at level error. Nothing here may attach to a real
interface: cases that get past the flag checks use a name that does not
exist, or an interface in a test namespace.
"""

import json
import os
import subprocess
import sys

import pytest

from stamp_bpf.common import bpfprog, clock
from stamp_bpf.reflector import datapath as reflector_datapath
from stamp_bpf.sender import datapath as sender_datapath

import stampnet
from conftest import tc_filters

pytestmark = pytest.mark.timeout(180)
BIN = os.path.dirname(sys.executable)
NOIF = "stampnone0"          # no such interface anywhere


def run_all(cases):
    """Run [(command, argv)] concurrently; {index: CompletedProcess-like (rc, out, err)}."""
    procs = [subprocess.Popen([os.path.join(BIN, cmd), *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for cmd, argv in cases]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=60)
        out.append((p.returncode, o, e))
    return out


FLAG_ERRORS = [
    ("stamp-sender", [NOIF, "198.18.0.2", "-s", "0"], ["-s/--source-port", "1-65535"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "-d", "70000"], ["-d/--dest-port", "70000"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--source-port", "abc"], ["--source-port", "'abc'"]),
    ("stamp-reflector", [NOIF, "-p", "0"], ["-p/--port", "1-65535"]),
    ("stamp-reflector", [NOIF, "--port", "65536"], ["--port", "65536"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--hist", "2", "25", "75"], ["--hist", "BINS"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--hist", "28", "80", "20"], ["--hist", "FLOOR", "CEIL"]),
    ("stamp-reflector", [NOIF, "--hist", "28", "25"], ["--hist", "3 arguments"]),
    ("stamp-reflector", [NOIF, "--hist", "x", "25", "75"], ["--hist", "BINS", "'x'"]),
    ("stamp-sender", [NOIF], ["no reflector", "REFLECTOR"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "198.18.0.2"], ["REFLECTOR", "twice"]),
    ("stamp-sender", [NOIF, "stamp.example"], ["'stamp.example'", "IPv4 or IPv6", "--reflector-dns"]),
    ("stamp-sender", [NOIF, "fe80::1%eth0"], ["scope", "interface", "--reflector-dns"]),
    ("stamp-sender", [NOIF, "2001:db8::1", "2001:DB8::01"], ["listed twice"]),
    ("stamp-sender", [NOIF, "10.0.0.1", "2001:db8::1", "--address-family", "4"],
     ["2001:db8::1", "not IPv4", "--address-family any"]),
    ("stamp-sender", [NOIF, "10.0.0.1", "--address-family", "6"], ["10.0.0.1", "not IPv6"]),
    ("stamp-sender", [NOIF, "10.0.0.1", "--address-family", "5"], ["--address-family", "'5'"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "-i", "0"], ["-i/--interval", "minimum"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "-c", "-1"], ["--count", "-1"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--timestamp-format", "gps"], ["--timestamp-format", "gps"]),
    ("stamp-reflector", [NOIF, "--allow", "10.0.0.1/8"], ["--allow", "did you mean 10.0.0.0/8"]),
    ("stamp-reflector", [NOIF, "--allow", "eth0"], ["--allow", "'eth0'", "10.0.0.0/8"]),
    ("stamp-reflector", [NOIF, "--allow-file", "/nonexistent/allow"],
     ["--allow-file /nonexistent/allow", "cannot read"]),
    ("stamp-reflector", [NOIF, "--max-rate", "-1"], ["--max-rate", "0 (no limit)"]),
    ("stamp-reflector", [NOIF, "--max-rate", "nan"], ["--max-rate"]),
    ("stamp-reflector", [NOIF, "--burst", "0"], ["--burst", "1 or more"]),
    ("stamp-reflector", [NOIF, "--rate-sources", "0"], ["--rate-sources", "1 or more"]),
    ("stamp-reflector", [NOIF, "--stateful-sessions", "10"], ["--stateful-sessions", "--stateful"]),
    ("stamp-reflector", [NOIF, "--session-timeout", "10"], ["--session-timeout", "--stateful"]),
    ("stamp-reflector", [NOIF, "--stateful", "--stateful-sessions", "0"],
     ["--stateful-sessions", "1 to"]),
    ("stamp-reflector", [NOIF, "--stateful", "--session-timeout", "0.5"],
     ["--session-timeout", "minimum"]),
    ("stamp-reflector", [NOIF, "--stateful", "--timestamping", "user"],
     ["--stateful", "--timestamping user"]),
    ("stamp-reflector", [NOIF, "--sync-source", "gps"], ["--sync-source", "gps"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--ssid", "0"], ["--ssid", "1-65535"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--dscp", "64"], ["--dscp", "0-63"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--padding", "x"], ["--padding", "'x'"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "198.18.0.3", "--ssid", "5"], ["--ssid", "one REFLECTOR"]),
    ("stamp-sender", [NOIF, "198.18.0.2", "--max-peers", "4"], ["--max-peers", "--reflector-dns"]),
    ("stamp-sender", [NOIF, "--reflector-dns", "x.example", "--max-peers", "-1"], ["--max-peers", "'-1'"]),
]


@pytest.fixture(scope="module")
def flag_results():
    return run_all([(cmd, argv) for cmd, argv, _ in FLAG_ERRORS])


@pytest.mark.parametrize("i", range(len(FLAG_ERRORS)),
                         ids=[" ".join([c] + a[1:]) for c, a, _ in FLAG_ERRORS])
def test_bad_flag_gives_one_error_line(flag_results, i):
    cmd, argv, words = FLAG_ERRORS[i]
    rc, out, err = flag_results[i]
    assert rc == 2, f"{cmd} {' '.join(argv)} exited {rc}, not 2 (a usage error)"
    assert "Traceback" not in err + out, f"{cmd} {' '.join(argv)} crashed:\n{err}"
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), \
        f"{cmd} {' '.join(argv)} should end with one error line, printed:\n{err}"
    for w in words:
        assert w in errors[0], f"the error line {errors[0]!r} does not mention {w!r}"


def json_errors(out, err):
    lines = [json.loads(line) for line in (out + err).splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("level") == "error"]


def check_one_json_error(rc, out, err, words, what):
    assert rc != 0, f"{what} exited 0"
    assert "Traceback" not in out + err, f"{what} crashed:\n{out}{err}"
    errors = json_errors(out, err)
    assert len(errors) == 1, f"{what} should log one error line, logged:\n{out}{err}"
    text = json.dumps(errors[0])
    for w in words:
        assert w in text, f"{what}: the error line {text} does not mention {w!r}"


def test_bad_interface_and_enforce_flags_refuse_with_the_reason():
    synced = clock.read().synchronized
    ptp_ok, _ = clock.ptp_evidence()
    cases = [
        ("stamp-sender", [NOIF, "198.18.0.2", "-c", "1"], [f"no network interface named '{NOIF}'"]),
        ("stamp-reflector", [NOIF], [f"no network interface named '{NOIF}'"]),
    ]
    if not synced:
        for cmd in ("stamp-sender", "stamp-reflector"):
            argv = [NOIF] + (["198.18.0.2"] if cmd == "stamp-sender" else []) + ["--enforce-sync"]
            cases.append((cmd, argv, ["--enforce-sync", "unsynchronised"]))
    if not ptp_ok:
        for cmd in ("stamp-sender", "stamp-reflector"):
            argv = [NOIF] + (["198.18.0.2"] if cmd == "stamp-sender" else []) + ["--enforce-ptp"]
            cases.append((cmd, argv, ["--enforce-ptp", "/dev/ptp" if not os.path.exists("/dev/ptp0") else "ptp4l"]))
    results = run_all([(c, a) for c, a, _ in cases])
    for (cmd, argv, words), (rc, out, err) in zip(cases, results):
        check_one_json_error(rc, out, err, words, f"{cmd} {' '.join(argv)}")
    assert len(cases) == 6 or synced or ptp_ok, "this machine should refuse both --enforce flags"


def test_bad_zmq_endpoint_gives_one_error_line(tmp_path):
    """A ZeroMQ endpoint it cannot use is a configuration error, not a traceback."""
    lab = stampnet.Lab(tmp_path)
    try:
        host = lab.topo.reflector
        res = lab.topo.run(host, [os.path.join(BIN, "stamp-reflector"), host.ifname,
                                  "--zmq", "bogus://nowhere"],
                           capture_output=True, text=True, timeout=120)
        check_one_json_error(res.returncode, res.stdout, res.stderr, ["bogus://nowhere"],
                             "stamp-reflector --zmq bogus://nowhere")
        filters = [tc_filters(lab.topo, host, hook) for hook in ("ingress", "egress")]
        assert filters == [[], []], f"a failed start left TC filters behind: {filters}"
    finally:
        lab.close()


def test_ebpf_prints_the_c_and_cflags():
    results = run_all([
        ("stamp-reflector", [NOIF, "--ebpf", "-p", "8620", "--timestamp-format", "ptp"]),
        ("stamp-sender", [NOIF, "198.18.0.2", "--ebpf", "-s", "9000", "-d", "8620"]),
    ])
    for (rc, out, err), files, flags in zip(results, (
            reflector_datapath.FILES, sender_datapath.FILES), (
            ["-DSTAMP_PORT=8620", "-DSTAMP_TS_PTP=1"],
            ["-DSENDER_SRC_PORT=9000", "-DSENDER_DST_PORT=8620", "-DSTAMP_TS_PTP=0"])):
        assert rc == 0, f"--ebpf failed: {err}"
        for name in files:
            with open(os.path.join(bpfprog.bpf_dir(), name)) as f:
                assert f.read() in out, f"--ebpf does not print {name}, which it compiles"
        cflags = [line for line in out.splitlines() if line.startswith("// cflags:")]
        assert len(cflags) == 1, "--ebpf prints no (or several) cflags lines"
        assert f"-I{bpfprog.bpf_dir()}" in cflags[0]
        for flag in flags:
            assert flag in cflags[0].split(), f"cflags {cflags[0]!r} lack {flag}"


def test_help_shows_examples():
    results = run_all([("stamp-sender", ["--help"]), ("stamp-reflector", ["--help"])])
    for name, (rc, out, err) in zip(("stamp-sender", "stamp-reflector"), results):
        assert rc == 0
        assert "examples:" in out, f"{name} --help has no examples"
        examples = out.split("examples:", 1)[1]
        assert sum(1 for line in examples.splitlines() if line.strip().startswith(name + " ")) >= 2, \
            f"{name} --help shows fewer than two example commands"
        for flag in (["--count", "--interval", "--timeout", "--source-port", "--dest-port"]
                     if name == "stamp-sender" else ["--port"]):
            assert flag in out, f"{name} --help does not document {flag}"
