#!/usr/bin/env bash
# Configures and builds tastebud in Release into ${BUILD_DIR:-build}: every target, or only those
# named in ${TARGETS} (space-separated; scripts/demo.sh builds just `tastebud`). Arguments go to the
# configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
# Warnings are errors here (TASTEBUD_WERROR=OFF to relax): on Debian 12's compilers the build prints none.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DTASTEBUD_CUDA="${TASTEBUD_CUDA:-AUTO}" \
  -DTASTEBUD_WERROR="${TASTEBUD_WERROR:-ON}" "$@" >/dev/null
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j"$(nproc)" "${targets[@]}"
