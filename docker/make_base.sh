#!/usr/bin/env bash
# A local stand-in for the published base image, made from Debian packages only (no registry here):
# debootstrap bookworm (minbase) with Debian's python3.11 and venv, imported with `docker import`.
# Usage: docker/make_base.sh [TAG]   (needs root, debootstrap, and a running docker engine)
set -euo pipefail
tag="${1:-safetyheads-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs" "$mirror"
# what debootstrap leaves behind that an image does not need: package lists and caches
rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin "$work"/rootfs/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$work/rootfs" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  -c 'CMD ["/bin/bash"]' \
  -m "debootstrap bookworm minbase + python3 python3-venv ca-certificates from $mirror" - "$tag"
echo "base image: $tag"
