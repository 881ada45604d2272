#!/usr/bin/env bash
# SASRec, tastebud (`train --model sasrec`, when this build has it) against the PyTorch
# peer (bench/peers/pytorch_sasrec.py) at the same settings, with tastebud's mf and transitions as
# baselines, on ../shared/data's ml-latest-small (every rating) and online-retail (purchases only,
# `--event purchase`, as in RESULTS.md). Both sides train and rank the same leave-one-out split:
# bench/export_split writes the one `train --eval loo` makes (each user's training sequence for the
# peer, the held-out item and its 99 candidates).
#   bash bench/compare_sasrec.sh [EPOCHS]       (default 20)
# env: BUILD_DIR (build), BIN (the CLI, $BUILD_DIR/host/tastebud), PYTHON (/tmp/torchvenv/bin/python),
#      WORK_DIR (/tmp/tastebud-compare-sasrec),
#      THREADS (2), SEED (1), DATASETS ("ml retail"), SASREC_FLAGS (the model's settings, both sides)
# Prints a table: dataset, system, best epoch's HR@10 and NDCG@10, training positions/s.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-20}
build=${BUILD_DIR:-build}
python=${PYTHON:-/tmp/torchvenv/bin/python}
work=${WORK_DIR:-/tmp/tastebud-compare-sasrec}
threads=${THREADS:-2}
seed=${SEED:-1}
datasets=${DATASETS:-ml retail}
# tastebud's sasrec defaults, spelled out for the peer.
flags=${SASREC_FLAGS:---hidden 64 --blocks 2 --heads 1 --max-sequence 200 --dropout 0.2 --negatives 1 --gbce-t 0 --lr 0.005 --batch-size 128}
bin=${BIN:-$build/host/tastebud}
data=../shared/data
[ -x "$bin" ] || { echo "no $bin: build the tastebud target"; exit 1; }
[ -x "$build/bench/export_split" ] || { echo "no $build/bench/export_split: cmake --build $build --target export_split"; exit 1; }
"$python" -c "import torch" 2>/dev/null || { echo "$python has no torch (set PYTHON)"; exit 1; }
have_sasrec=0
"$bin" train --help | grep -q sasrec && have_sasrec=1
mkdir -p "$work"
for ds in $datasets; do
  case $ds in
    ml) import=(--interactions "$data/ml-latest-small/interactions.csv" --items "$data/ml-latest-small/items.csv")
        events=() ;;
    retail) import=(--interactions "$data/online-retail/interactions.csv.gz" --items "$data/online-retail/items.csv.gz")
        events=(purchase) ;;
    *) echo "unknown dataset $ds (ml, retail)"; exit 1 ;;
  esac
  event_flags=()
  for e in ${events[@]+"${events[@]}"}; do event_flags+=(--event "$e"); done
  rm -rf "${work:?}/$ds" && mkdir -p "$work/$ds"
  "$bin" import "${import[@]}" --out "$work/$ds/dataset" --quiet >/dev/null
  "$build/bench/export_split" "$work/$ds/dataset" "$work/$ds/split" ${events[@]+"${events[@]}"}
  # shellcheck disable=SC2086
  "$python" bench/peers/pytorch_sasrec.py "$work/$ds/split" $flags --epochs "$epochs" --threads "$threads" \
    --seed "$seed" | tee "$work/$ds/pytorch.jsonl"
  common=(--data "$work/$ds/dataset" --eval loo --validation-users 0 --threads "$threads" --seed "$seed"
          --no-progress ${event_flags[@]+"${event_flags[@]}"})
  if [ "$have_sasrec" = 1 ]; then
    # shellcheck disable=SC2086
    "$bin" train "${common[@]}" --out "$work/$ds/sasrec" --model sasrec $flags --epochs "$epochs" >/dev/null
  fi
  "$bin" train "${common[@]}" --out "$work/$ds/mf" --model mf --epochs "$epochs" >/dev/null
  "$bin" train "${common[@]}" --out "$work/$ds/transitions" --model transitions >/dev/null
done
"$python" - "$work" "$datasets" <<'PY'
import json, os, sys
work, datasets = sys.argv[1], sys.argv[2].split()
def rows(path, tastebud):
    out = []
    for line in open(path):
        d = json.loads(line)
        m = d["metrics"] if tastebud else d
        speed = d.get("positions_per_s") or (d["samples"] / d["seconds"] if d.get("seconds") else None)
        out.append((d["epoch"], m["hr@10"], m["ndcg@10"], speed))
    return out
print("| dataset | system | best epoch | HR@10 | NDCG@10 | positions/s |")
print("|---|---|---|---|---|---|")
for ds in datasets:
    runs = [("PyTorch sasrec", f"{work}/{ds}/pytorch.jsonl", False)]
    for m in ("sasrec", "mf", "transitions"):
        runs.append((f"tastebud {m}", f"{work}/{ds}/{m}/metrics.jsonl", True))
    for name, path, tastebud in runs:
        if not os.path.exists(path):
            continue
        r = rows(path, tastebud)
        epoch, hr, ndcg, speed = max(r, key=lambda x: (x[1], -x[0]))
        speeds = [x[3] for x in r if x[3]]
        mean_speed = f"{sum(speeds) / len(speeds):,.0f}" if speeds else "-"
        if name == "tastebud mf" and speeds:
            mean_speed += " (samples/s, negatives included)"
        print(f"| {ds} | {name} | {epoch} | {hr:.4f} | {ndcg:.4f} | {mean_speed} |")
PY
