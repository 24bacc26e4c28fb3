"""The Dockerfile and the chart's image name, checked without building.

The image is installed by scripts/setup.sh --runtime (the script CI runs), the
build context keeps what that install needs, the chart's default image is the
name the docs build, and a service falls back to the image's headers. The image
itself is built and run by tests/test_image_build.py and tests/test_image_pods.py.
"""

import os
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions():
    """(INSTRUCTION, argument text) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_of_image():
    """The ENV of the Dockerfile as a dict (KEY=VALUE form)."""
    env = {}
    for word, rest in instructions():
        if word == "ENV":
            env.update(dict(kv.split("=", 1) for kv in rest.split()))
    return env


def run_commands():
    """The && -separated commands of the Dockerfile's RUN instructions."""
    return [c.strip() for word, rest in instructions() if word == "RUN" for c in rest.split("&&")]


def dockerignored(path):
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(path).parts
    return any(fnmatch(path, p) or fnmatch(parts[0], p) or
               (p.startswith("**/") and any(fnmatch(x, p[3:]) for x in parts)) for p in patterns)


def test_image_is_installed_by_setup_sh():
    ins = instructions()
    assert ins[0] == ("FROM", "debian:bookworm-slim"), "The image should start from debian:bookworm-slim."
    runs = run_commands()
    setup = [c for c in runs if "setup.sh" in c]
    assert setup == ['bash /src/stamp-bpf/scripts/setup.sh --runtime --headers-into "$STAMP_FALLBACK_KERNEL_HEADERS"'], (
        "The image's install step should be scripts/setup.sh --runtime, the script CI runs, "
        f"not a second copy; the RUN commands naming setup.sh are {setup!r}.")
    for c in runs:
        assert not re.match(r"(apt-get|apt|pip3?|\S*python3 -m (venv|pip)|\S*/pip)\b", c), (
            f"The Dockerfile should install nothing itself (setup.sh does): {c!r}.")
    assert ("COPY", ". /src/stamp-bpf") in ins
    assert env_of_image()["STAMP_VENV"] == "/opt/stamp-bpf/venv", "setup.sh should put the venv at STAMP_VENV."
    assert env_of_image()["PATH"].startswith("/opt/stamp-bpf/venv/bin:"), (
        "The venv's commands should come first on PATH, so the chart's commands find them.")


def test_build_context_keeps_what_the_install_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["scripts/setup.sh", "pyproject.toml", project["project"]["readme"]]
    needed += list(project["tool"]["setuptools"]["package-dir"].values())
    for path in needed:
        assert (ROOT / path).exists(), f"{path} is needed by the image's install and is missing."
        assert not dockerignored(path), f".dockerignore leaves out {path}, which the image's install needs."
    for path in (".git", ".venv", ".tools", "tests", "chart"):
        assert dockerignored(path), f".dockerignore should leave {path} out of the build context."


def test_chart_default_image_is_the_name_the_docs_build():
    values = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    assert values["global"]["image"]["tag"] == "", "The default tag should be empty: the appVersion."
    image = f"{values['global']['image']['repository']}:{chart['appVersion']}"
    for doc in ("docs/image.md", "chart/README.md"):
        text = " ".join((ROOT / doc).read_text().split())
        assert f"docker build -t {image} ." in text, f"{doc} should build the chart's default image {image}."
        assert "Go implementation" in text, (
            f"{doc} should warn that the seed's viktordoronin/stamp-bpf:latest is the Go implementation.")
    header = DOCKERFILE.read_text()
    assert f"docker build -t {image} ." in header, f"The Dockerfile's header should build {image}."


def test_chart_app_version_is_the_project_version():
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == project, (
        f"chart/Chart.yaml's appVersion {chart['appVersion']} should be the project's version {project}.")


def test_service_falls_back_to_the_image_headers(tmp_path):
    tree = tmp_path / "kh"
    (tree / "include" / "linux").mkdir(parents=True)
    (tree / "include" / "linux" / "kconfig.h").touch()
    code = ("import os, platform; platform.release = lambda: '0.0-none'; "
            "from stamp_bpf.common import bpfprog; "
            "print(bpfprog.kernel_headers()[1], os.environ['BCC_KERNEL_SOURCE'])")
    env = {k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"}
    env["STAMP_FALLBACK_KERNEL_HEADERS"] = str(tree)
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", code], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [str(tree), str(tree)], (
        f"With no node headers the service should hand the image's tree to bcc: {out.stdout}{out.stderr}")
