#!/usr/bin/env bash
# make-base-image.sh - make the Dockerfile's base, debian:bookworm-slim, from Debian's archive.
#
# USAGE: scripts/make-base-image.sh [ENGINE]   (run as root; ENGINE defaults to podman)
#
# Where no image registry is reachable (only Debian's archive), the base image
# the Dockerfile starts FROM is made here: debootstrap --variant=minbase of
# bookworm, with what Docker's official -slim variant adds on top (apt sources
# for bookworm, -updates and -security; dpkg excludes for docs, man pages and
# locales; no apt lists), imported under the name debian:bookworm-slim.
# Idempotent: an image already under that name is kept (remove it to remake it).
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              BASE_IMAGE (default debian:bookworm-slim).
set -euo pipefail

engine=${1:-podman}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
name=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}

die() { echo "make-base-image: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap makes device nodes and chroots)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap (scripts/setup.sh installs it)"
command -v "$engine" >/dev/null || die "$engine not found: apt-get install podman (scripts/setup.sh installs it)"

if "$engine" image exists "$name" 2>/dev/null; then
  echo "make-base-image: $name already exists; kept" >&2
  exit 0
fi

root=$(mktemp -d /var/tmp/bookworm-slim.XXXXXX)
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || die "debootstrap from $mirror failed: $(tail -n3 "$root.log")"
rm -f "$root.log"

# What the official -slim image adds: no docs, man pages or locales from later installs.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

tar -C "$root" --numeric-owner -c . | "$engine" import --change 'CMD ["bash"]' - "$name" >/dev/null \
  || die "$engine import of the debootstrap tree failed"
echo "make-base-image: made $name from $mirror" >&2
