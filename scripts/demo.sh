#!/usr/bin/env bash
# Installs, builds, generates the built-in synthetic shop, imports it, trains NeuMF on it and
# prints a few recommendations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Only the command line: the tests and benchmarks are scripts/test.sh's, which reuses this build.
TARGETS=tastebud bash scripts/build.sh
tb=./build/host/tastebud
work=${DEMO_DIR:-demo}
rm -rf "$work" && mkdir -p "$work"

echo "== generate a synthetic shop"
$tb generate --users 2000 --items 500 --interactions 100000 --seed 1 --out "$work/shop"
echo "== import it"
$tb import --interactions "$work/shop/interactions.csv" --users "$work/shop/users.csv" \
  --items "$work/shop/items.csv" --out "$work/dataset"
echo "== train NeuMF (leave-one-out HR@10 / NDCG@10 against the popularity baseline)"
$tb train --data "$work/dataset" --out "$work/model" --epochs 8 --batch-size 1024 --lr 0.003 --no-progress
echo "== recommend"
cat > "$work/queries.jsonl" <<'JSON'
{"userId": "u1"}
{"userId": "u2", "numResults": 5}
{"userId": "u3", "itemList": ["i1", "i2", "i3", "i4", "i5", "not-an-item"]}
{"userId": "u4", "numResults": 5, "filterValues": {"MAX": "20"}}
{"itemId": "i10", "numResults": 5}
{"userId": "someone-new"}
JSON
$tb batch-infer --model "$work/model" --input "$work/queries.jsonl" --output "$work/results.jsonl" \
  --num-results 10 --filter 'EXCLUDE ItemID WHERE Items.PRICE > $MAX'
cat "$work/results.jsonl"
echo "== segment: the users most likely to want item i10"
echo '{"itemId": "i10"}' > "$work/items.jsonl"
$tb batch-segment --model "$work/model" --input "$work/items.jsonl" --output "$work/segments.jsonl" --num-results 5
cat "$work/segments.jsonl"
