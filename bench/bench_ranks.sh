#!/usr/bin/env bash
# Training on one process against two ranks (issue 11): the same job (synthetic shop, NeuMF,
# --eval none so only training is timed) trained as one process with one and with two threads and
# under `mpirun -np 2` with one thread per rank. Prints a markdown table of samples/s (the mean of
# the epochs after the first) and the bytes each rank's collectives fill per step (from the log).
# Then the memory part: a user-heavy shop (MEM_USERS users, default 2M, MEM_ITEMS 2000 items,
# MEM_INTERACTIONS 3M rows), NeuMF with 32 factors, trained 1 epoch with a checkpoint, as one
# process and on two ranks; each process's peak RSS comes from /usr/bin/time -v.
# Usage: bench/bench_ranks.sh [TASTEBUD_BINARY] [WORK_DIR]; USERS, ITEMS, INTERACTIONS, EPOCHS,
# BATCH, FACTORS, LAYERS override the job; PART=speed or PART=memory runs one part only.
set -euo pipefail
bin=${1:-build/host/tastebud}
work=${2:-/tmp/tastebud_bench_ranks}
users=${USERS:-20000} items=${ITEMS:-5000} interactions=${INTERACTIONS:-600000}
epochs=${EPOCHS:-3} batch=${BATCH:-8192} factors=${FACTORS:-32} layers=${LAYERS:-64,32,16}
export OMP_WAIT_POLICY=passive OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Ranks that wait in a collective yield the core (this machine has fewer cores than it has work).
export OMPI_MCA_mpi_yield_when_idle=1
part=${PART:-both}
rm -rf "$work"
mkdir -p "$work"
if [ "$part" != memory ]; then
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
fi

[ "$part" = speed ] && exit 0
# Memory: peak RSS per process, one process against each of two ranks.
mem_users=${MEM_USERS:-2000000} mem_items=${MEM_ITEMS:-2000} mem_interactions=${MEM_INTERACTIONS:-3000000}
"$bin" generate --users "$mem_users" --items "$mem_items" --interactions "$mem_interactions" --out "$work/mcsv" > /dev/null
"$bin" import --interactions "$work/mcsv/interactions.csv" --out "$work/mdata" --quiet > /dev/null
rm -rf "$work/mcsv"
mjob=(train --data "$work/mdata" --epochs 1 --batch-size "$batch" --factors 32 --layers 64,32,16 --eval none
      --device cpu --no-progress --threads 1)
/usr/bin/time -v -o "$work/rss.one" "$bin" "${mjob[@]}" --out "$work/mone" > "$work/mone.log"
mpirun -np 2 --oversubscribe bash -c '/usr/bin/time -v -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' "$work/rss.two" \
  "$bin" "${mjob[@]}" --out "$work/mtwo" > "$work/mtwo.log"
peak() { awk '/Maximum resident set size/ {printf "%.0f", $6 / 1024}' "$1"; }
echo
grep -o "holds .* for the whole model" "$work/mtwo.log" || true
echo "| run | peak RSS (MiB) | of one process |"
echo "|---|---|---|"
one=$(peak "$work/rss.one")
echo "| 1 process | $one | 1.00 |"
for r in 0 1; do
  p=$(peak "$work/rss.two.$r")
  echo "| mpirun -np 2, rank $r | $p | $(python3 -c "print(f'{$p / $one:.2f}')") |"
done
cmp -s "$work/mone/model.bin" "$work/mtwo/model.bin" && echo "(model.bin: the same bytes)" || echo "(model.bin differs from one process's within rounding, as expected)"
