#!/usr/bin/env bash
# The command line's jobs on two ranks (`mpirun -np 2`) against one process: one model directory,
# a bit-identical rerun, metrics within rounding, batch jobs byte-identical, a stopped run resumed
# like an uninterrupted one, a resume with another rank count refused, and a rank that fails (another dataset, or killed) ending the whole job
# quickly with its message. Usage: mpi_cli_test.sh TASTEBUD_BINARY MPIEXEC
set -euo pipefail
bin=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
two() { timeout 120 "$mpiexec" -np 2 --oversubscribe "$@"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

"$bin" generate --users 300 --items 200 --interactions 6000 --seed 3 --out "$work/csv" > /dev/null
"$bin" import --interactions "$work/csv/interactions.csv" --out "$work/data" > /dev/null
"$bin" generate --users 200 --items 150 --interactions 4000 --seed 4 --out "$work/csv2" > /dev/null
"$bin" import --interactions "$work/csv2/interactions.csv" --out "$work/data2" > /dev/null
# Lazy embedding updates: the one-process default for tables this small would be dense, which
# several ranks do not train.
settings=(--batch-size 1000 --factors 8 --layers 16,8 --optimizer sgd --lr 0.05 --threads 1 --device cpu --no-progress --embedding-updates lazy)
train=(train --data "$work/data" "${settings[@]}")

"$bin" "${train[@]}" --epochs 2 --out "$work/one" > "$work/one.log"
two "$bin" "${train[@]}" --epochs 2 --out "$work/two" > "$work/two.log"
two "$bin" "${train[@]}" --epochs 2 --out "$work/again" > "$work/again.log"
grep -q "2 ranks: rank 0 holds" "$work/two.log" || fail "the two-rank log does not say what each rank holds"
[ "$(grep -c "^epoch " "$work/two.log")" = 2 ] || fail "rank 0 alone should log the epochs: $(cat "$work/two.log")"
cmp -s "$work/two/model.bin" "$work/again/model.bin" || fail "a rerun on two ranks is not bit-identical"
ls -A "$work/two" | grep -q '\.tmp' && fail "temporary files left in the model directory"
python3 - "$work/one/metrics.jsonl" "$work/two/metrics.jsonl" <<'EOF'
import json, sys
one, two = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
for a, b in zip(one, two):
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * a["loss"], (a["loss"], b["loss"])
    for k in ("hr@10", "ndcg@10"):
        assert abs(a["metrics"][k] - b["metrics"][k]) <= 0.01, (k, a["metrics"][k], b["metrics"][k])
print("losses 1 vs 2 ranks:", [(a["loss"], b["loss"]) for a, b in zip(one, two)])
EOF

# A warm start on two ranks (each reads only the parent rows its own rows come from, Adam's
# moments too) trains like the one-process warm start, and unlike a cold start.
adam=(--batch-size 1000 --factors 8 --layers 16,8 --optimizer adam --lr 0.01 --threads 1 --device cpu --no-progress --embedding-updates lazy)
"$bin" train --data "$work/data" "${adam[@]}" --epochs 1 --out "$work/parent" > /dev/null
warm=(train --data "$work/data2" "${adam[@]}" --epochs 2)
"$bin" "${warm[@]}" --out "$work/cold" > /dev/null
"$bin" "${warm[@]}" --warm-start "$work/parent" --out "$work/warm1" > /dev/null
two "$bin" "${warm[@]}" --warm-start "$work/parent" --out "$work/warm2" > "$work/warm2.log"
grep -q "warm start from .*optimizer state from its checkpoint.bin" "$work/warm2.log" || fail "no warm start on two ranks: $(cat "$work/warm2.log")"
python3 - "$work/warm1/metrics.jsonl" "$work/warm2/metrics.jsonl" "$work/cold/metrics.jsonl" <<'EOF'
import json, sys
one, two, cold = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
for a, b in zip(one, two):
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * a["loss"], (a["loss"], b["loss"])
assert abs(one[0]["loss"] - cold[0]["loss"]) > 1e-3 * cold[0]["loss"], (one[0]["loss"], cold[0]["loss"])
print("warm-start losses 1 vs 2 ranks:", [(a["loss"], b["loss"]) for a, b in zip(one, two)], "cold", cold[0]["loss"])
EOF

# Metadata, context and impression negatives with BPR on two ranks: the one-process losses.
"$bin" generate --users 200 --items 150 --interactions 5000 --impressions 5 --device-effect 2 --seed 5 --out "$work/csv3" > /dev/null
"$bin" import --interactions "$work/csv3/interactions.csv" --users "$work/csv3/users.csv" --items "$work/csv3/items.csv" \
  --out "$work/data3" > /dev/null
rich=(train --data "$work/data3" "${settings[@]}" --epochs 2 --context all --impression-negatives 0.3 --metadata both --loss bpr)
"$bin" "${rich[@]}" --out "$work/rich1" > /dev/null
two "$bin" "${rich[@]}" --out "$work/rich2" > /dev/null
python3 - "$work/rich1/metrics.jsonl" "$work/rich2/metrics.jsonl" <<'EOF2'
import json, sys
one, two = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
for a, b in zip(one, two):
    assert abs(a["loss"] - b["loss"]) <= 1e-6 * a["loss"], (a["loss"], b["loss"])
    assert a["impression_negatives"] == b["impression_negatives"], (a, b)
EOF2

# Batch jobs: the two-rank model answers in one process, and two ranks write the same bytes.
{ cut -d, -f1 "$work/csv/interactions.csv" | tail -n +2 | sort -u | head -40 | sed 's/.*/{"userId": "&"}/'
  echo '{"userId": "nobody"}'; echo 'not json'
  cut -d, -f2 "$work/csv/interactions.csv" | tail -n +2 | sort -u | head -7 | sed 's/.*/{"itemId": "&"}/'; } > "$work/queries.jsonl"
"$bin" batch-infer --model "$work/two" --input "$work/queries.jsonl" --output "$work/one.out" --device cpu > /dev/null
two "$bin" batch-infer --model "$work/two" --input "$work/queries.jsonl" --output "$work/two.out" --device cpu > "$work/infer.log"
cmp "$work/one.out" "$work/two.out" || fail "batch-infer on two ranks differs from one process"
[ "$(wc -l < "$work/two.out")" = "$(grep -c . "$work/queries.jsonl")" ] || fail "batch-infer lost lines"
[ "$(grep -c "batch-infer:" "$work/infer.log")" = 2 ] || fail "rank 0 alone should log batch-infer"
cut -d, -f2 "$work/csv/interactions.csv" | tail -n +2 | sort -u | head -9 | sed 's/.*/{"itemId": "&"}/' > "$work/items.jsonl"
"$bin" batch-segment --model "$work/two" --input "$work/items.jsonl" --output "$work/one.seg" > /dev/null
two "$bin" batch-segment --model "$work/two" --input "$work/items.jsonl" --output "$work/two.seg" > /dev/null
cmp "$work/one.seg" "$work/two.seg" || fail "batch-segment on two ranks differs from one process"

# Sharded resume: a two-rank run stopped after epoch 1 and resumed to epoch 3 (each rank reads its
# rows of checkpoint.bin) gives the uninterrupted two-rank run's model and metrics.
two "$bin" "${train[@]}" --epochs 3 --out "$work/through" > /dev/null
two "$bin" "${train[@]}" --epochs 1 --out "$work/stopped" > /dev/null
two "$bin" "${train[@]}" --epochs 3 --out "$work/stopped" --resume > /dev/null
cmp "$work/through/model.bin" "$work/stopped/model.bin" || fail "a resumed two-rank run differs from an uninterrupted one"
python3 - "$work/through/metrics.jsonl" "$work/stopped/metrics.jsonl" <<'EOF3'
import json, sys
one, two = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
assert len(one) == len(two) == 3, (len(one), len(two))
for a, b in zip(one, two):
    assert (a["loss"], a["metrics"]) == (b["loss"], b["metrics"]), (a, b)
EOF3

# A resume with another rank count is refused, saying so.
if "$bin" "${train[@]}" --out "$work/two" --epochs 3 --resume > "$work/resume.log" 2>&1; then
  fail "a one-process resume of a two-rank run was accepted"
fi
grep -q "trained on 2 rank(s) but this run has 1" "$work/resume.log" || fail "resume message: $(cat "$work/resume.log")"

# Commands that do not split their work across ranks are refused rather than run twice.
if two "$bin" import --interactions "$work/csv/interactions.csv" --out "$work/twice" > "$work/import.log" 2>&1; then
  fail "an import on two ranks ran"
fi
grep -q "runs as one process; under mpirun or srun only train" "$work/import.log" || fail "import message: $(cat "$work/import.log")"
[ ! -e "$work/twice" ] || fail "the refused import wrote $work/twice"

# A rank that reads another dataset fails; the job ends at once with its message, non-zero.
start=$SECONDS
if two bash -c 'd=$1; [ "$OMPI_COMM_WORLD_RANK" = 1 ] && d=$2; shift 2; exec "$@" --data "$d"' _ \
    "$work/data" "$work/data2" "$bin" train "${settings[@]}" --epochs 2 --out "$work/mixed" > "$work/mixed.log" 2>&1; then
  fail "ranks on different datasets trained"
fi
grep -q "rank 1 of 2: tastebud: error: rank 1 reads another dataset than rank 0" "$work/mixed.log" \
  || fail "mixed datasets message: $(cat "$work/mixed.log")"
[ $((SECONDS - start)) -lt 60 ] || fail "the failing job took $((SECONDS - start))s to end"

# A rank killed mid-training takes the job down; the last checkpoint stays whole and resumes.
start=$SECONDS
if two bash -c '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && (sleep 4; kill -9 $$) & exec "$@"' _ \
    "$bin" "${train[@]}" --epochs 400 --out "$work/killed" > "$work/killed.log" 2>&1; then
  fail "the job with a killed rank exited 0"
fi
[ $((SECONDS - start)) -lt 60 ] || fail "the job with a killed rank took $((SECONDS - start))s to end"
if [ -f "$work/killed/checkpoint.bin" ]; then
  two "$bin" "${train[@]}" --epochs 1 --out "$work/killed" --resume > "$work/resumed.log" 2>&1 \
    || fail "the killed run's checkpoint does not resume: $(cat "$work/resumed.log")"
fi
echo "mpi command line jobs: ok"
