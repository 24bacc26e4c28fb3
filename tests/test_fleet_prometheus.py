"""The rules and dashboards for real: a netns mesh losing 30 % of its forward packets
(the link emulator), the real exporters, a real Prometheus with the chart's rules.

- the loss alert fires in Prometheus' /api/v1/alerts, naming the pair by node names,
  and the per-direction alert names the forward direction only;
- every panel query of the shipped dashboards returns data from that Prometheus.
"""

import json
import shutil
import time

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
    assert abs(float(loss[0]["value"]) - FORWARD_LOSS) < 0.15, (
        f"The loss ratio should be about {FORWARD_LOSS}: {loss[0]['value']}.")
    assert "node-a -> node-b" in loss[0]["annotations"]["summary"]
    directional = wait_firing(fleet, "StampDirectionalPacketLoss")
    assert [a["labels"]["direction"] for a in directional] == ["near_end"], (
        f"Only the forward direction loses packets: {directional}.")
    assert fleet.pair.items() <= directional[0]["labels"].items()
    for quiet in ("StampPeerNotAnswering", "StampNoReflectorAnswering", "StampRecordsDropped"):
        assert not firing(fleet.prom, quiet), f"{quiet} should stay silent: the peer answers."
