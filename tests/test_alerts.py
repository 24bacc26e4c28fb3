"""The alerting and recording rules: one source (chart/files/rules.yaml), promtool-clean,
a promtool unit test for every alert that fires and one that stays silent, and the
chart's PrometheusRule carrying the same rules with the values given.

The real thing (a netns mesh losing packets, a real Prometheus firing the alert)
is tests/test_alerts_prometheus.py.
"""

import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as promv1

from test_chart import ROOT, _dropped, helm_bin, helm_env, render  # noqa: F401

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(shutil.which("promtool") is None,
                                 reason="promtool (Debian prometheus) is not installed")]

RULES = ROOT / "contrib" / "prometheus" / "stamp-bpf.rules.yml"
UNIT = ROOT / "tests" / "promtool" / "stamp-bpf.rules.test.yml"
RULE_API = "monitoring.coreos.com/v1/PrometheusRule"


def alerts(groups):
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_contrib_rules_are_the_charts_rendered_with_defaults():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "contrib.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"contrib/ is not what chart/files/ makes it: {proc.stderr}"


def test_promtool_check_rules_is_clean():
    proc = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, f"promtool check rules: {proc.stdout}{proc.stderr}"


def test_promtool_unit_tests_pass():
    proc = subprocess.run(["promtool", "test", "rules", str(UNIT)], capture_output=True, text=True)
    assert proc.returncode == 0, f"promtool test rules failed:\n{proc.stdout}{proc.stderr}"


def test_every_alert_has_a_firing_and_a_silent_case():
    names = set(alerts(yaml.safe_load(RULES.read_text())["groups"]))
    cases = [c for t in yaml.safe_load(UNIT.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert names == {"StampPacketLoss", "StampDirectionalPacketLoss", "StampDelayHigh",
                     "StampPeerNotAnswering", "StampNoReflectorAnswering",
                     "StampClockUnsynchronised", "StampRecordsDropped"}, f"Alerts are {sorted(names)}."
    assert names <= fires, f"No promtool case where these fire: {sorted(names - fires)}."
    assert names <= silent, f"No promtool case where these stay silent: {sorted(names - silent)}."


def test_every_alert_says_what_and_what_to_check():
    for name, rule in alerts(yaml.safe_load(RULES.read_text())["groups"]).items():
        ann = rule.get("annotations", {})
        assert ann.get("summary") and "Check first" in ann.get("description", ""), (
            f"{name} needs a summary and a description saying what to check first.")
        assert "severity" in rule.get("labels", {}), f"{name} needs a severity label."


def test_prometheus_rule_renders_the_values(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, podmonitor_crd=False, sets=[
        "monitoring.prometheusRule.window=2m", "monitoring.prometheusRule.lossRatio=0.3",
        "monitoring.prometheusRule.lossFor=1m", "monitoring.prometheusRule.severity=page",
        "monitoring.prometheusRule.additionalLabels.release=kps"])
    assert not [d for d in docs if d["kind"] == "PrometheusRule"], (
        "Without the PrometheusRule API the chart should render none.")
    out = subprocess.run([helm_bin, "template", "stamp", str(ROOT / "chart"), "--api-versions", RULE_API,
                          "--set", "monitoring.prometheusRule.window=2m",
                          "--set", "monitoring.prometheusRule.lossRatio=0.3",
                          "--set", "monitoring.prometheusRule.lossFor=1m",
                          "--set", "monitoring.prometheusRule.severity=page",
                          "--set", "monitoring.prometheusRule.additionalLabels.release=kps"],
                         capture_output=True, text=True, env=helm_env, check=True).stdout
    rule = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    assert len(rule) == 1, "With the API served the chart should render one PrometheusRule."
    dumped = promv1.PrometheusRule.model_validate(rule[0]).model_dump(by_alias=True, exclude_none=True,
                                                                      mode="json")
    assert not _dropped(rule[0], dumped), (
        f"Fields prometheus-operator does not know: {_dropped(rule[0], dumped)}.")
    assert rule[0]["metadata"]["labels"]["release"] == "kps"
    loss = alerts(rule[0]["spec"]["groups"])["StampPacketLoss"]
    assert (loss["expr"], loss["for"], loss["labels"]["severity"]) == (
        "stamp:pair_loss:ratio > 0.3", "1m", "page"), f"The values should reach the rule: {loss}."
    records = [r["expr"] for g in rule[0]["spec"]["groups"] for r in g["rules"] if "record" in r]
    assert any("[2m]" in e for e in records) and not any("[5m]" in e for e in records), (
        "monitoring.prometheusRule.window should set every rate window.")
    off = subprocess.run([helm_bin, "template", "stamp", str(ROOT / "chart"), "--api-versions", RULE_API,
                          "--set", "monitoring.prometheusRule.enabled=false"],
                         capture_output=True, text=True, env=helm_env, check=True).stdout
    assert "kind: PrometheusRule" not in off, "prometheusRule.enabled=false should render none."
