"""Node names: stamp_node_info and stamp_node_address_info from the exporter.

The addresses are the local ends of the sessions the exporter holds (the
sender's source address, the reflector's address), so a PromQL join names
both ends of every session (see tests/test_alerts.py for the join itself).
"""

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stamp_bpf.common import histogram, logs, records
from stamp_bpf.exporter.aggregator import Aggregator

from test_exporter import R, sender_packet

pytestmark = pytest.mark.unit


def samples(agg, name):
    return sorted(tuple(sorted(s.labels.items())) for fam in
                  text_string_to_metric_families(agg.metrics().decode())
                  for s in fam.samples if s.name == name)


def aggregator():
    return Aggregator(histogram.default_buckets(),
                      logs.configure("test", fmt="json", stream=open(os.devnull, "w")),
                      node_name="worker-3")


def test_node_name_is_exported_even_with_no_session():
    agg = aggregator()
    assert samples(agg, "stamp_node_info") == [(("node_name", "worker-3"),)], (
        "stamp_node_info should name the exporter's node from the start.")
    assert samples(agg, "stamp_node_address_info") == [], (
        "With no session the exporter knows none of its node's addresses.")


def test_local_ends_of_sessions_are_the_nodes_addresses():
    agg = aggregator()
    agg.handle(records.encode([sender_packet(0, R, 1000, 1000, (1, 1, 0, 0, 0, 0))]), 1.0)
    agg.handle(records.encode([records.ReflectorPacket("10.0.0.9", 862, "10.0.0.5", 862,
                                                       records.TS_BPF, 64, 0, 1, 2, 0, 1)]), 1.0)
    # A sender session whose source is not known yet (no reply so far) names no address.
    agg.handle(records.encode([records.SessionStats("10.0.0.7", 862, "0.0.0.0", 862,
                                                    1, 0, 0, 0, 0, 0, False)]), 1.0)
    got = samples(agg, "stamp_node_address_info")
    assert got == [(("address", "10.0.0.1"), ("node_name", "worker-3")),
                   (("address", "10.0.0.5"), ("node_name", "worker-3"))], (
        f"The sender's source and the reflector's address should be worker-3's, got {got}.")
    agg.expire(1000.0)
    assert samples(agg, "stamp_node_address_info") == [], (
        "Addresses should go with the sessions that named them.")
