"""End to end: what the chart deploys, run on two namespaces standing in for two nodes.

    node A (198.18.0.1, eth0)                      node B (198.18.0.2, eth0)
    +- sender pod: stamp-sender + exporter :8080   +- sender pod: ... :8080
    +- reflector pod: stamp-reflector + exp :8081  +- reflector pod: ... :8081
    +- dnsmasq: the reflector Service's name  <--veth-->  +- dnsmasq: the same name
       -> 198.18.0.1, 198.18.0.2                            -> both addresses

Each container runs the command, arguments and environment read from the
manifests `helm template` renders (the image's ENV from the Dockerfile, its
venv here being .venv), with the pod's emptyDirs bind-mounted at the paths the
chart mounts them (a private mount namespace per container, as in a pod), the
exporter as the user the chart names, and in capabilities-only mode the
service with exactly the capabilities the manifest lists. Each node's resolver
is a real dnsmasq answering the headless Service's name with both nodes'
addresses, as cluster DNS answers with the reflector pods' host addresses.
The sender pod on A must report delay and loss series for B's reflector and
none for itself, and the other way round. In the dual-stack run the nodes have
IPv6 addresses too (2001:2::1, 2001:2::2) and dnsmasq answers A and AAAA, as
cluster DNS does for a PreferDualStack headless Service: each sender measures
its peer over both families, and the IPv6 sessions are scraped as
[2001:2::2]:862 (the IPv6 part needs the TC programs' IPv6 path).
"""

import os
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from stamp_bpf.common import addr
from stamp_bpf.lab.netns import Topology

import installtree
from test_chart import CHART, container, daemonset, helm_bin, helm_env, render, scenario_file  # noqa: F401
from test_chart_image import env_of_image

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
RELEASE, NAMESPACE = "stamp", "mesh"
IFACE = "eth0"
WAIT_S = 150


def image_env():
    """The Dockerfile's ENV, with the image's venv replaced by this checkout's."""
    env = env_of_image()
    env["PATH"] = env["PATH"].replace(env["STAMP_VENV"] + "/bin", str(VENV_BIN))
    env.pop("STAMP_VENV")
    return env


def parse_metrics(text):
    """[(name, {label: value}, float)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)', line)
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


class Node:
    """One namespace of the topology as a Kubernetes node running the release's pods."""

    def __init__(self, topo, host, workdir):
        self.topo, self.host, self.workdir = topo, host, workdir
        self.logs = {}

    def start_pod(self, ds):
        """Start every container of a DaemonSet's pod, sharing the pod's emptyDirs."""
        pod = ds["spec"]["template"]["spec"]
        name = ds["metadata"]["labels"]["app.kubernetes.io/component"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        pod_dir = self.workdir / f"{self.host.ns}-{name}"
        for vol in empty_dirs:
            (pod_dir / vol).mkdir(parents=True)
            os.chmod(pod_dir / vol, 0o1777)     # as kubelet makes an emptyDir
        for c in pod["containers"]:
            self._start_container(f"{name}/{c['name']}", c, pod, pod_dir, empty_dirs)

    def _start_container(self, label, c, pod, pod_dir, empty_dirs):
        sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        mounts = []
        for m in c.get("volumeMounts", []):
            if m["name"] in empty_dirs:
                mounts.append(f"mount --bind {pod_dir / m['name']} {m['mountPath']}")
            # hostPath mounts (/lib/modules, /usr/src) are the same paths here.
        drop = ["setpriv"]
        if "runAsUser" in sc:
            drop += [f"--reuid={sc['runAsUser']}", f"--regid={sc.get('runAsGroup', sc['runAsUser'])}",
                     "--clear-groups"]
        caps = sc.get("capabilities", {})
        if not sc.get("privileged") and "ALL" in caps.get("drop", []):
            keep = ",".join(f"+{cap.lower()}" for cap in caps.get("add", []))
            drop += [f"--bounding-set=-all{',' + keep if keep else ''}", "--inh-caps=-all"]
        if sc.get("allowPrivilegeEscalation") is False:
            drop.append("--no-new-privs")
        # The pod's emptyDirs (its /tmp among them) may cover the folder this
        # checkout is in (CI may clone under /tmp): in the container's own mount
        # namespace the venv (and the checkout, for an editable install) is
        # parked on /mnt across those mounts and put back at its own path.
        keep = installtree.install_dirs(VENV_BIN.parent)
        venv = VENV_BIN.parent
        argv = [f"{venv}/bin/python3", f"{venv}/bin/{c['command'][0]}"] + c["command"][1:] + c["args"]
        env = {**image_env(), **{e["name"]: self.env_value(e) for e in c.get("env", [])}}
        argv = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in argv]
        script = " && ".join([shlex.join(cmd) for cmd in installtree.park(keep)] + mounts
                             + installtree.restore(keep) + ['exec "$@"'])
        log = self.workdir / f"{self.host.ns}-{label.replace('/', '-')}.log"
        self.logs[label] = log
        with open(log, "wb") as out:
            self.topo.popen(self.host, ["env", "-i", *[f"{k}={v}" for k, v in env.items()],
                                        "sh", "-c", script, "sh", *drop, "--", *argv],
                            stdout=out, stderr=subprocess.STDOUT)

    def env_value(self, e):
        """An env entry's value; the downward API's spec.nodeName is this node's namespace."""
        if "value" in e:
            return e["value"]
        field = e["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "spec.nodeName", f"The test cannot provide {field} for {e['name']}."
        return self.host.ns

    def scrape(self, port):
        """The metrics of this node's exporter on `port`, scraped from inside the node."""
        code = ("import urllib.request,sys;"
                f"sys.stdout.write(urllib.request.urlopen('http://{self.host.addr}:{port}/metrics',"
                "timeout=5).read().decode())")
        res = self.topo.run(self.host, [str(VENV_BIN / "python"), "-c", code],
                            capture_output=True, text=True, timeout=20)
        return parse_metrics(res.stdout) if res.returncode == 0 else None

    def log_tail(self):
        return "\n".join(f"--- {label} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-8:])
                         for label, p in self.logs.items())


@pytest.fixture
def run_dir():
    """/run/stamp-bpf must exist as a mount point; created if missing, removed if still empty."""
    path = Path("/run/stamp-bpf")
    created = not path.exists()
    path.mkdir(exist_ok=True)
    yield path
    if created:
        try:
            path.rmdir()
        except OSError:
            pass


def readme_series_per_session(histogram):
    """chart/README.md's series per session: {"sender pod": n, "reflector pod": n}.

    The column of the default buckets, or of histogram.enabled with its defaults.
    """
    text = (CHART / "README.md").read_text()
    return {m.group(1): int(m.group(3 if histogram else 2)) for m in
            re.finditer(r"^\| (sender pod|reflector pod) \(.*?\| .*? \| (\d+) \| (\d+) \|$", text, re.M)}


def session_series(metrics, key, value):
    return [(n, l) for n, l, _ in metrics if l.get(key) == value]


def value_of(metrics, name, **labels):
    vals = [v for n, l, v in metrics if n == name and labels.items() <= l.items()]
    return sum(vals) if vals else None


@pytest.mark.timeout(330)
@pytest.mark.parametrize("scenario", ["default", "capabilities-only", "histogram",
                                      "dual-stack"])
def test_chart_mesh_on_two_nodes(helm_bin, helm_env, resolv_confs, run_dir, tmp_path, scenario):
    families = (4, 6) if scenario == "dual-stack" else (4,)
    values = "default" if scenario == "dual-stack" else scenario
    docs = render(helm_bin, helm_env, [scenario_file(values)], release=RELEASE, namespace=NAMESPACE)
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    assert svc["spec"].get("ipFamilyPolicy") == "PreferDualStack", \
        "The headless Service must ask for both families, so cluster DNS answers A and AAAA."
    sender_ds, reflector_ds = daemonset(docs, "sender"), daemonset(docs, "reflector")
    args = container(sender_ds, "sender")["args"]
    assert args[0] == IFACE and args[1] == "--reflector-dns", f"The default sender should resolve a name: {args}."
    dns_name = args[2]
    sender_port = int(container(sender_ds, "exporter")["ports"][0]["containerPort"])
    reflector_port = int(container(reflector_ds, "exporter")["ports"][0]["containerPort"])
    refl_udp = int(container(reflector_ds, "reflector")["args"][2])

    with Topology("direct", ipv6=6 in families) as topo:
        nodes = {}
        for host in (topo.sender, topo.reflector):
            # Every node's interface is eth0, as sender.interface/reflector.interface say.
            # Its IPv6 addresses must survive the rename's link down (the kernel
            # flushes them on down by default).
            if 6 in families:
                subprocess.run(["ip", "netns", "exec", host.ns, "sysctl", "-qw",
                                f"net.ipv6.conf.{host.ifname}.keep_addr_on_down=1"], check=True)
            for cmd in (["link", "set", host.ifname, "down"], ["link", "set", host.ifname, "name", IFACE],
                        ["link", "set", IFACE, "up"]):
                subprocess.run(["ip", "-n", host.ns, *cmd], check=True)
            host.ifname = IFACE
            resolv_confs(host.ns, f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\n"
                                  "nameserver 127.0.0.1\noptions ndots:5\n")
            topo.popen(host, ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                              "--conf-file=/dev/null", "--listen-address=127.0.0.1", "--bind-interfaces",
                              "--port=53", "--local=/cluster.local/", "--pid-file=", "--user=root",
                              # One A (and, dual-stack, one AAAA) record per reflector pod.
                              *(f"--host-record={dns_name},{','.join(h.ip(f) for f in families)}"
                                for h in (topo.sender, topo.reflector))],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            nodes[host.addr] = Node(topo, host, tmp_path)
        for node in nodes.values():
            node.start_pod(reflector_ds)
            node.start_pod(sender_ds)

        a, b = nodes[topo.sender.addr], nodes[topo.reflector.addr]
        pairs = [(a, b, f) for f in families] + [(b, a, f) for f in families]
        deadline = time.monotonic() + WAIT_S
        scraped = {}
        while time.monotonic() < deadline:
            scraped = {(n.host.addr, p): n.scrape(p) for n in (a, b) for p in (sender_port, reflector_port)}
            if all(m is not None for m in scraped.values()) and all(
                    (value_of(scraped[(x.host.addr, sender_port)], "stamp_packets_received_total",
                              reflector=addr.endpoint(y.host.ip(f), refl_udp)) or 0) >= 3
                    and value_of(scraped[(y.host.addr, reflector_port)], "stamp_reflector_packets_reflected_total",
                                 sender=addr.endpoint(x.host.ip(f), refl_udp))
                    for x, y, f in pairs):
                break
            time.sleep(1)
        else:
            pytest.fail(f"The mesh did not measure both ways within {WAIT_S} s ({scenario}).\n"
                        f"{a.log_tail()}\n{b.log_tail()}")

        for x, y, f in pairs:
            sm = scraped[(x.host.addr, sender_port)]
            peer = addr.endpoint(y.host.ip(f), refl_udp)
            own_sender = addr.endpoint(x.host.ip(f), refl_udp)
            for d in ("near_end", "far_end", "round_trip"):
                assert (value_of(sm, "stamp_delay_seconds_count", reflector=peer, direction=d) or 0) >= 3, (
                    f"The sender pod on {x.host.addr} should report {d} delays for {peer}.")
            assert value_of(sm, "stamp_packets_lost_total", reflector=peer) is not None, (
                f"The sender pod on {x.host.addr} should report a loss counter for {peer}.")
            own = [l for _, l, _ in sm if l.get("reflector", "").rpartition(":")[0].strip("[]")
                   in (x.host.addr, x.host.addr6)]
            assert not own, f"The sender pod on {x.host.addr} should not measure to its own node: {own[:3]}."
            rm = scraped[(y.host.addr, reflector_port)]
            for m, node in ((sm, x), (rm, y)):
                assert value_of(m, "stamp_node_address_info", node_name=node.host.ns,
                                address=node.host.addr) == 1, (
                    f"The exporters on {node.host.ns} should name it (downward API spec.nodeName) "
                    f"as the node of {node.host.addr}.")
            assert value_of(rm, "stamp_reflector_packets_reflected_total", sender=own_sender), (
                f"The reflector pod on {y.host.addr} should report the packets of {x.host.addr}'s sender.")
            readme = readme_series_per_session(histogram=scenario == "histogram")
            for what, got in (("sender pod", len(session_series(sm, "reflector", peer))),
                              ("reflector pod", len(session_series(rm, "sender", own_sender)))):
                assert got == readme[what], (
                    f"A session has {got} series in the {what}'s exporter; chart/README.md says "
                    f"{readme[what]} ({scenario}): one of them is wrong.")

        if scenario == "histogram":
            for node in (a, b):
                for comp in ("sender", "reflector"):
                    args = container(daemonset(docs, comp), comp)["args"]
                    path = args[args.index("--histpath") + 1]
                    assert path.startswith("/tmp/"), f"The {comp}'s histogram file should be in the pod's /tmp."
                    on_disk = tmp_path / f"{node.host.ns}-{comp}" / "tmp" / path[len("/tmp/"):]
                    until = time.monotonic() + 15
                    while not on_disk.exists() and time.monotonic() < until:
                        time.sleep(0.5)
                    assert on_disk.exists(), (
                        f"The {comp} on {node.host.addr} should write its histograms to {path}, "
                        "in the pod's /tmp emptyDir.")

        for node in (a, b):
            for label in ("sender/sender", "reflector/reflector"):
                text = node.logs[label].read_text(errors="replace")
                assert '"kernel_headers"' in text, (
                    f"The {label} start-up line on {node.host.addr} should say which kernel headers bcc used.")
