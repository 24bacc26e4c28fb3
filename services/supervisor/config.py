"""The supervisor's configuration: keys, defaults, loading and validation.

Keys mirror the Helm chart's values (`sender.interface`, `sender.reflectorIPs`,
`reflector.port`, `sender.histogram.bins` ...), so a values file and a
stamp-bpf.toml read alike. A configuration is a flat dict of dotted keys. It
comes from the defaults, then a TOML or YAML file, then `--set KEY=VALUE`
overrides, and is validated as a whole before anything starts; every problem
is a ConfigError whose text is one line naming the key.
"""

import difflib
import math
import tomllib
from dataclasses import dataclass

import yaml

from ..common import addr, histogram
from ..common.recordpipe import DEFAULT_ENDPOINT
from ..reflector import guard


class ConfigError(ValueError):
    """A configuration problem, worded as one line: "KEY: what is wrong; how to fix"."""


@dataclass(frozen=True)
class Key:
    """One configuration key: dotted name, type, default and a one-line meaning."""
    name: str
    kind: str          # "bool", "int", "number", "str", "list" (of strings) or "numbers"
    default: object
    help: str


def _service_keys(svc, hist_path):
    return [
        Key(f"{svc}.enabled", "bool", True, f"run stamp-{svc}"),
        Key(f"{svc}.interface", "str", "eth0", "interface to attach the TC programs to"),
        Key(f"{svc}.debug", "bool", False, "pass -D/--debug (verifier log, per-packet records)"),
        Key(f"{svc}.histogram.enabled", "bool", False, "pass --hist BINS FLOOR CEIL --histpath PATH"),
        Key(f"{svc}.histogram.bins", "int", 28, "histogram bins, underflow and overflow included"),
        Key(f"{svc}.histogram.floor", "number", 25, "lowest edge, 10*log10(delay in ns)"),
        Key(f"{svc}.histogram.ceiling", "number", 75, "highest edge, 10*log10(delay in ns)"),
        Key(f"{svc}.histogram.path", "str", hist_path, "histogram file, rewritten atomically"),
        Key(f"{svc}.enforceSync", "bool", False, "pass --enforce-sync (refuse an unsynchronised clock)"),
        Key(f"{svc}.enforcePTP", "bool", False, "pass --enforce-ptp (refuse a clock not disciplined by PTP)"),
        Key(f"{svc}.extraArgs", "list", [], "more arguments, appended as given"),
    ]


KEYS = {k.name: k for k in [
    *_service_keys("sender", "/tmp/sender-hist"),
    Key("sender.reflectorIPs", "list", [], "IPv4 or IPv6 addresses of the reflectors, one "
        "session each"),
    Key("sender.reflectorDNS", "str", "", "name to resolve for reflectors (--reflector-dns)"),
    Key("sender.dnsInterval", "number", 30, "seconds between resolutions of reflectorDNS"),
    Key("sender.addressFamily", "str", "any", "families measured (--address-family): any, "
        "\"4\" or \"6\"; filters reflectorDNS answers, reflectorIPs must match it"),
    Key("sender.maxPeers", "int", 16, "with reflectorDNS: measure at most this many of its "
        "reflectors, chosen on a hash ring (--max-peers); 0 = all"),
    Key("sender.sourcePort", "int", 862, "UDP source port of the test packets"),
    Key("sender.destinationPort", "int", 862, "UDP port of the reflectors"),
    Key("sender.count", "int", 0, "packets per session, 0 = forever"),
    Key("sender.interval", "number", 1.0, "seconds between packets"),
    Key("sender.timeout", "number", 1.0, "seconds after which a reply counts as late"),
    *_service_keys("reflector", "/tmp/reflector-hist"),
    Key("reflector.port", "int", 862, "UDP port to reflect on"),
    Key("reflector.output", "bool", False, "pass --output (per-session output and histograms)"),
    Key("reflector.delayHistogram", "bool", False, "export the reflector side's forward-delay "
        "histogram (else the exporter gets --no-reflector-histogram)"),
    Key("reflector.maxSessions", "int", 1024, "sender sessions kept at most (--max-sessions; "
        "also the exporter's --max-reflector-sessions)"),
    Key("auth.keyFile", "str", "", "HMAC key file of authenticated mode (--auth-key-file, both "
        "services; docs/auth.md); empty = unauthenticated"),
    Key("reflector.allowedSources", "list", [], "IPv4/IPv6 prefixes whose senders are "
        "answered (the reflector's --allow-file, written to reflector.allowFile); empty = everyone"),
    Key("reflector.allowFile", "str", "/run/stamp-bpf/allowed-sources",
        "where the supervisor writes reflector.allowedSources; rewritten on reload, and "
        "the reflector re-reads it without a restart"),
    Key("reflector.maxRate", "number", guard.DEFAULT_MAX_RATE, "test packets/s reflected "
        "at most per sender address (--max-rate); 0 = no limit"),
    Key("reflector.burst", "int", guard.DEFAULT_BURST, "packets a sender may send back to "
        "back above reflector.maxRate (--burst)"),
    Key("monitoring.listen", "str", "0.0.0.0:8080", "HOST:PORT the exporter serves /metrics on"),
    Key("exporter.idleTimeout", "number", 300, "seconds before an idle session's series go"),
    Key("exporter.serviceTimeout", "number", 0, "seconds without a service's health record "
        "before /healthz fails (--service-timeout); 0 = off"),
    Key("exporter.nodeName", "str", "", "this node's name in stamp_node_address_info "
        "(--node-name); empty: the host name"),
    Key("exporter.buckets", "numbers", [], "delay bucket bounds in seconds, ascending (--buckets); "
        "empty: the default buckets"),
    Key("exporter.debug", "bool", False, "pass -D/--debug to the exporter"),
    Key("exporter.extraArgs", "list", [], "more exporter arguments, appended as given"),
    Key("zmq.endpoint", "str", DEFAULT_ENDPOINT, "record stream (--zmq) of all three"),
    Key("supervisor.backoffInitial", "number", 1.0, "seconds before the first restart of a crashed child"),
    Key("supervisor.backoffMax", "number", 30.0, "cap of the doubling restart delay, seconds"),
    Key("supervisor.resetAfter", "number", 60.0, "seconds up after which a crash counts as the first"),
    Key("supervisor.maxRestarts", "int", 5, "crashes in a row after which the supervisor gives up"),
    Key("supervisor.readyTimeout", "number", 10.0, "seconds to wait for the exporter before the rest"),
    Key("supervisor.stopTimeout", "number", 10.0, "seconds each child gets to stop before SIGKILL"),
    Key("supervisor.statsInterval", "number", 5.0, "seconds between supervisor records to the exporter"),
]}

# Table names that hold keys: "sender", "sender.histogram", ...
_TABLES = {name.rsplit(".", 1)[0] for name in KEYS} | {
    name.rsplit(".", 2)[0] for name in KEYS if name.count(".") == 2}

_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "number": "a number",
               "str": "a string", "list": "a list of strings", "numbers": "a list of numbers"}


def _describe(value):
    """How a wrong value reads in an error: its repr and its type in config words."""
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table", type(None): "empty"}
    return f"{value!r} ({words.get(type(value), type(value).__name__)})"


def defaults():
    """A fresh configuration holding every key's default."""
    return {k.name: (list(k.default) if k.kind in ("list", "numbers") else k.default)
            for k in KEYS.values()}


def _unknown(name):
    close = difflib.get_close_matches(name, list(KEYS) + sorted(_TABLES), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else "; see docs/supervisor.md for the keys"
    return ConfigError(f"{name}: unknown key{hint}")


def flatten(tree, prefix=""):
    """Turn nested tables into {dotted key: value}; unknown keys are errors."""
    if not isinstance(tree, dict):
        what = "the file" if not prefix else prefix.rstrip(".")
        raise ConfigError(f"{what}: expected a table of keys, got {_describe(tree)}")
    flat = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if name in KEYS:
            flat[name] = v
        elif name in _TABLES:
            flat.update(flatten(v, name + "."))
        else:
            raise _unknown(name)
    return flat


def read_file(path):
    """Read a TOML (.toml) or YAML (.yaml/.yml) file into flat dotted keys."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
    if str(path).endswith(".toml"):
        try:
            tree = tomllib.loads(raw.decode("utf-8", "replace"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    elif str(path).endswith((".yaml", ".yml")):
        try:
            tree = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
        tree = {} if tree is None else tree
    else:
        raise ConfigError(f"{path}: unknown config format; name the file *.toml, *.yaml or *.yml")
    try:
        flat = flatten(tree)
        for name, value in flat.items():
            _check_type(KEYS[name], value)
        return flat
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_set(item):
    """One `--set KEY=VALUE` as (key, value), VALUE parsed for the key's type.

    Lists are written a,b or {a,b} (Helm's form) or [a,b]; an empty list is {} or [].
    """
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, for example --set sender.count=10")
    key = KEYS.get(name)
    if key is None:
        raise _unknown(name)
    text = text.strip()
    if key.kind in ("list", "numbers"):
        inner = text[1:-1] if text[:1] + text[-1:] in ("{}", "[]") else text
        items = [p.strip() for p in inner.split(",") if p.strip()]
        if key.kind == "list":
            return name, items
        try:
            return name, [float(p) for p in items]
        except ValueError:
            raise ConfigError(f"{name}: {text!r} is not {_TYPE_WORDS[key.kind]}") from None
    if key.kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"{name}: {text!r} is not true or false")
        return name, text.lower() == "true"
    if key.kind in ("int", "number"):
        try:
            return name, int(text)
        except ValueError:
            pass
        try:
            if key.kind == "number":
                return name, float(text)
        except ValueError:
            pass
        raise ConfigError(f"{name}: {text!r} is not {_TYPE_WORDS[key.kind]}")
    return name, text


def _check_type(key, value):
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          "list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
          "numbers": lambda v: isinstance(v, list) and all(
              isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)}
    if not ok[key.kind](value):
        raise ConfigError(f"{key.name}: expected {_TYPE_WORDS[key.kind]}, got {_describe(value)}")
    if key.kind == "number" and not math.isfinite(value):
        raise ConfigError(f"{key.name}: {value} is not a finite number")


def _port(cfg, name):
    if not 1 <= cfg[name] <= 65535:
        raise ConfigError(f"{name}: {cfg[name]} is not a UDP port; use 1 to 65535")


def _positive(cfg, name, unit="seconds"):
    if cfg[name] <= 0:
        raise ConfigError(f"{name}: {cfg[name]} must be greater than 0 {unit}")


def _interface(cfg, name):
    v = cfg[name]
    if not v or len(v) > 15 or "/" in v or v.strip() != v:
        raise ConfigError(f"{name}: {v!r} is not an interface name (1 to 15 characters, no '/')")


def _histogram(cfg, svc):
    p = f"{svc}.histogram."
    if cfg[p + "bins"] < 3:
        raise ConfigError(f"{p}bins: {cfg[p + 'bins']} is too few; use at least 3 "
                          "(underflow, one bin, overflow)")
    if cfg[p + "floor"] >= cfg[p + "ceiling"]:
        raise ConfigError(f"{p}ceiling: {cfg[p + 'ceiling']} must be above "
                          f"{p}floor ({cfg[p + 'floor']})")
    if cfg[p + "enabled"] and not cfg[p + "path"]:
        raise ConfigError(f"{p}path: empty; give the file the histogram is written to")


def _listen(cfg):
    v = cfg["monitoring.listen"]
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"monitoring.listen: {v!r} is not HOST:PORT; "
                          "for example 0.0.0.0:8080 or 127.0.0.1:9862")


def _endpoint(cfg):
    v = cfg["zmq.endpoint"]
    if v.startswith("ipc://"):
        if not v[len("ipc://"):].startswith("/"):
            raise ConfigError(f"zmq.endpoint: {v!r} needs an absolute path, "
                              "for example ipc:///run/stamp-bpf/records.sock")
    elif not (v.startswith("tcp://") and ":" in v[len("tcp://"):]):
        raise ConfigError(f"zmq.endpoint: {v!r} is not ipc:///PATH or tcp://HOST:PORT")


def _sender(cfg):
    fam = cfg["sender.addressFamily"]
    if fam not in addr.FAMILIES:
        raise ConfigError(f"sender.addressFamily: {fam!r} is not one of any, \"4\", \"6\" "
                          "(a string)")
    for i, ip in enumerate(cfg["sender.reflectorIPs"]):
        try:
            ip = addr.normalize(ip)
        except ValueError:
            raise ConfigError(f"sender.reflectorIPs[{i}]: {ip!r} is not an IPv4 or IPv6 address "
                              "(without a %scope)") from None
        if not addr.wanted(ip, fam):
            raise ConfigError(f"sender.reflectorIPs[{i}]: {ip} is not IPv{fam}, as "
                              f"sender.addressFamily says; drop it or set addressFamily = any")
    if cfg["sender.enabled"] and not (cfg["sender.reflectorIPs"] or cfg["sender.reflectorDNS"]):
        raise ConfigError("sender.reflectorIPs: empty, so the sender has nothing to measure; "
                          "list reflector addresses, set sender.reflectorDNS, "
                          "or set sender.enabled = false")
    _port(cfg, "sender.sourcePort")
    _port(cfg, "sender.destinationPort")
    if cfg["sender.count"] < 0:
        raise ConfigError(f"sender.count: {cfg['sender.count']} is negative; "
                          "use 0 (forever) or a packet count")
    _positive(cfg, "sender.interval")
    _positive(cfg, "sender.timeout")
    _positive(cfg, "sender.dnsInterval")
    if cfg["sender.maxPeers"] < 0:
        raise ConfigError(f"sender.maxPeers: {cfg['sender.maxPeers']} is negative; "
                          "use 0 (every reflector) or more")


def _reflector_guard(cfg):
    for i, text in enumerate(cfg["reflector.allowedSources"]):
        try:
            guard.prefix(text)
        except guard.GuardError as e:
            raise ConfigError(f"reflector.allowedSources[{i}]: {e}") from None
    try:
        guard.merge([guard.prefix(t) for t in cfg["reflector.allowedSources"]])
    except guard.GuardError as e:
        raise ConfigError(f"reflector.allowedSources: {e}") from None
    if cfg["reflector.allowedSources"] and not cfg["reflector.allowFile"].startswith("/"):
        raise ConfigError(f"reflector.allowFile: {cfg['reflector.allowFile']!r} is not an "
                          "absolute path, e.g. /run/stamp-bpf/allowed-sources")
    try:
        guard.rate_limit(cfg["reflector.maxRate"], cfg["reflector.burst"])
    except guard.GuardError as e:
        name = "reflector.burst" if "--burst" in str(e) else "reflector.maxRate"
        raise ConfigError(f"{name}: {str(e).split(': ', 1)[1]}") from None


def _supervisor(cfg):
    for name in ("backoffInitial", "backoffMax", "resetAfter", "readyTimeout", "stopTimeout",
                 "statsInterval"):
        _positive(cfg, "supervisor." + name)
    if cfg["supervisor.backoffMax"] < cfg["supervisor.backoffInitial"]:
        raise ConfigError(f"supervisor.backoffMax: {cfg['supervisor.backoffMax']} is below "
                          f"supervisor.backoffInitial ({cfg['supervisor.backoffInitial']})")
    if cfg["supervisor.maxRestarts"] < 0:
        raise ConfigError(f"supervisor.maxRestarts: {cfg['supervisor.maxRestarts']} is negative; "
                          "use 0 (give up at the first crash) or more")


def exporter_histogram(cfg):
    """The (bins, floor, ceiling) the exporter's buckets follow, or None for its default."""
    for svc in ("sender", "reflector"):
        p = f"{svc}.histogram."
        if cfg[f"{svc}.enabled"] and cfg[p + "enabled"]:
            return cfg[p + "bins"], cfg[p + "floor"], cfg[p + "ceiling"]
    return None


def validate(cfg):
    """Check every key's type and value and the keys' agreement; return cfg."""
    for name, value in cfg.items():
        _check_type(KEYS[name], value)
    if not (cfg["sender.enabled"] or cfg["reflector.enabled"]):
        raise ConfigError("sender.enabled: the sender and the reflector are both disabled, "
                          "so there is nothing to run; enable at least one")
    _sender(cfg)
    _port(cfg, "reflector.port")
    if cfg["reflector.maxSessions"] < 1:
        raise ConfigError(f"reflector.maxSessions: {cfg['reflector.maxSessions']} must be 1 or more")
    _reflector_guard(cfg)
    if cfg["exporter.serviceTimeout"] and not cfg["exporter.serviceTimeout"] > 5:
        raise ConfigError(f"exporter.serviceTimeout: {cfg['exporter.serviceTimeout']} must be 0 "
                          "(off) or above the 5 s between a service's health records, e.g. 60")
    for svc in ("sender", "reflector"):
        _interface(cfg, f"{svc}.interface")
        _histogram(cfg, svc)
    layouts = {(cfg[f"{s}.histogram.bins"], cfg[f"{s}.histogram.floor"],
                cfg[f"{s}.histogram.ceiling"])
               for s in ("sender", "reflector")
               if cfg[f"{s}.enabled"] and cfg[f"{s}.histogram.enabled"]}
    if len(layouts) > 1:
        raise ConfigError("reflector.histogram: bins, floor and ceiling differ from "
                          "sender.histogram's, but the one exporter has one bucket layout; "
                          "make them equal")
    if cfg["exporter.buckets"]:
        if exporter_histogram(cfg):
            raise ConfigError("exporter.buckets: the histogram.* bins also set the exporter's "
                              "buckets; use one of them")
        try:
            histogram.parse_buckets(",".join(map(str, cfg["exporter.buckets"])))
        except ValueError as e:
            raise ConfigError(f"exporter.buckets: {e}") from None
    _listen(cfg)
    _positive(cfg, "exporter.idleTimeout")
    _endpoint(cfg)
    _supervisor(cfg)
    return cfg


def load(path=None, sets=()):
    """Defaults, then the file at `path` (if any), then `--set` items; validated."""
    cfg = defaults()
    if path:
        cfg.update(read_file(path))
    for item in sets:
        name, value = parse_set(item)
        cfg[name] = value
    return validate(cfg)
