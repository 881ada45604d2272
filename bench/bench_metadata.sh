#!/usr/bin/env bash
# Cold-item ranking and training cost with item metadata against the id-only model, on a generated
# shop: 20% of the interacted items lose every training interaction (--eval cold-items) and each
# user's latest cold interaction is ranked against 99 other cold items (random: HR@10 = 0.10).
# Usage: bench/bench_metadata.sh [TASTEBUD_BINARY] [WORK_DIR]; prints one markdown row per mode.
set -euo pipefail
bin=${1:-build/host/tastebud}
work=${2:-/tmp/tastebud_bench_metadata}
users=${USERS:-3000} items=${ITEMS:-1000} interactions=${INTERACTIONS:-120000} epochs=${EPOCHS:-5}
threads=${THREADS:-2}
rm -rf "$work"
"$bin" generate --users "$users" --items "$items" --interactions "$interactions" --seed 7 --out "$work/csv" > /dev/null
"$bin" import --interactions "$work/csv/interactions.csv" --users "$work/csv/users.csv" \
  --items "$work/csv/items.csv" --out "$work/data" --quiet > /dev/null
echo "| metadata | best hr@10 | ndcg@10 | epoch | fastest epoch s | samples/epoch | us per sample (fastest epoch) |"
echo "|---|---|---|---|---|---|---|"
for metadata in none items; do
  "$bin" train --data "$work/data" --out "$work/model_$metadata" --eval cold-items --metadata "$metadata" \
    --epochs "$epochs" --threads "$threads" --device cpu --no-progress > "$work/train_$metadata.log"
  python3 - "$work/model_$metadata/metrics.jsonl" "$metadata" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
best = max(rows, key=lambda r: r["metrics"]["hr@10"])
fast = min(rows, key=lambda r: r["seconds"])
print(f"| {sys.argv[2]} | {best['metrics']['hr@10']:.4f} | {best['metrics']['ndcg@10']:.4f} | {best['epoch']} | "
      f"{fast['seconds']:.2f} | {fast['samples']} | {1e6 * fast['seconds'] / fast['samples']:.2f} |")
PY
done
