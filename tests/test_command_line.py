"""One builder of the services' command lines: the chart renders what the supervisor runs.

services/supervisor/commands.py builds stamp-sender's, stamp-reflector's and
stamp-exporter's arguments from the supervisor's settings, whose keys mirror
the chart's values. For every chart scenario (chart/ci) and a few more values,
each container's command and arguments as helm renders them must equal what
that builder makes of the same values: the same settings cannot behave
differently under the chart and the supervisor.
"""

import copy

import pytest
import yaml

from stamp_bpf.supervisor import commands, config

from test_chart import (CHART, SCENARIOS, container, daemonset, helm_bin, helm_env,  # noqa: F401
                        render, scenario_file)

RELEASE, NAMESPACE = "stamp", "mesh"

EXTRA = {   # name: values, beside the scenario files
    "every-sender-value": {"sender": {
        "interface": "bond0", "reflectorIPs": ["10.0.0.1", "10.0.0.2"], "sourcePort": 5862,
        "destinationPort": 6862, "count": 1000000, "interval": 0.005, "timeout": 2.5,
        "histogram": {"enabled": True, "bins": 40, "floor": 20.5, "ceiling": 80,
                      "path": "/tmp/h/sender"},
        "enforceSync": True, "enforcePTP": True, "debug": True,
        "extraArgs": ["--timestamp-format", "ptp"]}, "exporter": {"debug": True}},
    "every-reflector-value": {"reflector": {
        "interface": "ens5", "port": 4862, "output": True,
        "histogram": {"enabled": True, "bins": 10, "floor": 30, "ceiling": 60},
        "enforcePTP": True, "debug": True, "extraArgs": ["--timestamping", "user"],
        "allowedSources": ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"],
        "maxRate": 0.5, "burst": 3},
        "exporter": {"idleTimeout": 60}},
    "static-and-dns": {"sender": {"reflectorIPs": ["10.0.0.9"],
                                  "reflectorDNS": "reflectors.example.org", "dnsInterval": 12.5}},
    "dns-only": {"sender": {"reflectorDNS": "reflectors.example.org", "interval": 0.0001}},
    "dual-stack-static": {"sender": {"reflectorIPs": ["10.0.0.9", "2001:db8::9"],
                                     "reflectorDNS": "reflectors.example.org"}},
    "dns-ipv4-only": {"sender": {"addressFamily": "4"}},
    "authenticated-other-key": {"auth": {"existingSecret": "stamp-auth", "secretKey": "hmac"}},
}
AUTH_KEY_PATH = "/etc/stamp-bpf/auth/key"     # where the chart mounts the Secret's key
CASES = SCENARIOS + list(EXTRA)


def merge(base, over):
    """Helm's merge of a values file over the defaults: tables merge, the rest replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def lookup(values, dotted):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


def supervisor_config(values, component):
    """The supervisor settings that mean what these chart values mean, for one pod."""
    cfg = config.defaults()
    for name in config.KEYS:
        try:
            cfg[name] = lookup(values, name)
        except (KeyError, TypeError):
            pass        # a supervisor-only key (monitoring.listen, zmq.endpoint, supervisor.*)
    s = values["sender"]
    if not s["reflectorIPs"] and not s["reflectorDNS"]:
        # The chart's own default: the release's headless reflector Service.
        cfg["sender.reflectorDNS"] = f"{RELEASE}-stamp-bpf-reflector.{NAMESPACE}.svc." \
                                     f"{values['global']['clusterDomain']}"
    if values["auth"]["existingSecret"]:
        cfg["auth.keyFile"] = AUTH_KEY_PATH   # the chart's mount of the Secret
    cfg["monitoring.listen"] = f"0.0.0.0:{values[component]['metricsPort']}"
    # The chart's allow-list file is its ConfigMap, mounted at a path of its own.
    cfg["reflector.allowFile"] = "/etc/stamp-bpf/allowed-sources/list"
    cfg["exporter.nodeName"] = "$(NODE_NAME)"     # the pod's spec.nodeName (downward API)
    # A pod runs one service; its exporter's buckets follow that service's histogram.
    cfg[f"{'reflector' if component == 'sender' else 'sender'}.enabled"] = False
    return cfg


@pytest.mark.parametrize("case", CASES)
def test_the_chart_renders_the_command_lines_the_supervisor_builds(helm_bin, helm_env, tmp_path,
                                                                   case):
    if case in EXTRA:
        path = tmp_path / f"{case}-values.yaml"
        path.write_text(yaml.safe_dump(EXTRA[case]))
        over = EXTRA[case]
    else:
        path = scenario_file(case)
        over = yaml.safe_load(path.read_text()) or {}
    values = merge(yaml.safe_load((CHART / "values.yaml").read_text()), over)
    docs = render(helm_bin, helm_env, [path], release=RELEASE, namespace=NAMESPACE)
    checked = 0
    for comp in ("sender", "reflector"):
        ds = daemonset(docs, comp)
        if ds is None:
            assert not values[comp]["enabled"], f"{case}: the {comp} is enabled but has no DaemonSet."
            continue
        cfg = supervisor_config(values, comp)
        built = commands.build(cfg, "", "json")
        for name in (comp, "exporter"):
            c = container(ds, name)
            rendered = c["command"] + c["args"]
            assert rendered == built[name], (
                f"{case}: the {comp} pod's {name} container runs\n  {' '.join(rendered)}\n"
                f"but services/supervisor/commands.py builds for the same values\n"
                f"  {' '.join(built[name])}")
            checked += 1
    assert checked >= 2, f"{case}: at least one pod's two containers were compared."
