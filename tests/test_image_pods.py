"""The chart's pods, from the built image, under podman, on two namespace nodes.

    node A (198.18.0.1, eth0)                       node B (198.18.0.2, eth0)
    +- sender pod: sender + exporter :8080   <--veth-->  +- sender pod   (same)
    +- reflector pod: reflector + exporter :8081         +- reflector pod (same)
    +- dnsmasq: the reflector Service's name -> both nodes' addresses

The chart is rendered (default values: privileged; capabilities-only values),
and every container of each DaemonSet's pod runs as `podman run` of the image
the test built, the way a kubelet would: command and args as entrypoint and
arguments, env, the pod's emptyDirs as shared host folders (mode 1777, as
kubelet makes them), hostPath mounts read-only, hostNetwork as the node's
network namespace, and the security context mapped one to one: privileged,
capabilities (drop ALL, add ...), seccomp (RuntimeDefault is podman's default
profile, Unconfined turns it off), runAsUser/runAsGroup, readOnlyRootFilesystem
(without podman's extra tmpfs mounts), allowPrivilegeEscalation=false as
no-new-privileges. Checked: every node pair is measured both ways, each
sidecar's /metrics serves its sessions, every log line of every container is
one JSON object, and once the pods are stopped no TC filter of ours is left.
A third run keeps capabilities-only mode but drops the seccomp line from the
pod spec: under podman's default profile the service must fail with one line
naming seccomp.
"""

import json
import re
import shutil
import subprocess
import time

import pytest

from podman_image import RUN_FLAGS, podman, stamp_image  # noqa: F401
from stamp_bpf.lab.netns import Topology
from test_chart import container, daemonset, helm_bin, helm_env, render, scenario_file  # noqa: F401
from test_chart_e2e import parse_metrics, value_of  # noqa: F401

pytestmark = pytest.mark.timeout(600)
RELEASE, NAMESPACE = "stamp", "mesh"
IFACE = "eth0"
WAIT_S = 180
OUR_TC_HANDLES = ("0x5245464c", "0x53454e44")    # the reflector's and the sender's filter handles


def podman_args(ds, c, node_ns, pod_dir, name, resolv):
    """`podman run` arguments for one container of a DaemonSet's pod, from its manifest."""
    pod = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    argv = ["run", "-d", "--name", name, *RUN_FLAGS, "--pull=never",
            "--network", f"ns:/run/netns/{node_ns}", "-v", f"{resolv}:/etc/resolv.conf:ro",
            "--entrypoint", json.dumps(c["command"])]
    for m in c.get("volumeMounts", []):
        vol = volumes[m["name"]]
        if "emptyDir" in vol:
            src = pod_dir / m["name"]
        elif "hostPath" in vol:
            src = vol["hostPath"]["path"]
        else:
            pytest.fail(f"The pod mounts a volume kind this test does not map: {vol}")
        argv += ["-v", f"{src}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"]
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:   # the downward API, as the kubelet fills it: the node is the namespace
            field = e["valueFrom"]["fieldRef"]["fieldPath"]
            assert field == "spec.nodeName", f"The test cannot provide {field} for {e['name']}."
            env[e["name"]] = node_ns
        argv += ["-e", f"{e['name']}={env[e['name']]}"]
    if sc.get("privileged"):
        argv.append("--privileged")
    caps = sc.get("capabilities", {})
    for cap in caps.get("drop", []):
        argv += ["--cap-drop", cap]
    for cap in caps.get("add", []):
        argv += ["--cap-add", cap]
    seccomp = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        argv += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        pytest.fail(f"seccompProfile {seccomp} is not mapped by this test.")
    if "runAsUser" in sc:
        argv += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    if sc.get("runAsNonRoot"):
        assert sc.get("runAsUser", 0) != 0, f"{name}: runAsNonRoot with user 0 would not start."
    if sc.get("readOnlyRootFilesystem"):
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    # $(VAR) in args is the kubelet's to expand, from the container's env.
    args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in c.get("args", [])]
    return argv + ["--", "IMAGE", *args]


class PodmanNode:
    """One namespace of the topology as a node whose kubelet runs pods with podman."""

    def __init__(self, topo, host, workdir, image, prefix):
        self.topo, self.host, self.workdir, self.image, self.prefix = topo, host, workdir, image, prefix
        self.containers = []        # podman container names, in start order

    def start_pod(self, ds, resolv):
        comp = ds["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = ds["spec"]["template"]["spec"]
        pod_dir = self.workdir / f"{self.host.ns}-{comp}"
        for v in pod["volumes"]:
            if "emptyDir" in v:
                (pod_dir / v["name"]).mkdir(parents=True)
                (pod_dir / v["name"]).chmod(0o1777)
        for c in pod["containers"]:
            name = f"{self.prefix}-{self.host.ns}-{comp}-{c['name']}"
            argv = podman_args(ds, c, self.host.ns, pod_dir, name, resolv)
            argv[argv.index("IMAGE")] = self.image
            self.containers.append(name)
            podman(*argv)

    def scrape(self, port):
        code = ("import urllib.request,sys;"
                f"sys.stdout.write(urllib.request.urlopen('http://{self.host.addr}:{port}/metrics',"
                "timeout=5).read().decode())")
        res = self.topo.run(self.host, ["python3", "-c", code], capture_output=True, text=True, timeout=20)
        return parse_metrics(res.stdout) if res.returncode == 0 else None

    def logs(self, name):
        proc = podman("logs", name, check=False)
        return proc.stdout + proc.stderr

    def log_tail(self):
        return "\n".join(f"--- {n} ---\n" + "\n".join(self.logs(n).splitlines()[-6:]) for n in self.containers)

    def stop(self):
        for name in reversed(self.containers):
            podman("stop", "-t", "20", name, check=False, timeout=60)

    def remove(self):
        for name in self.containers:
            podman("rm", "-f", name, check=False, timeout=60)


def our_filters(topo, host):
    lines = []
    for hook in ("ingress", "egress"):
        out = topo.run(host, ["tc", "filter", "show", "dev", host.ifname, hook],
                       capture_output=True, text=True).stdout
        lines += [x for x in out.splitlines() if any(h in x for h in OUR_TC_HANDLES)]
    return lines


def make_nodes(topo, resolv_confs, workdir, image, prefix, dns_name):
    nodes = []
    for host in (topo.sender, topo.reflector):
        for cmd in (["link", "set", host.ifname, "down"], ["link", "set", host.ifname, "name", IFACE],
                    ["link", "set", IFACE, "up"]):
            subprocess.run(["ip", "-n", host.ns, *cmd], check=True)
        host.ifname = IFACE
        resolv_confs(host.ns, f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\n"
                              "nameserver 127.0.0.1\noptions ndots:5\n")
        topo.popen(host, ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                          "--conf-file=/dev/null", "--listen-address=127.0.0.1", "--bind-interfaces",
                          "--port=53", "--local=/cluster.local/", "--pid-file=", "--user=root",
                          f"--host-record={dns_name},{topo.sender.addr}",
                          f"--host-record={dns_name},{topo.reflector.addr}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nodes.append(PodmanNode(topo, host, workdir, image, prefix))
    return nodes


@pytest.fixture
def podman_cleanup():
    """Every PodmanNode registered here has its containers removed, also on failure."""
    nodes = []
    yield nodes
    for n in nodes:
        n.remove()


@pytest.mark.parametrize("scenario", ["default", "capabilities-only"])
def test_pods_measure_the_mesh_under_podman(helm_bin, helm_env, stamp_image, resolv_confs,
                                            podman_cleanup, tmp_path, scenario):
    if not shutil.which("dnsmasq"):
        pytest.fail("dnsmasq (scripts/setup.sh installs dnsmasq-base) answers the Service's name.")
    docs = render(helm_bin, helm_env, [scenario_file(scenario)], release=RELEASE, namespace=NAMESPACE)
    sender_ds, reflector_ds = daemonset(docs, "sender"), daemonset(docs, "reflector")
    for ds in (sender_ds, reflector_ds):
        for c in ds["spec"]["template"]["spec"]["containers"]:
            assert c["image"] == stamp_image, f"The chart's image {c['image']} is not the one built."
    dns_name = container(sender_ds, "sender")["args"][2]
    sender_port = int(container(sender_ds, "exporter")["ports"][0]["containerPort"])
    reflector_port = int(container(reflector_ds, "exporter")["ports"][0]["containerPort"])
    refl_udp = int(container(reflector_ds, "reflector")["args"][2])

    with Topology("direct") as topo:
        a, b = make_nodes(topo, resolv_confs, tmp_path, stamp_image, f"stamp-pod-{scenario}", dns_name)
        podman_cleanup += [a, b]
        for node in (a, b):
            resolv = f"/etc/netns/{node.host.ns}/resolv.conf"
            node.start_pod(reflector_ds, resolv)
            node.start_pod(sender_ds, resolv)
        pairs = [(a, b), (b, a)]
        deadline = time.monotonic() + WAIT_S
        scraped = {}
        while time.monotonic() < deadline:
            scraped = {(n.host.addr, p): n.scrape(p) for n in (a, b) for p in (sender_port, reflector_port)}
            if all(m is not None for m in scraped.values()) and all(
                    (value_of(scraped[(x.host.addr, sender_port)], "stamp_packets_received_total",
                              reflector=f"{y.host.addr}:{refl_udp}") or 0) >= 3
                    and value_of(scraped[(y.host.addr, reflector_port)],
                                 "stamp_reflector_packets_reflected_total", sender=f"{x.host.addr}:{refl_udp}")
                    for x, y in pairs):
                break
            time.sleep(2)
        else:
            pytest.fail(f"The pods did not measure both ways within {WAIT_S} s ({scenario}).\n"
                        f"{a.log_tail()}\n{b.log_tail()}")

        for x, y in pairs:
            sm = scraped[(x.host.addr, sender_port)]
            peer = f"{y.host.addr}:{refl_udp}"
            for d in ("near_end", "far_end", "round_trip"):
                assert (value_of(sm, "stamp_delay_seconds_count", reflector=peer, direction=d) or 0) >= 3, (
                    f"The sender pod's exporter on {x.host.addr} should serve {d} delays for {peer}.")
            own = [l for _, l, _ in sm if l.get("reflector", "").startswith(f"{x.host.addr}:")]
            assert not own, f"The sender pod on {x.host.addr} should not measure to its own node: {own[:3]}."

        for node in (a, b):
            node.stop()
            assert not our_filters(topo, node.host), (
                f"TC filters of ours are left on {node.host.addr} after the pods stopped: "
                f"{our_filters(topo, node.host)}")
            for name in node.containers:
                text = node.logs(name)
                assert text.strip(), f"{name} logged nothing."
                for line in text.splitlines():
                    try:
                        assert isinstance(json.loads(line), dict)
                    except (ValueError, AssertionError):
                        pytest.fail(f"{name} logged a line that is not one JSON object: {line!r}")
            for comp in ("sender", "reflector"):
                text = node.logs(f"{node.prefix}-{node.host.ns}-{comp}-{comp}")
                assert '"kernel_headers"' in text and '"detached"' in text, (
                    f"The {comp} on {node.host.addr} should log its headers at start and detach at stop.")


def test_capabilities_without_seccomp_line_names_seccomp(helm_bin, helm_env, stamp_image, resolv_confs,
                                                         podman_cleanup, tmp_path):
    """Capabilities-only mode under the runtime's default profile: one line naming seccomp."""
    sc = {"privileged": False, "capabilities": {"drop": ["ALL"],
                                                "add": ["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE",
                                                        "DAC_OVERRIDE"]}}
    values = tmp_path / "caps-runtime-default-values.yaml"
    values.write_text(json.dumps({"security": {"containerSecurityContext": sc}}))
    docs = render(helm_bin, helm_env, [values], release=RELEASE, namespace=NAMESPACE)
    ds = daemonset(docs, "reflector")
    assert container(ds, "reflector")["securityContext"] == sc, "The values should render as given."
    with Topology("direct") as topo:
        a, _ = make_nodes(topo, resolv_confs, tmp_path, stamp_image, "stamp-pod-seccomp", "unused.example")
        podman_cleanup.append(a)
        c = container(ds, "reflector")
        name = f"{a.prefix}-{a.host.ns}-reflector"
        pod_dir = tmp_path / "pod"
        for v in ds["spec"]["template"]["spec"]["volumes"]:
            if "emptyDir" in v:
                (pod_dir / v["name"]).mkdir(parents=True)
                (pod_dir / v["name"]).chmod(0o1777)
        argv = podman_args(ds, c, a.host.ns, pod_dir, name, f"/etc/netns/{a.host.ns}/resolv.conf")
        argv[argv.index("IMAGE")] = stamp_image
        a.containers.append(name)
        podman(*argv)
        rc = podman("wait", name, timeout=200).stdout.strip()
        text = a.logs(name)
    assert rc == "1", f"The reflector should exit 1 when seccomp refuses bpf(); exit {rc}: {text}"
    lines = [json.loads(x) for x in text.splitlines()]
    failed = [x for x in lines if x.get("event") == "failed"]
    assert len(failed) == 1 and failed[0]["reason"].startswith("seccomp:"), (
        f"The reflector should say in one line that seccomp refused bpf(): {text}")
    assert "Failed to compile" not in text, f"bcc's compile message leaked out: {text}"
