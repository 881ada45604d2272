#!/usr/bin/env bash
# The GPU bundle without a device: staged from this build, it must resolve every library, run its
# CPU smoke test and the CPU instances of the CUDA suites, mark each GPU step "no device" and exit 0.
# With a GPU present the check would run for minutes: skipped (77), run the bundle by hand there.
# Usage: gpu_bundle_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "a GPU is present: run bench/gpu_bundle.sh and its gpu_check.sh by hand"; exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
BUILD_DIR="$build" bash "$src/bench/gpu_bundle.sh" --no-build "$work/bundle"
OUT="$work/out" WORK="$work/scratch" bash "$work/bundle/gpu_check.sh"
summary="$work/out/summary.md"
for step in preflight smoke; do grep -q "^| $step | passed |" "$summary" || { echo "$step did not pass"; exit 1; }; done
for step in tests sasrec sanitizer train bench infer; do
  grep -q "^| $step | no device |" "$summary" || { echo "$step is not marked no device"; exit 1; }
done
grep -q "^| tests | no device | [0-9]* | [1-9][0-9]* passed, 0 failed" "$summary" || { echo "no CPU test ran"; exit 1; }
[ "$(ls "$work/out" | wc -l)" -le 9 ] || { echo "more than 9 files in \$OUT"; exit 1; }
echo "bundle ran through without a device"
