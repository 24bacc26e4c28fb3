"""The stamp-bpf image, built from the repository's Dockerfile with Debian's podman.

Used by tests/test_image_build.py and tests/test_image_pods.py. No image
registry is reachable from CI, so the base debian:bookworm-slim is made from
Debian's archive first (scripts/make-base-image.sh, kept once made), and the
build never pulls. Podman's layer cache makes a second build of an unchanged
tree take seconds. Flags every podman call here needs on CI machines: runc
(crun refuses their hybrid cgroups) and explicit ulimits (raising rlimits is
not permitted there).
"""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MAX_IMAGE_BYTES = 450 * 10**6


def image_name():
    """The chart's default image: global.image.repository with the chart's appVersion."""
    values = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    return f"{values['global']['image']['repository']}:{values['global']['image']['tag'] or chart['appVersion']}"


def podman(*args, check=True, timeout=120, **kw):
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:6])} failed: {proc.stderr.strip()[-3000:]}")
    return proc


def require_podman():
    if not shutil.which("podman"):
        pytest.skip("no container engine: podman is not installed (scripts/setup.sh installs "
                    "podman, runc and debootstrap; install them to run the image tests)")


def build(tag, *extra, timeout=1500):
    """podman build of the repository's Dockerfile; the CompletedProcess."""
    argv = ["podman", "build", "--pull=never", *RUN_FLAGS, *extra, "-t", tag, str(ROOT)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


_built = []     # the image name once built: test modules importing the fixture share it


@pytest.fixture(scope="session")
def stamp_image():
    """Name of the image built from this checkout (the chart's default name)."""
    require_podman()
    if _built:
        return _built[0]
    base = subprocess.run(["bash", str(ROOT / "scripts" / "make-base-image.sh")],
                          capture_output=True, text=True, timeout=900)
    if base.returncode != 0:
        pytest.fail(f"scripts/make-base-image.sh failed: {base.stderr.strip()[-2000:]}")
    name = image_name()
    old = podman("image", "inspect", "--format", "{{.Id}}", name, check=False).stdout.strip()
    secret = ["--secret", f"id=ca-bundle,src={CA_BUNDLE}"] if CA_BUNDLE.exists() else []
    proc = build(name, *secret)
    if proc.returncode != 0:
        pytest.fail(f"podman build of the Dockerfile failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    new = podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
    if old and old != new:
        podman("rmi", old, check=False)     # the previous build, now untagged
    _built.append(name)
    return name
