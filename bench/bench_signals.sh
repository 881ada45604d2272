#!/usr/bin/env bash
# HR@10 and NDCG@10 of NeuMF with impression negatives and with the DEVICE_TYPE context, on a
# generated shop that carries both signals: `tastebud generate --impressions 20` (each row lists 20
# items shown with it: popular items, a random other category's, a few of the user's own; never the
# row's item) and `--device-effect 2` (each item suits one device; an item that suits the event's
# device is e^2 = 7.4 times as likely to be picked). Four runs with the same seed and epochs,
# leave-one-out (each user's latest interaction ranked among 99 items the user never touched):
# baseline, --impression-negatives 0.3, --context DEVICE_TYPE, both.
# Usage: bench/bench_signals.sh [TASTEBUD_BINARY] [WORK_DIR]; extra `train` flags, applied to every
# run alike, in TRAIN_ARGS. Prints a markdown table.
set -euo pipefail
bin=${1:-build/host/tastebud}
work=${2:-/tmp/tastebud_bench_signals}
users=${USERS:-6000} items=${ITEMS:-2000} interactions=${INTERACTIONS:-240000}
impressions=${IMPRESSIONS:-20} device_effect=${DEVICE_EFFECT:-2}
epochs=${EPOCHS:-20} threads=${THREADS:-2} seed=${SEED:-1} data_seed=${DATA_SEED:-7}
share=${IMPRESSION_SHARE:-0.3}
train_args=${TRAIN_ARGS:-}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
rm -rf "$work"
"$bin" generate --users "$users" --items "$items" --interactions "$interactions" \
  --impressions "$impressions" --device-effect "$device_effect" --seed "$data_seed" \
  --out "$work/csv" > /dev/null
"$bin" import --interactions "$work/csv/interactions.csv" --users "$work/csv/users.csv" \
  --items "$work/csv/items.csv" --out "$work/data" --quiet > /dev/null
echo "| run | flags | best HR@10 | NDCG@10 at that epoch | epoch | seconds per epoch | final HR@10 | final NDCG@10 | impression negatives per epoch |"
echo "|---|---|---|---|---|---|---|---|---|"
run() {
  local name=$1
  shift
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
  "$bin" train --data "$work/data" --out "$work/model_$name" --epochs "$epochs" --seed "$seed" \
    --eval loo --threads "$threads" --device cpu --no-progress $train_args "$@" \
    > "$work/train_$name.log"
  python3 - "$work/model_$name/metrics.jsonl" "$name" "${*:-(none)}" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
best = max(rows, key=lambda r: (r["metrics"]["hr@10"], -r["epoch"]))
last = rows[-1]
seconds = sum(r["seconds"] for r in rows) / len(rows)
shown = sum(r.get("impression_negatives", 0) for r in rows) / len(rows)
print(f"| {sys.argv[2]} | `{sys.argv[3]}` | {best['metrics']['hr@10']:.4f} | "
      f"{best['metrics']['ndcg@10']:.4f} | {best['epoch']} | {seconds:.2f} | "
      f"{last['metrics']['hr@10']:.4f} | {last['metrics']['ndcg@10']:.4f} | {shown:.0f} |")
PY
}
run baseline
run impressions --impression-negatives "$share"
run context --context DEVICE_TYPE
run both --impression-negatives "$share" --context DEVICE_TYPE
