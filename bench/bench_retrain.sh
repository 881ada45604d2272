#!/usr/bin/env bash
# Retraining from the last model (issue 12) on a time split of a MovieLens-100K-layout dataset (the
# synthetic ml-100k of `tastebud generate --layout movielens-100k`; NOT the real ratings): its
# ratings sorted by time and cut at the 90% quantile into old.csv and new.csv. The parent model
# trains on old.csv; new.csv is then imported incrementally, and three ways of getting a model of
# the updated dataset are compared on the same leave-one-out split of it (each user's latest
# rating among 99 items the user never rated; the test HR@10 of the epoch the validation split
# chose): a full retrain from scratch, a warm start from the parent with fewer epochs, and an
# update (only the new and changed users' and items' rows train, on their positives). The parent
# itself, scored on that split, is the stale baseline (tastebud retrain's own evaluation).
# Usage: bench/bench_retrain.sh [TASTEBUD_BINARY] [WORK_DIR]; EPOCHS (full and parent),
# WARM_EPOCHS, UPDATE_EPOCHS, THREADS, SEED (of every training run), METADATA (--metadata of every
# run, pinned so that the parent and its children agree whatever train's default: none, since the
# dataset imports no Items file). Prints a markdown table.
set -euo pipefail
bin=${1:-build/host/tastebud}
work=${2:-/tmp/tastebud_bench_retrain}
epochs=${EPOCHS:-20} warm_epochs=${WARM_EPOCHS:-6} update_epochs=${UPDATE_EPOCHS:-5} threads=${THREADS:-2}
seed=${SEED:-1} metadata=${METADATA:-none}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
rm -rf "$work"
mkdir -p "$work"
"$bin" generate --layout movielens-100k --seed 7 --out "$work/ml-100k" > /dev/null
# u.data: user, item, rating, timestamp (tab-separated) -> the Personalize layout, split by time.
sort -t$'\t' -k4,4n -k1,1n -k2,2n "$work/ml-100k/u.data" > "$work/sorted.tsv"
rows=$(wc -l < "$work/sorted.tsv")
cut=$((rows * 9 / 10))
header="USER_ID,ITEM_ID,TIMESTAMP,EVENT_VALUE"
{ echo "$header"; head -n "$cut" "$work/sorted.tsv" | awk -F'\t' '{print "u"$1",i"$2","$4","$3}'; } > "$work/old.csv"
{ echo "$header"; tail -n +"$((cut + 1))" "$work/sorted.tsv" | awk -F'\t' '{print "u"$1",i"$2","$4","$3}'; } > "$work/new.csv"

common=(--seed "$seed" --eval loo --threads "$threads" --device cpu --no-progress --metadata "$metadata")
"$bin" import --interactions "$work/old.csv" --out "$work/data" --quiet > /dev/null
"$bin" train --data "$work/data" --out "$work/parent" --epochs "$epochs" "${common[@]}" > "$work/parent.log"
"$bin" import --interactions "$work/new.csv" --out "$work/data" --mode incremental --quiet > /dev/null

timed() {  # timed NAME ARGS...: runs train, records its wall seconds
  local name=$1
  shift
  local start end
  start=$(date +%s.%N)
  "$bin" train --data "$work/data" --out "$work/$name" "$@" "${common[@]}" > "$work/$name.log"
  end=$(date +%s.%N)
  python3 -c "print($end - $start)" > "$work/$name.seconds"
}
timed full --epochs "$epochs"
timed warm --warm-start "$work/parent" --epochs "$warm_epochs"
timed update --warm-start "$work/parent" --update --epochs "$update_epochs"
# The parent on the same split: retrain evaluates the current model and the candidate side by side.
mkdir -p "$work/models/versions"
cp -r "$work/parent" "$work/models/versions/000001"
ln -s versions/000001 "$work/models/current"
"$bin" retrain --data "$work/data" --models "$work/models" --warm-epochs 1 --max-regression 1 \
  "${common[@]:0:6}" > "$work/retrain.log"

python3 - "$work" "$rows" "$cut" "$epochs" "$warm_epochs" "$update_epochs" <<'PY'
import json, sys
work, rows, cut = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
epochs = dict(full=sys.argv[4], warm=sys.argv[5], update=sys.argv[6])
stale = json.loads(open(f"{work}/models/retrain.jsonl").readline())["current_metrics"]["hr@10"]
print(f"{cut} ratings before the cut, {rows - cut} after; the parent (trained on the first 90%) scores "
      f"HR@10 {stale:.4f} on the updated split\n")
print("| run | epochs (chosen) | positives trained | HR@10 (test, chosen epoch) [95% interval] | NDCG@10 | wall seconds | vs full: HR@10, time |")
print("|---|---|---|---|---|---|---|")
full = None
for name in ("full", "warm", "update"):
    rows_ = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl")]
    best = max(rows_, key=lambda r: (r["metrics"]["val.hr@10"], -r["epoch"]))
    seconds = float(open(f"{work}/{name}.seconds").read())
    samples = rows_[0]["samples"]
    hr, ndcg = best["metrics"]["hr@10"], best["metrics"]["ndcg@10"]
    if full is None: full = (hr, seconds)
    lo, hi = best["metrics"]["hr@10.lo"], best["metrics"]["hr@10.hi"]
    print(f"| {name} | {epochs[name]} ({best['epoch']}) | {samples // 5} | {hr:.4f} [{lo:.4f}, {hi:.4f}] | {ndcg:.4f} | {seconds:.1f} | "
          f"{hr - full[0]:+.4f}, {seconds / full[1]:.2f}x |")
PY
