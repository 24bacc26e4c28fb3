# stamp-bpf: one image for stamp-sender, stamp-reflector and stamp-exporter.
#
# USAGE (from the repository root; see docs/image.md):
#   docker build -t ghcr.io/spbnix/stamp-bpf:0.1.0 .
# Behind a proxy that re-signs HTTPS, hand pip your CA bundle as a build secret:
#   docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt -t ... .
#   podman build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt -t ... .
#
# The install step is scripts/setup.sh --runtime, the same script that
# `make demo` and `make test` run (so CI exercises it): Debian's bcc
# (python3-bpfcc), iproute2, ethtool, and a venv made from Debian's python3 with
# --system-site-packages holding the project. --headers-into unpacks Debian's
# generic kernel headers into one tree (not installed: the package would pull in
# gcc and binutils, which bcc never runs).
FROM debian:bookworm-slim

ENV STAMP_VENV=/opt/stamp-bpf/venv \
    STAMP_FALLBACK_KERNEL_HEADERS=/opt/stamp-bpf/kernel-headers \
    PATH=/opt/stamp-bpf/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY . /src/stamp-bpf

# One RUN, so nothing removed here stays in a lower layer (a multi-stage build
# would save nothing more). The CA bundle secret is optional: without it pip
# uses the image's own CA certificates. Removed after the install, as the
# services never use them at run time: pip and setuptools (the project is
# installed), apt's lists and caches, docs, and the source.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && bash /src/stamp-bpf/scripts/setup.sh --runtime --headers-into "$STAMP_FALLBACK_KERNEL_HEADERS" \
 && rm -rf "$STAMP_VENV"/bin/pip* "$STAMP_VENV"/lib/python3*/site-packages/pip \
           "$STAMP_VENV"/lib/python3*/site-packages/pip-*.dist-info \
           "$STAMP_VENV"/lib/python3*/site-packages/setuptools* \
           "$STAMP_VENV"/lib/python3*/site-packages/pkg_resources \
           "$STAMP_VENV"/lib/python3*/site-packages/_distutils_hack \
           "$STAMP_VENV"/lib/python3*/site-packages/distutils-precedence.pth \
           /src/stamp-bpf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
           /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log /root/.cache \
           /usr/share/man/* /usr/share/info/* /usr/share/lintian \
 && stamp-sender --help >/dev/null && stamp-reflector --help >/dev/null \
 && stamp-exporter --help >/dev/null

# The chart sets the command of each container; the services run as root
# (they load BPF programs), the exporter as 65534 (nobody).
CMD ["stamp-sender", "--help"]
