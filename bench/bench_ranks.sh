#!/usr/bin/env bash
# Training on one process against two ranks (issue 11): the same job (synthetic shop, NeuMF,
# --eval none so only training is timed) trained as one process with one and with two threads and
# under `mpirun -np 2` with one thread per rank. Prints a markdown table of samples/s (the mean of
# the epochs after the first) and the bytes each rank's collectives fill per step (from the log).
# Usage: bench/bench_ranks.sh [TASTEBUD_BINARY] [WORK_DIR]; USERS, ITEMS, INTERACTIONS, EPOCHS,
# BATCH, FACTORS, LAYERS override the job.
set -euo pipefail
bin=${1:-build/host/tastebud}
work=${2:-/tmp/tastebud_bench_ranks}
users=${USERS:-20000} items=${ITEMS:-5000} interactions=${INTERACTIONS:-600000}
epochs=${EPOCHS:-3} batch=${BATCH:-8192} factors=${FACTORS:-32} layers=${LAYERS:-64,32,16}
export OMP_WAIT_POLICY=passive OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Ranks that wait in a collective yield the core (this machine has fewer cores than it has work).
export OMPI_MCA_mpi_yield_when_idle=1
rm -rf "$work"
"$bin" generate --users "$users" --items "$items" --interactions "$interactions" --out "$work/csv" > /dev/null
"$bin" import --interactions "$work/csv/interactions.csv" --out "$work/data" --quiet > /dev/null
job=(train --data "$work/data" --epochs "$epochs" --batch-size "$batch" --factors "$factors" --layers "$layers"
     --eval none --device cpu --no-progress)
echo "| run | M samples/s | MB exchanged per step (per rank) |"
echo "|---|---|---|"
"$bin" "${job[@]}" --threads 1 --out "$work/one1" > "$work/one1.log"
"$bin" "${job[@]}" --threads 2 --out "$work/one2" > "$work/one2.log"
mpirun -np 2 --oversubscribe "$bin" "${job[@]}" --threads 1 --out "$work/two" > "$work/two.log"
for name in one1 one2 two; do
  python3 - "$work/$name/metrics.jsonl" "$work/$name.log" "$name" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = rows[1:] or rows
rate = sum(r["samples"] for r in rows) / sum(r["seconds"] for r in rows)
mb = re.findall(r"([0-9.]+) MB exchanged per step", open(sys.argv[2]).read())
label = {"one1": "1 process, 1 thread", "one2": "1 process, 2 threads", "two": "mpirun -np 2, 1 thread each"}[sys.argv[3]]
print(f"| {label} | {rate / 1e6:.3f} | {mb[-1] if mb else '-'} |")
PY
done
cmp -s "$work/one1/model.bin" "$work/one2/model.bin" && echo "(1 and 2 threads: bit-identical models)"
