#!/usr/bin/env bash
# tastebud's CPU path against the PyTorch NeuMF (bench/peers/pytorch_neumf.py) on the same
# 100K-interaction dataset, split and hyperparameters, 2 threads each. Prints one table and appends
# it to bench/RESULTS.md.
#   bash bench/compare_pytorch.sh [EPOCHS]     (needs python3-torch: apt-get install python3-torch)
#   bash bench/compare_pytorch.sh quality [EPOCHS] [SEEDS]
#     NeuMF at the paper's settings on the synthetic MovieLens-100K layout's leave-one-out split,
#     both sides trained on the same exported split (no validation carve-out) for SEEDS seeds: HR@10
#     per epoch (mean over seeds, min-max), the last epoch's 95% bootstrap interval. TASTEBUD_FLAGS
#     adds flags to tastebud's runs (a variant under test).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = quality ]; then
  shift
  exec bash bench/compare_pytorch_quality.sh "$@"
fi
epochs=${1:-20}
build=${BUILD_DIR:-build}
work=${WORK_DIR:-/tmp/tastebud-compare}
bin=$build/host/tastebud
python=/usr/bin/python3
"$python" -c "import torch" 2>/dev/null || { echo "python3-torch is missing: apt-get install -y python3-torch"; exit 1; }
cmake --build "$build" --target tastebud export_split -j"$(nproc)" >/dev/null
rm -rf "$work" && mkdir -p "$work"
# MovieLens-100K's shape: 943 users, 1682 items, 100K interactions.
"$bin" generate --users 943 --items 1682 --interactions 100000 --seed 7 --out "$work/shop" >/dev/null
"$bin" import --interactions "$work/shop/interactions.csv" --users "$work/shop/users.csv" \
  --items "$work/shop/items.csv" --out "$work/dataset" >/dev/null
"$build/bench/export_split" "$work/dataset" "$work/split"

rows=()
for batch in 256 2048; do
  "$bin" train --data "$work/dataset" --out "$work/tastebud-$batch" --epochs "$epochs" --batch-size "$batch" \
    --threads 2 --eval loo --no-progress >/dev/null
  "$python" bench/peers/pytorch_neumf.py "$work/split" --epochs "$epochs" --batch-size "$batch" --threads 2 \
    > "$work/pytorch-$batch.jsonl"
  rows+=("$("$python" - "$work/tastebud-$batch/metrics.jsonl" "$work/pytorch-$batch.jsonl" "$batch" "$epochs" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
peer = [json.loads(l) for l in open(sys.argv[2])]
batch, epochs = sys.argv[3], int(sys.argv[4])
rate = lambda rows: sum(r["samples"] for r in rows) / sum(r["seconds"] for r in rows)
hr = lambda rows, e, key: (rows[e - 1]["metrics"][key] if "metrics" in rows[e - 1] else rows[e - 1][key]) if len(rows) >= e else float("nan")
mid = min(10, epochs)
print(f"| {batch} | {rate(ours)/1e6:.3f}M | {rate(peer)/1e6:.3f}M | {rate(ours)/rate(peer):.1f}x "
      f"| {hr(ours, mid, 'hr@10'):.4f} / {hr(peer, mid, 'hr@10'):.4f} | {hr(ours, epochs, 'hr@10'):.4f} / {hr(peer, epochs, 'hr@10'):.4f} "
      f"| {hr(ours, mid, 'ndcg@10'):.4f} / {hr(peer, mid, 'ndcg@10'):.4f} | {hr(ours, epochs, 'ndcg@10'):.4f} / {hr(peer, epochs, 'ndcg@10'):.4f} |")
PY
)")
done

table=$(cat <<TXT

### NeuMF on the CPU: tastebud vs PyTorch $("$python" -c 'import torch; print(torch.__version__)') ($(date -u +%Y-%m-%d), $(nproc)-core $(. /etc/os-release; echo "$PRETTY_NAME"), no GPU)
Generated shop in MovieLens-100K's shape (943 users, 1682 items, 100K interactions, seed 7), leave-one-out
split exported to both, NeuMF 8 factors, layers 64,32,16,8, 4 negatives, Adam lr 0.001, 2 threads each,
$epochs epochs. Samples/s: training samples (positives + negatives) over training time; PyTorch's excludes
its (numpy) negative sampling, tastebud's includes it. Command: \`bash bench/compare_pytorch.sh $epochs\`.

| batch | tastebud samples/s | PyTorch samples/s | ratio | HR@10 ep 10 (ours / torch) | HR@10 ep $epochs | NDCG@10 ep 10 | NDCG@10 ep $epochs |
|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")
TXT
)
echo "$table"
echo "$table" >> bench/RESULTS.md
