#!/usr/bin/env bash
# Lazy against dense embedding updates on the real exports in ../shared/data (issue 25): NeuMF at
# its defaults, leave-one-out HR@10 / NDCG@10 on the held-out test items per epoch, the best
# epoch (chosen on the validation users, as model.bin is) and seconds per epoch.
#   BUILD_DIR=build-cpu bash bench/bench_embedding_updates.sh [EPOCHS] [SEEDS] [BATCHES]
# BATCHES: the batch sizes to run (default "256 1024"; at 1024 both datasets are small enough
# for the old `auto` rule, users + items <= 16 x batch, to have picked dense). SETS: "ml retail"
# by default; THREADS: 2. Seconds per epoch are the median over the runs' epochs (a shared
# machine's stalls stretch single epochs tenfold).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-10}
seeds=${2:-"1 2"}
batches=${3:-"256 1024"}
build=${BUILD_DIR:-build}
work=${WORK_DIR:-/tmp/tastebud-updates}
data=${DATA_DIR:-../shared/data}
sets=${SETS:-"ml retail"}
threads=${THREADS:-2}
bin=$build/host/tastebud
mkdir -p "$work"
[ -d "$work/ml" ] || "$bin" import --interactions "$data/ml-latest-small/interactions.csv" \
  --items "$data/ml-latest-small/items.csv" --out "$work/ml" >/dev/null
[ -d "$work/retail" ] || "$bin" import --interactions "$data/online-retail/interactions.csv.gz" \
  --items "$data/online-retail/items.csv.gz" --out "$work/retail" >/dev/null
for batch in $batches; do
  for seed in $seeds; do
    for set in $sets; do
      for mode in lazy dense; do
        out="$work/m-$set-$batch-$seed-$mode"
        [ -f "$out/metrics.jsonl" ] && [ "$(wc -l < "$out/metrics.jsonl")" -ge "$epochs" ] && continue
        rm -rf "$out"
        extra=()
        [ "$set" = retail ] && extra=(--event purchase)
        "$bin" train --data "$work/$set" --out "$out" --epochs "$epochs" --batch-size "$batch" --seed "$seed" \
          --threads "$threads" --embedding-updates "$mode" --no-progress "${extra[@]}" > "$out.log" 2>&1
        echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg) $set batch $batch seed $seed $mode done"
      done
    done
  done
done
python3 - "$work" "$epochs" <<'PY'
import glob, json, os, re, statistics, sys
work, epochs = sys.argv[1], int(sys.argv[2])
runs = {}
for path in sorted(glob.glob(f"{work}/m-*/metrics.jsonl")):
    _, set_, batch, seed, mode = os.path.basename(os.path.dirname(path)).split("-")
    rows = [json.loads(l) for l in open(path)]
    runs.setdefault((set_, int(batch), mode), []).append((int(seed), rows))
print("| dataset | batch | updates | seeds | HR@10 ep 5 | HR@10 ep %d | NDCG@10 ep %d | best val epoch: test HR@10 / NDCG@10 | median s/epoch |" % (epochs, epochs))
print("|---|---|---|---|---|---|---|---|---|")
mean = lambda xs: sum(xs) / len(xs)
for (set_, batch, mode), seeds in sorted(runs.items()):
    m = lambda rows, e, k: rows[e - 1]["metrics"][k]
    hr5 = [m(r, min(5, len(r)), "hr@10") for _, r in seeds]
    hrN = [m(r, len(r), "hr@10") for _, r in seeds]
    ndN = [m(r, len(r), "ndcg@10") for _, r in seeds]
    best = []
    for _, r in seeds:
        key = "val.hr@10" if "val.hr@10" in r[0]["metrics"] else "hr@10"
        b = max(r, key=lambda x: x["metrics"][key])
        best.append((b["epoch"], b["metrics"]["hr@10"], b["metrics"]["ndcg@10"]))
    sec = statistics.median([x["seconds"] for _, r in seeds for x in r])
    fmt = lambda xs: f"{mean(xs):.4f}" + (f" ({min(xs):.4f}-{max(xs):.4f})" if len(xs) > 1 else "")
    print(f"| {set_} | {batch} | {mode} | {','.join(str(s) for s, _ in seeds)} | {fmt(hr5)} | {fmt(hrN)} | {fmt(ndN)} | "
          + ", ".join(f"ep {e}: {h:.4f} / {n:.4f}" for e, h, n in best) + f" | {sec:.2f} |")
PY
