"""The Grafana dashboards: valid dashboard JSON (Grafana's own model keeps every field),
sound panels, and the chart's ConfigMap carrying the same files as contrib/grafana/.

That every panel's query returns data from a real Prometheus fed by a real mesh is
tests/test_fleet_prometheus.py.
"""

import json
import re
import subprocess

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

from test_chart import CHART, ROOT, _dropped, helm_bin, helm_env  # noqa: F401

pytestmark = pytest.mark.unit

SOURCES = sorted((CHART / "files" / "dashboards").glob("*.json"))
VARIABLE = re.compile(r"\$(\w+)")
BUILTIN = {"__rate_interval", "__interval", "__range"}


def grafana_roundtrip(doc):
    """The dashboard as Grafana's model (grafana-foundation-sdk) reads and writes it."""
    model = Dashboard.from_json(doc)
    return json.loads(json.dumps(model.to_json(),
                                 default=lambda o: o.to_json() if hasattr(o, "to_json") else str(o)))


def panels(doc):
    return [p for p in doc["panels"] if p["type"] != "row"]


def test_there_are_dashboards_and_contrib_has_the_same_files():
    assert SOURCES, "chart/files/dashboards/ should hold the dashboards."
    for src in SOURCES:
        copy = ROOT / "contrib" / "grafana" / src.name
        assert copy.exists() and copy.read_bytes() == src.read_bytes(), (
            f"contrib/grafana/{src.name} should be a copy of {src.relative_to(ROOT)}: run scripts/contrib.py.")


@pytest.mark.parametrize("src", SOURCES, ids=[s.name for s in SOURCES])
def test_dashboard_is_grafana_dashboard_json(src):
    doc = json.loads(src.read_text())
    lost = _dropped(doc, grafana_roundtrip(doc))
    assert not lost, f"{src.name} has fields Grafana's dashboard model does not know: {lost}."
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), f"{src.name}: panel ids should be unique: {ids}."
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"Panel {p['title']!r} is wider than the grid: {g}."
    defined = {v["name"] for v in doc["templating"]["list"]} | BUILTIN
    for p in panels(doc):
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), f"{p['title']!r} has no query."
        for t in p["targets"]:
            used = set(VARIABLE.findall(t["expr"])) - defined
            assert not used, f"{p['title']!r} uses undefined variables {used}."
        assert p.get("description"), f"Panel {p['title']!r} should say what it shows."


def test_roundtrip_check_catches_a_misspelt_field():
    doc = json.loads(SOURCES[0].read_text())
    doc["panels"][1]["gridPoss"] = doc["panels"][1].pop("gridPos")
    assert _dropped(doc, grafana_roundtrip(doc)), "A misspelt panel field should be reported."


def test_matrices_put_node_names_on_both_axes():
    doc = json.loads((CHART / "files" / "dashboards" / "stamp-bpf-mesh.json").read_text())
    matrices = [p for p in panels(doc) if p["type"] == "table"]
    assert len(matrices) >= 4, "Delay and loss, each direction, as node-pair matrices."
    for p in matrices:
        t = [x for x in p["transformations"] if x["id"] == "groupingToMatrix"]
        assert t and (t[0]["options"]["rowField"], t[0]["options"]["columnField"]) == (
            "sender_node", "reflector_node"), f"{p['title']!r} should have node names on its axes."


def test_chart_configmap_carries_the_dashboards(helm_bin, helm_env):
    out = subprocess.run([helm_bin, "template", "stamp", str(CHART), "--set", "monitoring.dashboards.enabled=true",
                          "--set", "monitoring.dashboards.annotations.grafana_folder=Network"],
                         capture_output=True, text=True, env=helm_env, check=True).stdout
    cms = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap"]
    assert len(cms) == 1, "monitoring.dashboards.enabled should render one ConfigMap."
    cm = cms[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", "Grafana's sidecar finds it by this label."
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Network"}
    assert cm["data"] == {s.name: s.read_text().rstrip("\n") for s in SOURCES}, (
        "The ConfigMap should carry the dashboards as they are in chart/files/dashboards/.")
    off = subprocess.run([helm_bin, "template", "stamp", str(CHART)], capture_output=True, text=True,
                         env=helm_env, check=True).stdout
    assert "kind: ConfigMap" not in off, "Dashboards are off by default."
