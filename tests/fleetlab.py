"""A measured two-node mesh with its exporters and a real Prometheus, for the fleet tests.

    node-a: stamp-sender  --[emulator: forward loss]-->  node-b: stamp-reflector
    stamp-exporter --node-name node-a (root ns)         stamp-exporter --node-name node-b
                 \\_____ Prometheus (root ns): both scraped every second, ____/
                        the chart's rules loaded (short windows)

The exporters run in the root namespace on loopback (the services reach them
through ipc:// sockets in a folder), so Prometheus scrapes them directly.
"""

import importlib.util
import os
import shutil
import tempfile
import time

from stamp_bpf.lab.netns import Topology

from conftest import Service, command, require_root
from test_exporter import ExporterProcess
from test_exporter_prometheus import PrometheusServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORWARD_LOSS = 0.3
# Short windows so the test sees alerts in seconds; the thresholds as the chart's values.
RULE_VALUES = ["monitoring.prometheusRule.window=15s", "monitoring.prometheusRule.lossRatio=0.1",
               "monitoring.prometheusRule.lossFor=0s", "monitoring.prometheusRule.notAnsweringFor=0s"]


def chart_rules(sets):
    """The chart's rules file rendered by helm with `sets` (scripts/contrib.py's renderer)."""
    spec = importlib.util.spec_from_file_location("contrib", os.path.join(ROOT, "scripts", "contrib.py"))
    contrib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contrib)
    return contrib.rules_text(sets)


class FleetLab:
    def __init__(self):
        require_root()
        self.folder = tempfile.mkdtemp(prefix="stf-")
        self.exporters, self.services, self.prom, self.topo = [], [], None, None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        f = self.folder
        rules = os.path.join(f, "stamp-bpf.rules.yml")
        with open(rules, "w") as out:
            out.write(chart_rules(RULE_VALUES))
        os.mkdir(os.path.join(f, "topo"))
        self.topo = Topology("emulated", workdir=os.path.join(f, "topo"),
                             emulator_args=["--drop-prob", f"fwd:{FORWARD_LOSS}"])
        self.topo.__enter__()
        s, r = self.topo.sender, self.topo.reflector
        self.a = ExporterProcess(f, "--node-name", "node-a", endpoint=f"ipc://{f}/a.sock")
        self.b = ExporterProcess(f, "--node-name", "node-b", endpoint=f"ipc://{f}/b.sock")
        self.exporters = [self.a, self.b]
        self.reflector = self._service(r, "stamp-reflector", r.ifname, "--zmq", self.b.endpoint,
                                       ready="reflecting")
        self.sender = self._service(s, "stamp-sender", s.ifname, r.addr, "-i", "0.05", "-w", "0.2",
                                    "--late-window", "0.2", "--zmq", self.a.endpoint, ready="sending")
        self.pair = {"sender": f"{s.addr}:862", "reflector": f"{r.addr}:862",
                     "sender_node": "node-a", "reflector_node": "node-b"}
        self.prom = PrometheusServer(f, [self.a.port, self.b.port], rule_files=[rules])
        deadline = time.monotonic() + 60
        while True:
            try:
                if len(self.prom.api("rules")["groups"]) == 3:
                    break
            except OSError:
                pass            # not listening yet
            if time.monotonic() > deadline or self.prom.proc.poll() is not None:
                raise RuntimeError(f"Prometheus did not load the rules: "
                                   f"{open(self.prom.log.name).read()[-2000:]}")
            time.sleep(0.5)

    def _service(self, host, name, *args, ready):
        svc = Service(self.topo, host, [command(name), *map(str, args)],
                      os.path.join(self.folder, f"{name}.log"))
        self.services.append(svc)
        svc.wait_event(ready, 120)
        return svc

    def close(self):
        if self.prom:
            self.prom.stop()
        for svc in self.services:
            svc.stop()
        for e in self.exporters:
            e.stop()
        if self.topo:
            self.topo.__exit__(None, None, None)
        shutil.rmtree(self.folder, ignore_errors=True)
