"""The rules and dashboards for real: a netns mesh losing 30 % of its forward packets
(the link emulator), the real exporters, a real Prometheus with the chart's rules.

- the loss alert fires in Prometheus' /api/v1/alerts, naming the pair by node names,
  and the per-direction alert names the forward direction only;
- every panel query of the shipped dashboards returns data from that Prometheus.
"""

import json
import pathlib
import re
import shutil
import time
import urllib.parse

import pytest

from fleetlab import FORWARD_LOSS, FleetLab

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian package prometheus is not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def fleet():
    lab = FleetLab()
    yield lab
    lab.close()


def firing(prom, name):
    return [a for a in prom.api("alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == "firing"]


def wait_firing(fleet, name, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = firing(fleet.prom, name)
        if got:
            return got
        time.sleep(1)
    pytest.fail(f"{name} did not fire within {timeout} s; alerts: "
                f"{json.dumps(fleet.prom.api('alerts'))[:2000]}\nrules: "
                f"{json.dumps(fleet.prom.api('rules'))[:3000]}")


@pytest.mark.timeout(400)
def test_loss_alert_fires_naming_the_pair(fleet):
    loss = wait_firing(fleet, "StampPacketLoss")
    print("\nStampPacketLoss from /api/v1/alerts:", json.dumps(loss))
    assert len(loss) == 1, f"One pair loses packets, so one alert: {loss}."
    labels = loss[0]["labels"]
    assert fleet.pair.items() <= labels.items(), (
        f"The alert should name the pair {fleet.pair}, it has {labels}.")
    # The first evaluations see only a few judged packets; over a full window the ratio
    # settles near the emulator's drop probability.
    deadline = time.monotonic() + 60
    while abs(float(loss[0]["value"]) - FORWARD_LOSS) >= 0.15 and time.monotonic() < deadline:
        time.sleep(2)
        loss = firing(fleet.prom, "StampPacketLoss") or loss
    assert abs(float(loss[0]["value"]) - FORWARD_LOSS) < 0.15, (
        f"The loss ratio should settle near {FORWARD_LOSS}: {loss[0]['value']}.")
    assert "node-a -> node-b" in loss[0]["annotations"]["summary"]
    # Per direction compares two exporters' counters, whose series start at different
    # moments: until both fill the window, rate()'s extrapolation skews the split (seen:
    # 16 % forward and 11 % backward in the first 15 s). Over full windows it settles.
    directional = wait_firing(fleet, "StampDirectionalPacketLoss")
    deadline = time.monotonic() + 60

    def settled(alerts):
        return ([a["labels"]["direction"] for a in alerts] == ["near_end"]
                and abs(float(alerts[0]["value"]) - FORWARD_LOSS) < 0.15)
    while not settled(directional) and time.monotonic() < deadline:
        time.sleep(2)
        directional = firing(fleet.prom, "StampDirectionalPacketLoss")
    assert settled(directional), (
        f"Only the forward direction loses packets, about {FORWARD_LOSS}: {directional}.")
    assert fleet.pair.items() <= directional[0]["labels"].items()
    for quiet in ("StampPeerNotAnswering", "StampNoReflectorAnswering", "StampRecordsDropped"):
        assert not firing(fleet.prom, quiet), f"{quiet} should stay silent: the peer answers."


DASHBOARDS = sorted((pathlib.Path(__file__).resolve().parent.parent / "chart" / "files" / "dashboards").glob("*.json"))


def variable_values(prom, doc):
    """Each dashboard variable's first value, as Grafana would pick it (label_values queries)."""
    values = {"__rate_interval": "15s"}
    for v in doc["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["query"]["query"])
        assert m, f"Variable {v['name']} should be a label_values() query."
        match = substitute(m.group(1), values)
        # Over the last moments only, as Grafana asks over the dashboard's range: before
        # a node's own exporter is first scraped, its address stands in for its name,
        # and an older value like that must not be the one picked.
        now = time.time()
        got = prom.api(f"label/{m.group(2)}/values?" + urllib.parse.urlencode(
            {"match[]": match, "start": now - 15, "end": now}))
        assert got, f"Variable {v['name']} has no value in Prometheus ({v['query']['query']})."
        values[v["name"]] = sorted(got)[0]
    return values


def substitute(expr, values):
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("src", DASHBOARDS, ids=[s.name for s in DASHBOARDS])
def test_every_dashboard_query_returns_data(fleet, src):
    wait_firing(fleet, "StampPacketLoss")     # the recording rules have data by then
    doc = json.loads(src.read_text())
    values = variable_values(fleet.prom, doc)
    assert values["sender_node"] == "node-a" and values["reflector_node"] == "node-b", values
    empty = []
    now = time.time()
    for p in doc["panels"]:
        for t in p.get("targets", []):
            expr = substitute(t["expr"], values)
            if t.get("instant"):
                got = fleet.prom.api("query?" + urllib.parse.urlencode({"query": expr}))["result"]
            else:
                got = fleet.prom.api("query_range?" + urllib.parse.urlencode(
                    {"query": expr, "start": now - 30, "end": now, "step": 1}))["result"]
            if not got:
                empty.append(f"{p['title']!r}: {expr}")
    assert not empty, "Every panel query should return data; these returned nothing:\n" + "\n".join(empty)
