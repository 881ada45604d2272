#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang, ASan and UBSan into
# ${BUILD_DIR:-build-fuzz} and runs each for ${FUZZ_SECONDS:-30} seconds from its seed corpus
# (tests/fuzz/corpus/<name>, copied: the checked-in seeds do not grow). Prints the executions per
# harness; a finding stops the script with a non-zero exit, its input kept in BUILD_DIR/findings/.
# Usage: bash scripts/fuzz.sh [HARNESS...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --fuzz
build_dir=${BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-30}
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(fuzz_csv fuzz_schema fuzz_filter fuzz_batch_line fuzz_model_files fuzz_model_dir fuzz_job_file fuzz_job_config fuzz_dataset_column)
# FUZZ_BUILT=1: BUILD_DIR already holds the harnesses (scripts/hardening.sh built them with the tests).
if [ "${FUZZ_BUILT:-0}" != 1 ]; then
  CC=clang CXX=clang++ cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTASTEBUD_CUDA=OFF \
    -DTASTEBUD_FUZZ=ON -DTASTEBUD_BUILD_TESTS=OFF -DTASTEBUD_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build "$build_dir" -j"$(nproc)" --target "${harnesses[@]}"
fi
mkdir -p "$build_dir/findings"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
for name in "${harnesses[@]}"; do
  corpus="$build_dir/corpus/$name"
  rm -rf "$corpus" && mkdir -p "$corpus"
  cp tests/fuzz/corpus/"${name#fuzz_}"/* "$corpus"/
  log="$build_dir/$name.log"
  # The harnesses' scratch files go under the build directory, emptied before each harness.
  export TMPDIR="$(realpath -m "$build_dir")/tmp"
  rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
  if ! "$build_dir/tests/fuzz/$name" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
       -print_final_stats=1 -artifact_prefix="$build_dir/findings/$name-" "$corpus" >"$log" 2>&1; then
    tail -40 "$log"
    echo "$name: FINDING (input in $build_dir/findings/)" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "$name: $execs executions in ${seconds}s, no finding ($(ls "$corpus" | wc -l) inputs in the corpus)"
done
