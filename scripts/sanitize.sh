#!/usr/bin/env bash
# Builds everything with AddressSanitizer and UndefinedBehaviorSanitizer (clang when present) into
# ${BUILD_DIR:-build-asan} and runs the whole test suite under them; any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --fuzz
build_dir=${BUILD_DIR:-build-asan}
compiler=()
command -v clang++ >/dev/null && compiler=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTASTEBUD_CUDA=OFF -DTASTEBUD_SANITIZE=ON \
  -DTASTEBUD_BUILD_BENCHMARKS=OFF "${compiler[@]}" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)"
