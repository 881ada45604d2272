#!/usr/bin/env bash
# CI's second half (issue 15): one clang build with AddressSanitizer, UndefinedBehaviorSanitizer and
# libFuzzer instrumentation into ${BUILD_DIR:-build-hardening}; the unit tests run under the
# sanitizers (any report fails), then every libFuzzer harness of tests/fuzz for ${FUZZ_SECONDS:-30}
# seconds from its seed corpus (a finding fails, its input kept in BUILD_DIR/findings/). CPU only,
# without MPI (Open MPI's own allocations are not this project's to report).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --fuzz
build_dir=${BUILD_DIR:-build-hardening}
CC=clang CXX=clang++ cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTASTEBUD_CUDA=OFF \
  -DTASTEBUD_MPI=OFF -DTASTEBUD_FUZZ=ON -DTASTEBUD_BUILD_BENCHMARKS=OFF -DTASTEBUD_WERROR=ON >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)"
BUILD_DIR="$build_dir" FUZZ_BUILT=1 bash scripts/fuzz.sh
