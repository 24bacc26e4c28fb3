"""The supervisor's configuration: one small bad file per mistake, each refused
with the one line a user needs; --set parsing; the examples and the docs agree
with the keys; `stamp-bpf check` prints the commands a user would type."""

import os
import re
import subprocess

import pytest

from stamp_bpf.supervisor import commands, config
from test_supervisor_harness import STAMP_BPF

# The fast layer: no root, no namespaces, no BPF.
pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK_SENDER = '[sender]\nreflectorIPs = ["192.0.2.1"]\n'

# (file name, content, the error after "FILE: " or, for a value problem, alone)
INVALID = [
    ("invalid-toml-syntax.toml", "[sender\n", "not valid TOML: "),
    ("invalid-yaml-syntax.yaml", "sender: [1, 2\n", "not valid YAML: "),
    ("invalid-format.json", "{}", "unknown config format; name the file *.toml, *.yaml or *.yml"),
    ("invalid-yaml-toplevel.yaml", "- sender\n",
     "the file: expected a table of keys, got ['sender'] (a list)"),
    ("invalid-key-unknown.toml", OK_SENDER + 'interfce = "eth1"\n',
     "sender.interfce: unknown key; did you mean sender.interface?"),
    ("invalid-key-table.yaml", "sendr:\n  enabled: false\n",
     "sendr: unknown key; did you mean sender?"),
    ("invalid-key-chart-only.yaml", "serviceAccount:\n  create: true\n",
     "serviceAccount: unknown key; see docs/supervisor.md for the keys"),
    ("invalid-histogram-table.toml", OK_SENDER + "histogram = true\n",
     "sender.histogram: expected a table of keys, got True (a boolean)"),
    ("invalid-type-bool.yaml", "sender:\n  reflectorIPs: [192.0.2.1]\n  debug: 'yes'\n",
     "sender.debug: expected true or false, got 'yes' (a string)"),
    ("invalid-type-list.yaml", "sender:\n  reflectorIPs: 192.0.2.1\n",
     "sender.reflectorIPs: expected a list of strings, got '192.0.2.1' (a string)"),
    ("invalid-type-int.toml", OK_SENDER + "count = 1.5\n",
     "sender.count: expected an integer, got 1.5 (a number)"),
    ("invalid-type-extraargs.toml", OK_SENDER + 'extraArgs = ["--late-window", 2]\n',
     "sender.extraArgs: expected a list of strings, got ['--late-window', 2] (a list)"),
    ("invalid-number-nan.yaml", "sender:\n  reflectorIPs: [192.0.2.1]\n  interval: .nan\n",
     "sender.interval: nan is not a finite number"),
]
INVALID_VALUES = [
    ("invalid-sender-ip.toml", '[sender]\nreflectorIPs = ["192.0.2.1", "192.0.2.300"]\n',
     "sender.reflectorIPs[1]: '192.0.2.300' is not an IPv4 or IPv6 address (without a %scope)"),
    ("invalid-sender-ipv6-scope.yaml", "sender:\n  reflectorIPs: ['fe80::1%eth0']\n",
     "sender.reflectorIPs[0]: 'fe80::1%eth0' is not an IPv4 or IPv6 address (without a %scope)"),
    ("invalid-sender-ipv6-family.yaml",
     "sender:\n  reflectorIPs: ['2001:db8::1']\n  addressFamily: '4'\n",
     "sender.reflectorIPs[0]: 2001:db8::1 is not IPv4, as sender.addressFamily says; drop it "
     "or set addressFamily = any"),
    ("invalid-sender-family.toml", OK_SENDER + 'addressFamily = "ipv6"\n',
     "sender.addressFamily: 'ipv6' is not one of any, \"4\", \"6\" (a string)"),
    ("invalid-sender-no-reflectors.toml", "[sender]\ninterval = 0.5\n",
     "sender.reflectorIPs: empty, so the sender has nothing to measure; list reflector "
     "addresses, set sender.reflectorDNS, or set sender.enabled = false"),
    ("invalid-sender-port.toml", OK_SENDER + "sourcePort = 0\n",
     "sender.sourcePort: 0 is not a UDP port; use 1 to 65535"),
    ("invalid-sender-interval.toml", OK_SENDER + "interval = 0\n",
     "sender.interval: 0 must be greater than 0 seconds"),
    ("invalid-sender-count.yaml", "sender:\n  reflectorIPs: [192.0.2.1]\n  count: -1\n",
     "sender.count: -1 is negative; use 0 (forever) or a packet count"),
    ("invalid-histogram-edges.toml", OK_SENDER + "[sender.histogram]\nfloor = 75\nceiling = 25\n",
     "sender.histogram.ceiling: 25 must be above sender.histogram.floor (75)"),
    ("invalid-histogram-bins.toml", OK_SENDER + "[sender.histogram]\nbins = 2\n",
     "sender.histogram.bins: 2 is too few; use at least 3 (underflow, one bin, overflow)"),
    ("invalid-histogram-layouts.yaml",
     "sender:\n  reflectorIPs: [192.0.2.1]\n  histogram: {enabled: true, bins: 28}\n"
     "reflector:\n  histogram: {enabled: true, bins: 40}\n",
     "reflector.histogram: bins, floor and ceiling differ from sender.histogram's, but the "
     "one exporter has one bucket layout; make them equal"),
    ("invalid-reflector-port.yaml", "sender: {enabled: false}\nreflector: {port: 70000}\n",
     "reflector.port: 70000 is not a UDP port; use 1 to 65535"),
    ("invalid-reflector-interface.toml", '[sender]\nenabled = false\n[reflector]\n'
     'interface = "a-very-long-interface-name"\n',
     "reflector.interface: 'a-very-long-interface-name' is not an interface name "
     "(1 to 15 characters, no '/')"),
    ("invalid-nothing-enabled.yaml", "sender: {enabled: false}\nreflector: {enabled: false}\n",
     "sender.enabled: the sender and the reflector are both disabled, so there is nothing "
     "to run; enable at least one"),
    ("invalid-monitoring-listen.toml", OK_SENDER + '[monitoring]\nlisten = "8080"\n',
     "monitoring.listen: '8080' is not HOST:PORT; for example 0.0.0.0:8080 or 127.0.0.1:9862"),
    ("invalid-zmq-relative.toml", OK_SENDER + '[zmq]\nendpoint = "ipc://records.sock"\n',
     "zmq.endpoint: 'ipc://records.sock' needs an absolute path, for example "
     "ipc:///run/stamp-bpf/records.sock"),
    ("invalid-zmq-scheme.yaml", "sender: {reflectorIPs: [192.0.2.1]}\nzmq: {endpoint: 'udp://x:1'}\n",
     "zmq.endpoint: 'udp://x:1' is not ipc:///PATH or tcp://HOST:PORT"),
    ("invalid-reflector-allowed-host-bits.yaml",
     "sender: {enabled: false}\nreflector: {allowedSources: [10.0.0.0/8, 10.1.2.3/16]}\n",
     "reflector.allowedSources[1]: '10.1.2.3/16' has bits set past its prefix length; "
     "did you mean 10.1.0.0/16?"),
    ("invalid-reflector-allowed-garbage.toml",
     '[sender]\nenabled = false\n[reflector]\nallowedSources = ["eth0"]\n',
     "reflector.allowedSources[0]: 'eth0' is not an IPv4 or IPv6 prefix ('eth0' does not "
     "appear to be an IPv4 or IPv6 network); write it as 10.0.0.0/8, 2001:db8::/32 or a "
     "single address"),
    ("invalid-reflector-allow-file.yaml",
     "sender: {enabled: false}\nreflector: {allowedSources: [fd00::/8], allowFile: allow.txt}\n",
     "reflector.allowFile: 'allow.txt' is not an absolute path, e.g. "
     "/run/stamp-bpf/allowed-sources"),
    ("invalid-reflector-max-rate.toml", '[sender]\nenabled = false\n[reflector]\nmaxRate = -5\n',
     "reflector.maxRate: must be 0 (no limit) up to 1e9 packets/s"),
    ("invalid-reflector-burst.yaml", "sender: {enabled: false}\nreflector: {burst: 0}\n",
     "reflector.burst: must be 1 or more packets"),
    ("invalid-supervisor-backoff.toml", OK_SENDER + "[supervisor]\nbackoffMax = 0.5\n",
     "supervisor.backoffMax: 0.5 is below supervisor.backoffInitial (1.0)"),
    ("invalid-supervisor-restarts.yaml",
     "sender: {reflectorIPs: [192.0.2.1]}\nsupervisor: {maxRestarts: -1}\n",
     "supervisor.maxRestarts: -1 is negative; use 0 (give up at the first crash) or more"),
]


@pytest.mark.parametrize("name,content,error", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_file_is_refused_with_the_file_and_key_named(tmp_path, name, content, error):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(config.ConfigError) as exc:
        config.load(str(path))
    assert str(exc.value).startswith(f"{path}: {error}"), \
        f"{name} is refused with a message naming the file and the problem: {exc.value}"
    assert "\n" not in str(exc.value), "The error is one line."


@pytest.mark.parametrize("name,content,error", INVALID_VALUES, ids=[c[0] for c in INVALID_VALUES])
def test_invalid_value_is_refused_with_the_key_named(tmp_path, name, content, error):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(config.ConfigError) as exc:
        config.load(str(path))
    assert str(exc.value) == error, f"{name} is refused with exactly: {error}"


def test_cli_refuses_a_bad_file_in_one_line_before_starting_anything(tmp_path):
    path = tmp_path / "invalid-sender-port.toml"
    path.write_text(OK_SENDER + "sourcePort = 0\n")
    res = subprocess.run([STAMP_BPF, "run", "-c", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2 and res.stdout == "", "A bad config exits 2 and starts nothing."
    assert res.stderr == "stamp-bpf: sender.sourcePort: 0 is not a UDP port; use 1 to 65535\n", \
        f"stderr is one line naming the key: {res.stderr!r}"


SETS = [
    ("sender.reflectorIPs={192.0.2.1,192.0.2.2}", ["192.0.2.1", "192.0.2.2"]),
    ("sender.reflectorIPs=192.0.2.1,192.0.2.2", ["192.0.2.1", "192.0.2.2"]),
    ("sender.reflectorIPs=[192.0.2.1]", ["192.0.2.1"]),
    ("sender.extraArgs={}", []),
    ("sender.enabled=False", False),
    ("sender.count=10", 10),
    ("sender.interval=0.01", 0.01),
    ("supervisor.backoffMax=5", 5),
    ("monitoring.listen=127.0.0.1:9000", "127.0.0.1:9000"),
]
BAD_SETS = [
    ("sender.count", "--set sender.count: expected KEY=VALUE, for example --set sender.count=10"),
    ("sender.count=ten", "sender.count: 'ten' is not an integer"),
    ("sender.interval=fast", "sender.interval: 'fast' is not a number"),
    ("sender.debug=yes", "sender.debug: 'yes' is not true or false"),
    ("sender.intervall=1", "sender.intervall: unknown key; did you mean sender.interval?"),
]


@pytest.mark.parametrize("item,value", SETS)
def test_set_parses_the_value_for_the_keys_type(item, value):
    assert config.parse_set(item) == (item.partition("=")[0], value), \
        f"--set {item} gives {value!r}."


@pytest.mark.parametrize("item,error", BAD_SETS)
def test_bad_set_is_refused_in_one_line(item, error):
    with pytest.raises(config.ConfigError) as exc:
        config.parse_set(item)
    assert str(exc.value) == error, f"--set {item} is refused with: {error}"


def test_set_overrides_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(OK_SENDER + "count = 5\n")
    cfg = config.load(str(path), ["sender.count=7"])
    assert cfg["sender.count"] == 7 and cfg["sender.reflectorIPs"] == ["192.0.2.1"], \
        "--set wins over the file, and the file's other keys stay."


def test_examples_toml_and_yaml_are_valid_twins_with_every_key():
    toml_path = os.path.join(ROOT, "examples", "stamp-bpf.toml")
    yaml_path = os.path.join(ROOT, "examples", "stamp-bpf.yaml")
    assert config.load(toml_path) == config.load(yaml_path), \
        "examples/stamp-bpf.toml and .yaml say the same thing."
    assert set(config.read_file(toml_path)) == set(config.KEYS), \
        "The example sets every key, so it documents every key."
    defaults = config.defaults()
    differ = {k for k, v in config.load(toml_path).items() if v != defaults[k]}
    assert differ == {"sender.reflectorIPs"}, \
        f"The example shows the defaults, apart from the reflector list: {differ}."


def test_docs_describe_every_key():
    with open(os.path.join(ROOT, "docs", "supervisor.md")) as f:
        doc = f.read()
    documented = set(re.findall(r"^\| `([A-Za-z.]+)` \|", doc, re.M))
    assert documented == set(config.KEYS), \
        f"docs/supervisor.md has a table row for exactly the keys: missing " \
        f"{set(config.KEYS) - documented}, unknown {documented - set(config.KEYS)}."


def test_check_prints_the_commands_a_user_would_type(tmp_path):
    res = subprocess.run(
        [STAMP_BPF, "check", "--bin-dir", "/opt/sb/bin", "--log-format", "json",
         "--set", "sender.interface=lo", "--set", "reflector.interface=lo",
         "--set", "sender.reflectorIPs=192.0.2.1,192.0.2.2", "--set", "sender.count=10",
         "--set", "sender.interval=0.01", "--set", "sender.histogram.enabled=true",
         "--set", "sender.enforceSync=true", "--set", "sender.extraArgs=--late-window,2",
         "--set", "reflector.output=true", "--set", "monitoring.listen=127.0.0.1:9100"],
        capture_output=True, text=True, timeout=30)
    # /opt/sb/bin does not exist: check refuses, naming the program and the fix.
    assert res.returncode == 2 and res.stderr == (
        "stamp-bpf: exporter: /opt/sb/bin/stamp-exporter is not an executable; install the "
        "stamp-bpf package beside this stamp-bpf, or point --bin-dir at its bin folder\n"), \
        res.stderr
    cfg = config.load(None, ["sender.interface=lo", "reflector.interface=lo",
                             "sender.reflectorIPs=192.0.2.1,192.0.2.2", "sender.count=10",
                             "sender.interval=0.01", "sender.histogram.enabled=true",
                             "sender.enforceSync=true", "sender.extraArgs=--late-window,2",
                             "reflector.output=true", "monitoring.listen=127.0.0.1:9100"])
    cmds = commands.build(cfg, "/opt/sb/bin", "json")
    zmq = ["--zmq", "ipc:///run/stamp-bpf/records.sock"]
    assert cmds == {
        "exporter": ["/opt/sb/bin/stamp-exporter", "--listen", "127.0.0.1:9100", *zmq,
                     "--idle-timeout", "300", "--max-reflector-sessions", "1024",
                     "--log-format", "json", "--no-reflector-histogram", "--hist", "28", "25", "75"],
        "reflector": ["/opt/sb/bin/stamp-reflector", "lo", "--port", "862",
                      "--max-sessions", "1024", "--max-rate", "12000", "--burst", "1200", *zmq,
                      "--log-format", "json", "--output"],
        "sender": ["/opt/sb/bin/stamp-sender", "lo", "192.0.2.1", "192.0.2.2",
                   "--address-family", "any", "--source-port", "862", "--dest-port", "862", "--count", "10",
                   "--interval", "0.01", "--timeout", "1", *zmq, "--log-format", "json",
                   "--hist", "28", "25", "75", "--histpath", "/tmp/sender-hist", "--enforce-sync",
                   "--late-window", "2"],
    }, "Each child gets exactly the flags docs/cli.md gives for those settings."


def test_check_names_a_missing_interface(tmp_path):
    res = subprocess.run([STAMP_BPF, "check", "--set", "sender.enabled=false",
                          "--set", "reflector.interface=nosuch0"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and res.stderr == \
        "stamp-bpf: reflector.interface: no interface named 'nosuch0' on this host (see ip link)\n", \
        f"A missing interface is refused before anything starts: {res.stderr!r}"
