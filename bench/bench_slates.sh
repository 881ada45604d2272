#!/usr/bin/env bash
# Shaped batch answers (issue 14): the same top-25 user queries answered plainly and under a job
# configuration (exploration 0.3, two promotions, ranking influence, two metadata columns), to
# show what the slate path costs per line.
#
#   bench/bench_slates.sh [BUILD_DIR]      (default build-cpu; environment overrides below)
#
# USERS, ITEMS, INTERACTIONS, THREADS (0: all cores), WORK (scratch dir).
set -euo pipefail
BUILD=${1:-build-cpu}
BIN=$BUILD/host/tastebud
USERS=${USERS:-20000}
ITEMS=${ITEMS:-5000}
INTERACTIONS=${INTERACTIONS:-400000}
THREADS=${THREADS:-0}
WORK=${WORK:-/tmp/tastebud-bench-slates}
[[ -x $BIN ]] || { echo "no $BIN; build the tastebud target first" >&2; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK"
seconds() { local s=$(date +%s.%N); "$@" > "$WORK/last.log" 2>&1 || { cat "$WORK/last.log" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }

"$BIN" generate --users "$USERS" --items "$ITEMS" --interactions "$INTERACTIONS" --out "$WORK/shop" > /dev/null
"$BIN" import --interactions "$WORK/shop/interactions.csv" --users "$WORK/shop/users.csv" \
  --items "$WORK/shop/items.csv" --out "$WORK/ds" > /dev/null
"$BIN" train --data "$WORK/ds" --out "$WORK/model" --epochs 1 --eval none --no-progress \
  --factors 8 --layers 64,32,16,8 --threads "$THREADS" > /dev/null
jq -c '.[] | {userId: .}' "$WORK/model/user_ids.json" > "$WORK/queries.jsonl"
cat > "$WORK/job.json" <<'JSON'
{"itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "60"},
 "rankingInfluence": {"POPULARITY": 0.2, "FRESHNESS": 0.1},
 "promotions": [
   {"name": "books", "percentPromotedItems": 20, "filterExpression": "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN (\"books\")"},
   {"name": "cheap", "percentPromotedItems": 10, "filterExpression": "INCLUDE ItemID WHERE Items.PRICE < $MAX", "filterValues": {"MAX": "10"}}],
 "metadataColumns": {"ITEMS": ["CATEGORY_L1", "PRICE"]}}
JSON
t_plain=$(seconds "$BIN" batch-infer --model "$WORK/model" --input "$WORK/queries.jsonl" \
  --output "$WORK/plain.jsonl" --num-results 25 --threads "$THREADS" --device cpu)
t_shaped=$(seconds "$BIN" batch-infer --model "$WORK/model" --input "$WORK/queries.jsonl" \
  --output "$WORK/shaped.jsonl" --num-results 25 --threads "$THREADS" --device cpu --job-config "$WORK/job.json")
shares=$(python3 - "$WORK/shaped.jsonl" <<'PY'
import json, sys
lines = promoted = explored = slots = 0
for line in open(sys.argv[1]):
    out = json.loads(line)["output"]
    lines += 1
    slots += len(out["recommendedItems"])
    promoted += sum(1 for r in out["reasons"] if r == "promotion")
    explored += sum(1 for r in out["reasons"] if r == "exploration")
print(f"{promoted / lines:.2f} promoted, {explored / lines:.2f} exploration of {slots / lines:.1f} slots a line")
PY
)
queries=$(wc -l < "$WORK/queries.jsonl")
echo "| run | seconds | lines/s |"
echo "|---|---|---|"
echo "| plain top-25, $queries users x $ITEMS items | $t_plain | $(echo "$queries / $t_plain" | bc) |"
echo "| --job-config (exploration, 2 promotions, influence, metadata) | $t_shaped | $(echo "$queries / $t_shaped" | bc) |"
echo "shaped answers: $shares"
