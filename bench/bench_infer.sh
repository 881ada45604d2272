#!/usr/bin/env bash
# End-to-end batch inference (issue 5): generate a shop, import it, train the paper's NeuMF
# (8 factors, layers 64,32,16,8) for one epoch without evaluation, then answer a top-25 query for
# every user, exactly and in two-stage mode, and report the two-stage recall of the exact top-25.
#
#   bench/bench_infer.sh [BUILD_DIR]      (default build; environment overrides below)
#
# USERS, ITEMS, INTERACTIONS, CANDIDATES (two-stage), THREADS (0: all cores), WORK (scratch dir).
set -euo pipefail
BUILD=${1:-build}
BIN=$BUILD/host/tastebud
USERS=${USERS:-100000}
ITEMS=${ITEMS:-25000}
INTERACTIONS=${INTERACTIONS:-2000000}
CANDIDATES=${CANDIDATES:-500}
THREADS=${THREADS:-0}
WORK=${WORK:-/tmp/tastebud-bench-infer}
[[ -x $BIN ]] || { echo "no $BIN; build the tastebud target first" >&2; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK"
seconds() { local s=$(date +%s.%N); "$@" > "$WORK/last.log" 2>&1 || { cat "$WORK/last.log" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }

t_gen=$(seconds "$BIN" generate --users "$USERS" --items "$ITEMS" --interactions "$INTERACTIONS" --out "$WORK/shop")
t_import=$(seconds "$BIN" import --interactions "$WORK/shop/interactions.csv" --users "$WORK/shop/users.csv" \
  --items "$WORK/shop/items.csv" --out "$WORK/ds")
t_train=$(seconds "$BIN" train --data "$WORK/ds" --out "$WORK/model" --epochs 1 --eval none --no-progress \
  --factors 8 --layers 64,32,16,8 --threads "$THREADS")
# One {"userId": ...} line per user of the model.
jq -c '.[] | {userId: .}' "$WORK/model/user_ids.json" > "$WORK/queries.jsonl"
queries=$(wc -l < "$WORK/queries.jsonl")
items=$(jq length "$WORK/model/item_ids.json")

t_exact=$(seconds "$BIN" batch-infer --model "$WORK/model" --input "$WORK/queries.jsonl" \
  --output "$WORK/exact.jsonl" --num-results 25 --threads "$THREADS")
t_two=$(seconds "$BIN" batch-infer --model "$WORK/model" --input "$WORK/queries.jsonl" \
  --output "$WORK/two_stage.jsonl" --num-results 25 --candidates "$CANDIDATES" --threads "$THREADS")
recall=$(python3 - "$WORK/exact.jsonl" "$WORK/two_stage.jsonl" <<'PY'
import json, sys
hits = total = 0
with open(sys.argv[1]) as a, open(sys.argv[2]) as b:
    for x, y in zip(a, b):
        exact = json.loads(x)["output"]["recommendedItems"]
        fast = set(json.loads(y)["output"]["recommendedItems"])
        hits += sum(1 for i in exact if i in fast)
        total += len(exact)
print(f"{hits / max(total, 1):.4f}")
PY
)
speedup=$(echo "scale=1; $t_exact / $t_two" | bc)
printf '%-34s %10s\n' "step" "seconds"
printf '%-34s %10.1f\n' "generate" "$t_gen" "import" "$t_import" "train 1 epoch (--eval none)" "$t_train" \
  "batch-infer exact top-25" "$t_exact" "batch-infer two-stage ($CANDIDATES cand.)" "$t_two"
echo "queries: $queries users x $items items; exact: $(echo "scale=0; $queries / $t_exact" | bc) users/s;" \
  "two-stage recall@25 vs exact: $recall; speed-up: ${speedup}x"
