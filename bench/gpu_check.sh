#!/usr/bin/env bash
# The GPU check: one call, under 8 minutes on one H200.
#   1. configure and build for sm_90 into build-gpu (tastebud, test_backends, test_gpu_scorer,
#      bench_kernels_cuda);
#   2. run the typed backend suite and the GPU scorer's tests (the CUDA instances must run, not skip);
#   3. generate and import a MovieLens-20M-sized dataset (138K users, 27K items, 20M interactions);
#   4. train NeuMF (64 factors, layers 256,256,128,64, 4 negatives) with --device cuda at batch
#      65536 and 1048576 (FP32 and TF32), a few epochs each, HR@10 after every epoch;
#   5. the same first epoch on the CPU path, on a 10% subsample (samples/s is per sample, so the
#      ratio holds), for the speed ratio;
#   6. a short pass of the kernel micro-benchmarks;
#   7. batch inference's top-K (paper model, 4096 users x 25K items, k 25): users/s, and the seconds
#      that makes for 1M users;
#   8. batch-infer end to end on a 1M-user shop (25K items, paper model, one epoch on the GPU):
#      1M {"userId"} lines answered with --device cuda, against the first 20K lines on the CPU;
# then prints one table and appends it, the machine and the date to bench/RESULTS.md.
#
# Usage: bench/gpu_check.sh [WORK_DIR]   (default /tmp/tastebud-gpu-check; $OUT, when set, gets
# copies of the logs and the table). EPOCHS=3 CPU_SHARE=10 JOBS=$(nproc) override the defaults.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/tastebud-gpu-check}"
BUILD="$ROOT/build-gpu"
EPOCHS="${EPOCHS:-3}"
JOBS="${JOBS:-$(nproc)}"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
START=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }

stamp "configure + build (sm_90) into $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTASTEBUD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  >"$LOGS/configure.log" 2>&1 || { tail -30 "$LOGS/configure.log"; exit 1; }
cmake --build "$BUILD" -j"$JOBS" --target tastebud test_backends test_gpu_scorer test_inference bench_kernels_cuda >"$LOGS/build.log" 2>&1 \
  || { grep -E "error|Error" -A5 "$LOGS/build.log" | head -60; exit 1; }
TB="$BUILD/host/tastebud"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOGS/gpu.txt" || true

stamp "CUDA tests"
TEST_STATUS=passed
if ! timeout 300 "$BUILD/tests/test_backends" --gtest_brief=0 >"$LOGS/test_backends.log" 2>&1; then
  TEST_STATUS=FAILED
  grep -E "FAILED|Failure|mismatch|difference" "$LOGS/test_backends.log" | head -40 || true
fi
if ! timeout 120 "$BUILD/tests/test_gpu_scorer" >"$LOGS/test_gpu_scorer.log" 2>&1; then
  TEST_STATUS="$TEST_STATUS, test_gpu_scorer FAILED"
  grep -E "FAILED|Failure|GPU|CPU" "$LOGS/test_gpu_scorer.log" | head -40 || true
fi
if ! timeout 60 "$BUILD/tests/test_inference" --gtest_filter='*Gpu*' >"$LOGS/test_inference.log" 2>&1; then
  TEST_STATUS="$TEST_STATUS, test_inference (GPU lines) FAILED"
  grep -E "FAILED|Failure" "$LOGS/test_inference.log" | head -20 || true
fi
SKIPPED=$(cat "$LOGS/test_backends.log" "$LOGS/test_gpu_scorer.log" "$LOGS/test_inference.log" | grep -c "\[  SKIPPED \]" || true)
grep -hE "PASSED|FAILED|SKIPPED" "$LOGS/test_backends.log" "$LOGS/test_gpu_scorer.log" | tail -8 || true
[ "$SKIPPED" != "0" ] && TEST_STATUS="$TEST_STATUS ($SKIPPED skipped: no device?)"

stamp "generate + import (138K users, 27K items, 20M interactions; and a 10% subsample for the CPU)"
gen_import() {  # name users interactions
  local name=$1 users=$2 interactions=$3
  if [ ! -f "$WORK/$name/.imported" ]; then
    rm -rf "$WORK/$name" "$WORK/$name-csv"
    "$TB" generate --users "$users" --items 27000 --interactions "$interactions" --seed 7 --out "$WORK/$name-csv" \
      >"$LOGS/generate-$name.log" 2>&1
    "$TB" import --interactions "$WORK/$name-csv/interactions.csv" --users "$WORK/$name-csv/users.csv" \
      --items "$WORK/$name-csv/items.csv" --out "$WORK/$name" --quiet >"$LOGS/import-$name.log" 2>&1
    touch "$WORK/$name/.imported"
    rm -rf "$WORK/$name-csv"
  fi
  tail -1 "$LOGS/import-$name.log" || true
}
gen_import ml20m 138000 20000000
CPU_SHARE="${CPU_SHARE:-10}"
gen_import ml20m-cpu $(( 138000 * CPU_SHARE / 100 )) $(( 20000000 * CPU_SHARE / 100 ))

COMMON=(--model neumf --factors 64 --layers 256,256,128,64 --negatives 4 --lr 0.001 --optimizer adam
        --eval loo --eval-users 20000 --no-progress --seed 1)
ROWS=()
train() {  # label device batch epochs data extra...
  local label=$1 device=$2 batch=$3 epochs=$4 data=$5
  shift 5
  local log="$LOGS/train-$label.log"
  stamp "train $label: --device $device --batch-size $batch --epochs $epochs $*"
  rm -rf "$WORK/model-$label"
  if ! timeout 240 "$TB" train --data "$WORK/$data" --out "$WORK/model-$label" --device "$device" \
      --batch-size "$batch" --epochs "$epochs" "${COMMON[@]}" "$@" >"$log" 2>&1; then
    echo "  train $label failed or timed out:"; tail -5 "$log"
  fi
  grep -E "^epoch|backend|error" "$log" | head -20 || true
  # "epoch   1  loss 0.3012  12.34M samples/s  0.9s  hr@10 0.6000 ..."
  while read -r line; do
    ROWS+=("$(awk -v label="$label" '{
      hr = "-"; for (i = 1; i <= NF; ++i) if ($i == "hr@10") hr = $(i + 1);
      printf "| %-22s | %5s | %10s | %9s | %8s | %7s |", label, $2, $5, $7, hr, $4 }' <<<"$line")")
  done < <(grep -E "^epoch +[0-9]" "$log" || true)
}

train gpu-b65536-fp32 cuda 65536 "$EPOCHS" ml20m
train gpu-b65536-tf32 cuda 65536 "$EPOCHS" ml20m --tf32
train gpu-b1048576-tf32 cuda 1048576 "$EPOCHS" ml20m --tf32
train cpu-b65536-subsample cpu 65536 1 ml20m-cpu

stamp "kernel micro-benchmarks (short)"
timeout 90 "$BUILD/bench/bench_kernels_cuda" --benchmark_min_time=0.05 >"$LOGS/bench_kernels_cuda.log" 2>&1 || true
grep -E "^(gather|dense|column|head|bce|row_groups|fill|shuffle|top_k)" "$LOGS/bench_kernels_cuda.log" | head -60 || true

stamp "batch top-K (paper model, 4096 users x 25K items, k 25)"
timeout 120 "$BUILD/bench/bench_kernels_cuda" --benchmark_filter='^score_top_k' --benchmark_min_time=0.5 \
  --benchmark_out="$LOGS/score_top_k.json" --benchmark_out_format=json >"$LOGS/score_top_k.log" 2>&1 || true
grep -E "^score_top_k" "$LOGS/score_top_k.log" || tail -5 "$LOGS/score_top_k.log"
users_rate=$(grep -o '"users_per_second": *[0-9.e+-]*' "$LOGS/score_top_k.json" 2>/dev/null | head -1 | cut -d: -f2 | tr -d ' ,' || true)
topk=$(awk -v r="${users_rate:-0}" 'BEGIN { r += 0; if (r > 0) printf "%.0f users/s, %.1f s for 1M users (extrapolated)", r, 1e6 / r; else print "n/a" }')

stamp "batch-infer end to end: 1M users x 25K items (paper model)"
infer=n/a
# Each step must succeed (set -e does not apply inside an if condition, hence the &&).
infer_setup() {
  "$TB" generate --users 1000000 --items 25000 --interactions 20000000 --seed 3 --out "$WORK/shop1m" &&
    "$TB" import --interactions "$WORK/shop1m/interactions.csv" --out "$WORK/data1m" --quiet &&
    rm -rf "$WORK/shop1m" &&
    "$TB" train --data "$WORK/data1m" --out "$WORK/model1m" --device cuda --batch-size 65536 --epochs 1 \
      --eval none --no-progress &&
    awk 'BEGIN { for (u = 0; u < 1000000; ++u) printf "{\"userId\": \"u%d\"}\n", u }' >"$WORK/q1m.jsonl" &&
    head -20000 "$WORK/q1m.jsonl" >"$WORK/q20k.jsonl"
}
rm -rf "$WORK/model1m"
if timeout 300 bash -c "$(declare -f infer_setup); TB='$TB' WORK='$WORK' infer_setup" >"$LOGS/infer-setup.log" 2>&1; then
  timeout 240 "$TB" batch-infer --model "$WORK/model1m" --input "$WORK/q1m.jsonl" --output "$WORK/r1m.jsonl" \
    --num-results 25 --device cuda >"$LOGS/infer-gpu.log" 2>&1 || tail -5 "$LOGS/infer-gpu.log"
  timeout 240 "$TB" batch-infer --model "$WORK/model1m" --input "$WORK/q20k.jsonl" --output "$WORK/r20k.jsonl" \
    --num-results 25 --device cpu >"$LOGS/infer-cpu.log" 2>&1 || tail -5 "$LOGS/infer-cpu.log"
  cat "$LOGS/infer-gpu.log" "$LOGS/infer-cpu.log"
  gpu_s=$(grep -o "in [0-9.]*s" "$LOGS/infer-gpu.log" | tail -1 | tr -dc "0-9.")
  cpu_s=$(grep -o "in [0-9.]*s" "$LOGS/infer-cpu.log" | tail -1 | tr -dc "0-9.")
  infer=$(awk -v g="${gpu_s:-0}" -v c="${cpu_s:-0}" 'BEGIN { printf "1M users on the GPU in %.1f s; 20K users on the CPU path of this machine in %.1f s (%.0f s per 1M)", g, c, c * 50 }')
else
  tail -5 "$LOGS/infer-setup.log"
fi

gpu_rate=$(grep -E "^epoch +1 " "$LOGS/train-gpu-b65536-tf32.log" 2>/dev/null | awk '{print $5}' | tr -d M || true)
cpu_rate=$(grep -E "^epoch +1 " "$LOGS/train-cpu-b65536-subsample.log" 2>/dev/null | awk '{print $5}' | tr -d M || true)
ratio=$(awk -v g="${gpu_rate:-0}" -v c="${cpu_rate:-0}" 'BEGIN { if (c > 0) printf "%.1fx", g / c; else print "n/a" }')

TABLE="$WORK/table.md"
{
  echo "### GPU check, $(date -u +%Y-%m-%d) on $(head -1 "$LOGS/gpu.txt" 2>/dev/null || echo unknown GPU), $(nproc) CPU cores"
  echo
  echo "NeuMF 64 factors, layers 256,256,128,64, 4 negatives, Adam; generated ML-20M-sized data"
  echo "(138K users, 27K items, 20M interactions before dedup); HR@10 by loo on 20000 users."
  echo "CPU row: first epoch on a ${CPU_SHARE}% subsample. test_backends: $TEST_STATUS."
  echo
  echo "| run                    | epoch | M samples/s | epoch s   | HR@10    | loss    |"
  echo "|------------------------|-------|-------------|-----------|----------|---------|"
  for row in "${ROWS[@]}"; do echo "$row"; done
  echo
  echo "GPU (batch 65536, TF32) / CPU samples per second, first epoch: $ratio"
  echo
  echo "Batch inference on the GPU, top-25 of 25K items, paper model (8 factors, layers 64,32,16,8),"
  echo "4096-user chunks, 20 seen items excluded per user: $topk"
  echo
  echo "batch-infer end to end (JSON lines in and out, seen items removed): $infer"
  echo
} >"$TABLE"
cat "$TABLE"
cat "$TABLE" >>"$ROOT/bench/RESULTS.md"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp -r "$LOGS" "$TABLE" "$OUT/" || true; fi
stamp "done"
