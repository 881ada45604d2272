#!/usr/bin/env bash
# End-to-end import benchmark: generates a synthetic shop (20M interactions by default), imports
# its interactions.csv with `tastebud import` under /usr/bin/time -v, once with the default memory
# limit (a quarter of RAM: the sort stays in memory) and once with --memory-limit 256M (the sort
# spills runs and merges them), checks with cmp that both datasets hold the same bytes, prints MB/s
# of interactions CSV and peak RSS, and appends a row per run to bench/RESULTS.md.
#
#   bench/bench_import.sh [TASTEBUD_BINARY] [ROWS] [WORK_DIR]
#
# TASTEBUD_BENCH_CSV=PATH imports an existing interactions CSV of ROWS rows instead of generating
# one; TASTEBUD_BENCH_LIMITS="default 256M" sets the runs (each "default" or a --memory-limit
# value). The machine is often shared: the CPU time (user + sys) and the load average before and
# after the run are recorded next to the wall time, since only the former is robust to other load.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../build/host/tastebud}"
rows="${2:-20000000}"
work="${3:-/tmp/tastebud-bench-import}"
machine="${TASTEBUD_BENCH_MACHINE:-2-core VM (AVX2), Debian 12}"
limits="${TASTEBUD_BENCH_LIMITS:-default 256M}"

csv="${TASTEBUD_BENCH_CSV:-}"
if [[ -z "$csv" ]]; then
  csv_dir="$work/shop-$rows"
  csv="$csv_dir/interactions.csv"
  if [[ ! -f "$csv" ]]; then
    "$bin" generate --users $((rows / 20)) --items $((rows / 200)) --interactions "$rows" --out "$csv_dir"
  fi
fi
bytes=$(stat -c %s "$csv")
mkdir -p "$work"
cat "$csv" >/dev/null  # read from the page cache, as in every later run

results="$here/RESULTS.md"
commit=$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$here/.." diff --quiet HEAD -- datasets 2>/dev/null; then commit="$commit+changes"; fi
heading='### Bounded imports (issue 12, bench/bench_import.sh)'

# Appends one row after the last row of the issue-12 table (created at the end of the Import
# section when missing).
append_row() {
  local row="$1"
  if [[ ! -f "$results" ]]; then printf '# Benchmark results\n\n## Import (bench/bench_import.sh)\n\n' >"$results"; fi
  if ! grep -qF "$heading" "$results"; then
    awk -v heading="$heading" '
      /^## / { if (in_import && !done) { print heading; print ""; print "| date | machine | rows | CSV MB | --memory-limit | wall s | MB/s | MB/s per CPU s | peak RSS MiB | runs spilled | load avg | commit |"; print "|---|---|---|---|---|---|---|---|---|---|---|---|"; print ""; done = 1 } in_import = ($0 ~ /^## Import/) }
      { print }
      END { if (!done) { print ""; print heading; print ""; print "| date | machine | rows | CSV MB | --memory-limit | wall s | MB/s | MB/s per CPU s | peak RSS MiB | runs spilled | load avg | commit |"; print "|---|---|---|---|---|---|---|---|---|---|---|---|" } }
    ' "$results" >"$results.new"
    mv "$results.new" "$results"
  fi
  awk -v row="$row" -v heading="$heading" '
    $0 == heading { in_table = 1 }
    in_table && /^\|/ { seen = 1 }
    in_table && seen && !/^\|/ && !done { print row; done = 1; in_table = 0 }
    { print }
    END { if (!done) print row }
  ' "$results" >"$results.new"
  mv "$results.new" "$results"
}

datasets=()
for limit in $limits; do
  out="$work/dataset-$limit"
  rm -rf "$out"
  flag=()
  if [[ "$limit" != default ]]; then flag=(--memory-limit "$limit"); fi
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -v "$bin" import --interactions "$csv" --out "$out" "${flag[@]}" \
    --quiet >"$work/import.out" 2>"$work/time.txt"
  load_after=$(cut -d' ' -f1 /proc/loadavg)
  cat "$work/import.out"

  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt" |
    awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
  user=$(awk -F': ' '/User time/ {print $2}' "$work/time.txt")
  sys=$(awk -F': ' '/System time/ {print $2}' "$work/time.txt")
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  mbps=$(awk -v b="$bytes" -v s="$wall" 'BEGIN { printf "%.0f", b / 1e6 / s }')
  cpu_mbps=$(awk -v b="$bytes" -v u="$user" -v y="$sys" 'BEGIN { printf "%.0f", b / 1e6 / (u + y) }')
  rss_mib=$(awk -v k="$rss_kb" 'BEGIN { printf "%.0f", k / 1024 }')
  runs=$(sed -n 's/.* \([0-9][0-9]*\) sorted runs spilled.*/\1/p' "$work/import.out")
  runs="${runs:-0}"
  load="$load_before-$load_after"

  echo "--memory-limit $limit: interactions.csv $((bytes / 1000000)) MB, $rows rows: ${wall} s wall, ${user} s user, ${sys} s sys"
  echo "=> ${mbps} MB/s end to end (${cpu_mbps} MB/s per CPU second), peak RSS ${rss_mib} MiB, ${runs} runs spilled, load ${load} (before-after)"
  append_row "$(printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$(date -u +%Y-%m-%d)" \
    "$machine" "$rows" "$((bytes / 1000000))" "$limit" "$wall" "$mbps" "$cpu_mbps" "$rss_mib" "$runs" "$load" "$commit")"
  datasets+=("$out")
done

# Every file of every run's dataset against the first's: the same bytes (meta.json without its
# import history, which holds the time of the import).
first="${datasets[0]}"
for other in "${datasets[@]:1}"; do
  differ=0
  for f in $(cd "$first" && find . -type f | sort); do
    if [[ "$f" == ./meta.json ]]; then
      python3 -c 'import json,sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for m in (a, b): m.pop("imports", None)
sys.exit(a != b)' "$first/$f" "$other/$f" || { echo "differs: $f"; differ=1; }
    else
      cmp -s "$first/$f" "$other/$f" || { echo "differs: $f"; differ=1; }
    fi
  done
  if [[ $(cd "$first" && find . -type f | wc -l) != $(cd "$other" && find . -type f | wc -l) ]]; then
    echo "the file sets differ"; differ=1
  fi
  if [[ $differ == 0 ]]; then echo "cmp: $other holds the same bytes as $first"; else exit 1; fi
done
