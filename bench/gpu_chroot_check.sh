#!/usr/bin/env bash
# Proves that the GPU bundle needs nothing a bare GPU machine lacks: builds it (bench/gpu_bundle.sh),
# makes a Debian minbase chroot (debootstrap --variant=minbase bookworm: none of the -dev packages,
# no libgomp, no Python), bind-mounts the CUDA toolkit at /usr/local/cuda, and runs the bundle's
# gpu_check.sh inside it. Without a GPU every GPU step must say "no device" and the check exit 0.
#
# Needs root and debootstrap (installed here if missing); CI does not run it.
# Usage: bash bench/gpu_chroot_check.sh [OUT_DIR]   (CHROOT, default /tmp/tastebud-chroot, is
# kept between runs; BUNDLE, default /tmp/tastebud-bundle; CUDA, default /usr/local/cuda)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-/tmp/tastebud-chroot-out}"
CHROOT="${CHROOT:-/tmp/tastebud-chroot}"
BUNDLE="${BUNDLE:-/tmp/tastebud-bundle}"
CUDA="${CUDA:-/usr/local/cuda}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

[ "$(id -u)" = 0 ] || { echo "gpu_chroot_check: needs root (debootstrap, mount, chroot)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi
if [ ! -x "$CHROOT/bin/bash" ]; then
  rm -rf "$CHROOT"
  debootstrap --variant=minbase bookworm "$CHROOT" "$MIRROR"
fi
if ls "$CHROOT"/usr/lib/x86_64-linux-gnu/libgomp.so* >/dev/null 2>&1; then
  echo "gpu_chroot_check: $CHROOT has libgomp; it should be a bare minbase" >&2
  exit 1
fi

bash "$ROOT/bench/gpu_bundle.sh" "$BUNDLE"
rm -rf "$CHROOT/bundle" "$CHROOT/out"
cp -a "$BUNDLE" "$CHROOT/bundle"
mkdir -p "$CHROOT/usr/local/cuda" "$CHROOT/proc" "$CHROOT/dev" "$CHROOT/out"
cleanup() {
  for m in "$CHROOT/usr/local/cuda" "$CHROOT/proc" "$CHROOT/dev"; do
    mountpoint -q "$m" && umount -l "$m"
  done
  true
}
trap cleanup EXIT
mount --bind "$CUDA" "$CHROOT/usr/local/cuda"
mount -t proc proc "$CHROOT/proc"
mount --bind /dev "$CHROOT/dev"

status=0
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root OUT=/out WORK=/tmp/gpu-check \
  bash /bundle/gpu_check.sh || status=$?
rm -rf "$OUT_DIR"
cp -r "$CHROOT/out" "$OUT_DIR"
echo "gpu_chroot_check: gpu_check.sh exited $status inside the minbase chroot; logs in $OUT_DIR"
exit "$status"
