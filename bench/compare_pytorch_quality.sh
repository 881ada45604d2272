#!/usr/bin/env bash
# NeuMF at the paper's settings (8 factors, layers 64,32,16,8, 4 negatives, Adam 0.001, batch 256),
# tastebud against the PyTorch peer (bench/peers/pytorch_neumf.py) at equal epochs on the synthetic
# MovieLens-100K layout's leave-one-out split, exported by bench/export_split so both train and rank
# the same rows. One thread each, both sides of a seed run side by side.
#   bash bench/compare_pytorch.sh quality [EPOCHS] [SEEDS]     (needs python3-torch)
# Prints the table of HR@10 per epoch for bench/RESULTS.md. TASTEBUD_FLAGS: extra train flags
# (e.g. "--embedding-updates dense").
# STEP_CHECK=lazy|dense: instead, seed 1's first epoch retraced step by step: bench/neumf_trace
# writes tastebud's init, samples and parameters after steps 1, 65, ..., the peer trains from them
# (--lazy-embeddings for lazy) and prints each step's largest relative difference over the tensors.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-20}
seeds=${2:-3}
build=${BUILD_DIR:-build}
work=${WORK_DIR:-/tmp/tastebud-compare-quality}
bin=$build/host/tastebud
python=/usr/bin/python3
"$python" -c "import torch" 2>/dev/null || { echo "python3-torch is missing: apt-get install -y python3-torch"; exit 1; }
cmake --build "$build" --target tastebud export_split -j"$(nproc)" >/dev/null
rm -rf "$work" && mkdir -p "$work"
"$bin" generate --layout movielens-100k --seed 7 --out "$work/ml-100k" >/dev/null
"$bin" import --movielens "$work/ml-100k" --out "$work/dataset" --quiet >/dev/null
"$build/bench/export_split" "$work/dataset" "$work/split"
if [ -n "${STEP_CHECK:-}" ]; then
  cmake --build "$build" --target neumf_trace -j"$(nproc)" >/dev/null
  "$build/bench/neumf_trace" "$work/dataset" "$work/trace" 1 1 "$STEP_CHECK"
  lazy=$([ "$STEP_CHECK" = lazy ] && echo --lazy-embeddings || true)
  # shellcheck disable=SC2086
  "$python" bench/peers/pytorch_neumf.py "$work/split" --threads 1 --init-from "$work/trace/init" \
    --samples-from "$work/trace" --compare-to "$work/trace" --epochs 1 $lazy |
    "$python" -c 'import json, sys
worst = {}
for line in sys.stdin:
    d = json.loads(line)
    if "tensor" not in d: continue
    if d["max_rel_diff"] >= worst.get(d["step"], ("", -1))[1]: worst[d["step"]] = (d["tensor"], d["max_rel_diff"])
for step, (tensor, diff) in worst.items(): print(f"step {step}: largest relative difference {diff:.1e} ({tensor})")'
  exit 0
fi
for seed in $(seq 1 "$seeds"); do
  # shellcheck disable=SC2086
  "$bin" train --data "$work/dataset" --out "$work/tastebud-$seed" --model neumf --factors 8 --layers 64,32,16,8 \
    --negatives 4 --optimizer adam --lr 0.001 --batch-size 256 --epochs "$epochs" --eval loo \
    --validation-users 0 --metadata none --seed "$seed" --threads 1 --no-progress ${TASTEBUD_FLAGS:-} >/dev/null &
  "$python" bench/peers/pytorch_neumf.py "$work/split" --epochs "$epochs" --batch-size 256 --threads 1 \
    --seed "$seed" > "$work/pytorch-$seed.jsonl"
  wait
done
"$python" - "$work" "$seeds" "$epochs" <<'PY'
import json, sys
work, seeds, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ours = [[json.loads(l)["metrics"] for l in open(f"{work}/tastebud-{s}/metrics.jsonl")] for s in range(1, seeds + 1)]
peer = [[json.loads(l) for l in open(f"{work}/pytorch-{s}.jsonl")] for s in range(1, seeds + 1)]
def cell(runs, e):
    v = [r[e]["hr@10"] for r in runs]
    return f"{sum(v) / len(v):.4f} ({min(v):.3f}-{max(v):.3f})"
print("| epoch | tastebud HR@10 mean (min-max) | PyTorch HR@10 mean (min-max) |")
print("|---|---|---|")
for e in range(epochs):
    print(f"| {e + 1} | {cell(ours, e)} | {cell(peer, e)} |")
mean = lambda runs, e: sum(r[e]["hr@10"] for r in runs) / len(runs)
for name, runs in (("tastebud", ours), ("PyTorch", peer)):
    best = max(range(epochs), key=lambda e: mean(runs, e))
    last = runs[0][epochs - 1]
    lo, hi = (last["hr@10.lo"], last["hr@10.hi"]) if "hr@10.lo" in last else last["hr@10_ci"]
    print(f"\n{name}: peak mean HR@10 {mean(runs, best):.4f} at epoch {best + 1}, last {mean(runs, epochs - 1):.4f}; "
          f"seed 1's last epoch {last['hr@10']:.4f} [{lo:.4f}, {hi:.4f}]", end="")
print()
PY
