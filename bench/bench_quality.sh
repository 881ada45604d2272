#!/usr/bin/env bash
# The quality table: each model at its defaults (tastebud train with no tuning flags), judged with
# 95% bootstrap intervals, on the synthetic MovieLens-100K layout (leave-one-out) and on a
# generated shop (leave-one-out and the service's protocol, --eval personalize). The epoch is
# chosen on the validation split; the test numbers of that epoch are reported. The shop is imported
# with its Users and Items files, so `--metadata auto` (the default) has fields to resolve to.
# Usage: bash bench/bench_quality.sh [TASTEBUD_BINARY]   (default build/host/tastebud); prints the
# markdown table for bench/RESULTS.md. EPOCHS=20 overrides the epochs; MODELS="neumf" runs only
# those models' rows.
# MODE=metadata: NeuMF with `--metadata none` against the default `--metadata auto` on the
# synthetic ML-100K layout and a shop imported with its Users and Items files, leave-one-out (warm
# users) and cold-items (20% of items without training rows, ranked among 99 cold items; random
# ranking gives HR@10 0.10); EPOCHS defaults to 10 there. MODEL=mf (with MODE=metadata) compares
# that model instead, at its own defaults.
set -euo pipefail
bin="${1:-build/host/tastebud}"
# Spinning OpenMP threads on a shared machine turn each epoch's seconds into minutes.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ "${MODE:-}" = metadata ]; then
  epochs="${EPOCHS:-10}"
  "$bin" generate --layout movielens-100k --seed 7 --out "$work/ml-100k" >/dev/null
  "$bin" import --movielens "$work/ml-100k" --out "$work/ml" --quiet >/dev/null
  "$bin" generate --users 3000 --items 1000 --interactions 120000 --seed 11 --out "$work/shop-csv" >/dev/null
  "$bin" import --interactions "$work/shop-csv/interactions.csv" --users "$work/shop-csv/users.csv" \
    --items "$work/shop-csv/items.csv" --out "$work/shop" --quiet >/dev/null
  echo "| data | eval | metadata | resolved to | epoch | HR@10 | NDCG@10 | popularity HR@10 |"
  echo "|---|---|---|---|---|---|---|---|"
  for data in ml shop; do
    for eval in loo cold-items; do
      for metadata in none auto; do
        log="$work/log-$data-$eval-$metadata"
        "$bin" train --data "$work/$data" --out "$work/m-$data-$eval-$metadata" --eval "$eval" \
          --model "${MODEL:-neumf}" --metadata "$metadata" --epochs "$epochs" --no-progress >"$log" 2>&1
        resolved=$( (grep -o -- "--metadata auto: [a-z]*" "$log" || true) | awk '{ print $NF }')
        epoch=$(grep -o "model kept from epoch [0-9]*" "$log" | awk '{ print $NF }')
        hr=$(awk '$1 == "hr@10" { print $2, $3, $4 }' "$log")
        ndcg=$(awk '$1 == "ndcg@10" { print $2, $3, $4 }' "$log")
        pop=$(awk '$1 == "hr@10" { print $5 }' "$log")
        echo "| $data | $eval | $metadata | ${resolved:-none} | $epoch | $hr | $ndcg | $pop |"
      done
    done
  done
  exit 0
fi
epochs="${EPOCHS:-20}"
"$bin" generate --layout movielens-100k --seed 7 --out "$work/ml-100k" >/dev/null
"$bin" import --movielens "$work/ml-100k" --out "$work/ml" --quiet >/dev/null
"$bin" generate --users 6000 --items 2000 --interactions 200000 --seed 11 --out "$work/shop-csv" >/dev/null
"$bin" import --interactions "$work/shop-csv/interactions.csv" --users "$work/shop-csv/users.csv" \
  --items "$work/shop-csv/items.csv" --out "$work/shop" --quiet >/dev/null

# row DATA EVAL MODEL METRIC...: one table row from the summary of a training log.
row() {
  local data=$1 eval=$2 model=$3
  shift 3
  local log="$work/log-$data-$eval-$model"
  "$bin" train --data "$work/$data" --out "$work/m-$data-$eval-$model" --model "$model" --eval "$eval" \
    --epochs "$epochs" --no-progress >"$log" 2>&1
  local cells=""
  for metric in "$@"; do
    # "hr@10      0.7147 [0.6882, 0.7423]      0.5027 [0.4730, 0.5355]": model, then popularity
    cells+=" | $(awk -v m="$metric" '$1 == m { print $2, $3, $4 }' "$log")"
  done
  local epoch resolved
  epoch=$(grep -o "model kept from epoch [0-9]*" "$log" | awk '{ print $NF }')
  resolved=$( (grep -o -- "--metadata auto: [a-z]*" "$log" || true) | awk '{ print $NF }')
  echo "| $data | $eval | $model | ${resolved:-none} | $epoch$cells |"
  if [ "$model" = mf ]; then  # the popularity column, once per data set and protocol
    cells=""
    for metric in "$@"; do cells+=" | $(awk -v m="$metric" '$1 == m { print $5, $6, $7 }' "$log")"; done
    echo "| $data | $eval | popularity | - | -$cells |"
  fi
}
echo "| data | eval | model | metadata | epoch | HR@10 or NDCG@10 | NDCG@10 or precision@10 |"
echo "|---|---|---|---|---|---|---|"
models="${MODELS:-mf gmf neumf mlp}"
for model in $models; do row ml loo "$model" hr@10 ndcg@10; done
for model in $models; do row shop loo "$model" hr@10 ndcg@10; done
for model in $models; do row shop personalize "$model" ndcg@10 precision@10; done
