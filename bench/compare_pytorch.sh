#!/usr/bin/env bash
# tastebud's CPU path against the PyTorch NeuMF (bench/peers/pytorch_neumf.py) on the same
# 100K-interaction dataset, split and hyperparameters, 2 threads each. Prints one table and appends
# it to bench/RESULTS.md.
#   bash bench/compare_pytorch.sh [EPOCHS]     (needs python3-torch: apt-get install python3-torch)
#   PEERS="/usr/bin/python3 /tmp/torchvenv/bin/python" bash bench/compare_pytorch.sh [EPOCHS]
#     measures each of those Pythons' torch in the same run (a column pair each)
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
# PEERS: the Pythons whose torch is measured, side by side in this one run (default Debian's);
# e.g. PEERS="/usr/bin/python3 /tmp/torchvenv/bin/python" for Debian's and pip's.
read -r -a peers <<< "${PEERS:-/usr/bin/python3}"
for python in "${peers[@]}"; do
  "$python" -c "import torch" 2>/dev/null || { echo "$python has no torch (Debian's: apt-get install -y python3-torch)"; exit 1; }
done
versions=()
for python in "${peers[@]}"; do versions+=("$("$python" -c 'import torch; print(torch.__version__)')"); done
cmake --build "$build" --target tastebud export_split -j"$(nproc)" >/dev/null
rm -rf "$work" && mkdir -p "$work"
# MovieLens-100K's shape: 943 users, 1682 items, 100K interactions.
"$bin" generate --users 943 --items 1682 --interactions 100000 --seed 7 --out "$work/shop" >/dev/null
"$bin" import --interactions "$work/shop/interactions.csv" --users "$work/shop/users.csv" \
  --items "$work/shop/items.csv" --out "$work/dataset" >/dev/null
"$build/bench/export_split" "$work/dataset" "$work/split"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
for batch in 256 2048; do
  # --metadata none: the peer's model, NeuMF over ids alone (the default `auto` would add the
  # shop's item metadata on tastebud's side only: a better model, and more work per sample).
  "$bin" train --data "$work/dataset" --out "$work/tastebud-$batch" --epochs "$epochs" --batch-size "$batch" \
    --threads 2 --eval loo --metadata none --no-progress >/dev/null
  peer_files=()
  for k in "${!peers[@]}"; do
    "${peers[$k]}" bench/peers/pytorch_neumf.py "$work/split" --epochs "$epochs" --batch-size "$batch" --threads 2 \
      > "$work/pytorch-$batch-$k.jsonl"
    peer_files+=("$work/pytorch-$batch-$k.jsonl")
  done
  rows+=("$(/usr/bin/python3 - "$work/tastebud-$batch/metrics.jsonl" "$batch" "$epochs" "${peer_files[@]}" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
batch, epochs = sys.argv[2], int(sys.argv[3])
peers = [[json.loads(l) for l in open(f)] for f in sys.argv[4:]]
rate = lambda rows: sum(r["samples"] for r in rows) / sum(r["seconds"] for r in rows)
hr = lambda rows, e, key: (rows[e - 1]["metrics"][key] if "metrics" in rows[e - 1] else rows[e - 1][key]) if len(rows) >= e else float("nan")
mid = min(10, epochs)
both = lambda e, key: " / ".join(f"{hr(rows, e, key):.4f}" for rows in [ours] + peers)
cells = [batch, f"{rate(ours)/1e6:.3f}M"]
for peer in peers:
    cells += [f"{rate(peer)/1e6:.3f}M", f"{rate(ours)/rate(peer):.1f}x"]
cells += [both(mid, "hr@10"), both(epochs, "hr@10"), both(mid, "ndcg@10"), both(epochs, "ndcg@10")]
print("| " + " | ".join(cells) + " |")
PY
)")
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

header="| batch | tastebud samples/s"
rule="|---|---"
for v in "${versions[@]}"; do header+=" | PyTorch $v samples/s | ratio"; rule+="|---|---"; done
names="ours / $(IFS=/; echo "${versions[*]}" | sed 's|/| / |g')"
header+=" | HR@10 ep $((epochs < 10 ? epochs : 10)) ($names) | HR@10 ep $epochs | NDCG@10 ep $((epochs < 10 ? epochs : 10)) | NDCG@10 ep $epochs |"
rule+="|---|---|---|---|"
table=$(cat <<TXT

### NeuMF on the CPU: tastebud vs PyTorch ${versions[*]} ($(date -u +%Y-%m-%d), $(nproc)-core $(. /etc/os-release; echo "$PRETTY_NAME"), no GPU, load $load_before before, $load_after after)
Generated shop in MovieLens-100K's shape (943 users, 1682 items, 100K interactions, seed 7), leave-one-out
split exported to both, NeuMF 8 factors, layers 64,32,16,8, 4 negatives, Adam lr 0.001, 2 threads each,
$epochs epochs, tastebud at its default flags but \`--metadata none\` (the peer is id-only). Samples/s: training samples (positives + negatives) over
training time; PyTorch's excludes its (numpy) negative sampling, tastebud's includes it. Command:
\`PEERS="${peers[*]}" bash bench/compare_pytorch.sh $epochs\`.

$header
$rule
$(printf '%s\n' "${rows[@]}")
TXT
)
echo "$table"
echo "$table" >> bench/RESULTS.md
