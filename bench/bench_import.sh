#!/usr/bin/env bash
# End-to-end import benchmark: generates a synthetic shop (20M interactions by default), imports
# its interactions.csv with `tastebud import` under /usr/bin/time -v, prints MB/s of interactions
# CSV and peak RSS, and appends one row to bench/RESULTS.md.
#
#   bench/bench_import.sh [TASTEBUD_BINARY] [ROWS] [WORK_DIR]
#
# TASTEBUD_BENCH_CSV=PATH imports an existing interactions CSV of ROWS rows instead of generating
# one. The machine is often shared: the CPU time (user + sys) and the load average before and after
# the run are recorded next to the wall time, since only the former is robust to other load.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../build/host/tastebud}"
rows="${2:-20000000}"
work="${3:-/tmp/tastebud-bench-import}"
machine="${TASTEBUD_BENCH_MACHINE:-2-core Debian 12 VM, no GPU}"

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

rm -rf "$work/dataset"
load_before=$(cut -d' ' -f1 /proc/loadavg)
/usr/bin/time -v "$bin" import --interactions "$csv" --out "$work/dataset" \
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
rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.0f", k / 1024 }')
load="$load_before-$load_after"

echo "interactions.csv $((bytes / 1000000)) MB, $rows rows: ${wall} s wall, ${user} s user, ${sys} s sys"
echo "=> ${mbps} MB/s end to end (${cpu_mbps} MB/s per CPU second), peak RSS ${rss_mb} MB, load ${load} (before-after)"

results="$here/RESULTS.md"
if [[ ! -f "$results" ]]; then
  printf '# Benchmark results\n\n' >"$results"
fi
if ! grep -q '^## Import' "$results"; then
  printf '\n## Import (bench/bench_import.sh)\n\n' >>"$results"
  printf '| date | machine | rows | CSV MB | wall s | MB/s | MB/s per CPU s | peak RSS MB | load avg | commit |\n' >>"$results"
  printf '|---|---|---|---|---|---|---|---|---|---|\n' >>"$results"
fi
commit=$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$here/.." diff --quiet HEAD -- datasets 2>/dev/null; then commit="$commit+changes"; fi
row=$(printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$(date -u +%Y-%m-%d)" "$machine" \
  "$rows" "$((bytes / 1000000))" "$wall" "$mbps" "$cpu_mbps" "$rss_mb" "$load" "$commit")
# After the last row of the Import table, wherever other sections follow it.
awk -v row="$row" '
  /^## / { if (in_import && !done) { print row; print ""; done = 1 } in_import = ($0 ~ /^## Import/) }
  in_import && /^\|/ { last_table_line = NR }
  in_import && !/^\|/ && last_table_line && !done { print row; done = 1 }
  { print }
  END { if (!done) print row }
' "$results" >"$results.new"
mv "$results.new" "$results"
