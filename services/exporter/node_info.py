"""Node names: which node this exporter runs on, and which addresses are that node's.

Series carry addresses ("10.0.3.17:862"); people think in node names. The
exporter is told its node's name (--node-name: on Kubernetes the pod's
spec.nodeName through the downward API, elsewhere the host name) and says
which addresses belong to it: the local end of its sessions (the sender's
source address, the reflector's address). A PromQL join on `address` then
names both ends of every session, with no Kubernetes API rights and no
kube-state-metrics (chart/files/rules.yaml, recording rule stamp:node_address:info).
"""

from prometheus_client.core import GaugeMetricFamily


def _address(endpoint):
    return endpoint.rpartition(":")[0]


class NodeInfo:
    """A prometheus collector: stamp_node_info and stamp_node_address_info.

    `tables` maps a session table to the label naming its local end
    ({sender table: "sender", reflector table: "reflector"}).
    """

    def __init__(self, node_name, tables):
        self.node_name = node_name
        self.tables = tables

    def addresses(self):
        """This node's addresses seen as the local end of a session (0.0.0.0, unknown, left out)."""
        out = set()
        for table, local in self.tables.items():
            out.update(_address(s.labels[local]) for s in table.sessions.values())
        out.discard("0.0.0.0")
        return sorted(out)

    def collect(self):
        node = GaugeMetricFamily("stamp_node_info", "Always 1; node_name is the node this "
                                 "exporter runs on (--node-name).", labels=["node_name"])
        node.add_metric([self.node_name], 1)
        yield node
        addr = GaugeMetricFamily("stamp_node_address_info", "Always 1: address is one of "
                                 "node_name's, the local end of a session here.",
                                 labels=["node_name", "address"])
        for a in self.addresses():
            addr.add_metric([self.node_name, a], 1)
        yield addr
