# stamp-bpf: one image for stamp-sender, stamp-reflector and stamp-exporter.
#
# USAGE (from the repository root; see docs/image.md):
#   docker build -t viktordoronin/stamp-bpf:latest .
#
# The install steps are scripts/setup.sh --runtime, the same script that
# `make demo` and `make test` run (so CI exercises them): Debian's bcc
# (python3-bpfcc), generic kernel headers, and a venv made from Debian's python3
# with --system-site-packages holding the project.
FROM debian:bookworm-slim

ENV STAMP_VENV=/opt/stamp-bpf/venv \
    STAMP_FALLBACK_KERNEL_HEADERS=/opt/stamp-bpf/kernel-headers \
    PATH=/opt/stamp-bpf/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY . /src/stamp-bpf

# Pods mount the node's /lib/modules and /usr/src over the image's, so the
# generic headers setup.sh installed are merged (-common, then -amd64 on top)
# into one tree outside those folders: bcc takes it through BCC_KERNEL_SOURCE
# when the node has no headers of its own. The /lib/modules link setup.sh made
# names the build machine's kernel and is dropped.
RUN bash /src/stamp-bpf/scripts/setup.sh --runtime \
 && hdr=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n1) \
 && mkdir -p "$STAMP_FALLBACK_KERNEL_HEADERS" \
 && cp -a "${hdr%-amd64}-common/." "$STAMP_FALLBACK_KERNEL_HEADERS/" \
 && cp -a "$hdr/." "$STAMP_FALLBACK_KERNEL_HEADERS/" \
 && rm -f "$STAMP_FALLBACK_KERNEL_HEADERS/scripts" "$STAMP_FALLBACK_KERNEL_HEADERS/tools" \
 && echo "${hdr#/usr/src/linux-headers-}" > "$STAMP_FALLBACK_KERNEL_HEADERS/VERSION" \
 && test -f "$STAMP_FALLBACK_KERNEL_HEADERS/include/linux/kconfig.h" \
 && test -d "$STAMP_FALLBACK_KERNEL_HEADERS/include/generated" \
 && rm -rf /usr/src/linux-headers-* /lib/modules/* /src/stamp-bpf \
           /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /root/.cache \
 && stamp-sender --help >/dev/null && stamp-reflector --help >/dev/null \
 && stamp-exporter --help >/dev/null

# The chart sets the command of each container; the services run as root
# (they load BPF programs), the exporter as 65534 (nobody).
CMD ["stamp-sender", "--help"]
