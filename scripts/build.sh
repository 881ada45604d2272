#!/usr/bin/env bash
# Configures and builds tastebud in Release into ${BUILD_DIR:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DTASTEBUD_CUDA="${TASTEBUD_CUDA:-AUTO}" "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
