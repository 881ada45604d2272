#!/usr/bin/env bash
# HR@10 and NDCG@10 with and without metadata (issue 6) on a MovieLens-100K-layout dataset: a
# synthetic ml-100k (943 users, 1682 items, 100,000 ratings, genres, age/gender/occupation; NOT the
# real MovieLens ratings) written by `tastebud generate --layout movielens-100k`, imported through
# `tastebud import --movielens`, then trained twice with the same seed and epochs, leave-one-out
# (each user's latest rating ranked among 99 items the user never rated).
# Usage: bench/bench_movielens.sh [TASTEBUD_BINARY] [WORK_DIR]; extra `train` flags, applied to both
# runs alike, in TRAIN_ARGS (e.g. TRAIN_ARGS="--factors 16 --lr 0.0005"). Prints a markdown table.
set -euo pipefail
bin=${1:-build/host/tastebud}
work=${2:-/tmp/tastebud_bench_movielens}
epochs=${EPOCHS:-20} threads=${THREADS:-2} seed=${SEED:-1} data_seed=${DATA_SEED:-7}
modes=${MODES:-none both}
train_args=${TRAIN_ARGS:-}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
rm -rf "$work"
"$bin" generate --layout movielens-100k --seed "$data_seed" --out "$work/ml-100k" > /dev/null
"$bin" import --movielens "$work/ml-100k" --out "$work/data" --quiet > /dev/null
echo "| metadata | best HR@10 | NDCG@10 at that epoch | epoch | seconds per epoch | final HR@10 | final NDCG@10 | popularity HR@10 / NDCG@10 |"
echo "|---|---|---|---|---|---|---|---|"
for metadata in $modes; do
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
  "$bin" train --data "$work/data" --out "$work/model_$metadata" --metadata "$metadata" \
    --epochs "$epochs" --seed "$seed" --eval loo --threads "$threads" --device cpu --no-progress \
    $train_args > "$work/train_$metadata.log"
  python3 - "$work/model_$metadata/metrics.jsonl" "$metadata" "$work/train_$metadata.log" <<'PY'
import json, re, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
best = max(rows, key=lambda r: (r["metrics"]["hr@10"], -r["epoch"]))
last = rows[-1]
seconds = sum(r["seconds"] for r in rows) / len(rows)
log = open(sys.argv[3]).read()
# The training report prints the popularity baseline beside the model.
pop = {m: re.search(rf"^{re.escape(m)}\s+\S+\s+(\S+)\s*$", log, re.M) for m in ("hr@10", "ndcg@10")}
popularity = " / ".join(p.group(1) if p else "?" for p in pop.values())
print(f"| {sys.argv[2]} | {best['metrics']['hr@10']:.4f} | {best['metrics']['ndcg@10']:.4f} | "
      f"{best['epoch']} | {seconds:.2f} | {last['metrics']['hr@10']:.4f} | "
      f"{last['metrics']['ndcg@10']:.4f} | {popularity} |")
PY
done
