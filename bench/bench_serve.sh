#!/usr/bin/env bash
# `tastebud serve` under load, measured with wrk (Debian's: apt-get install -y wrk) on this machine:
# GetRecommendations of an MF model and of NeuMF at its default shape over a 25K-item catalog, and
# PutEvents (10 events a request, each request acknowledged once its events are fsync'd).
# Prints one table and appends it to bench/RESULTS.md.
#   bash bench/bench_serve.sh [SECONDS]        (10 s per run by default)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
build=${BUILD_DIR:-build}
work=${WORK_DIR:-/tmp/tastebud-serve-bench}
bin=$build/host/tastebud
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk"; exit 1; }
cmake --build "$build" --target tastebud -j"$(nproc)" >/dev/null
rm -rf "$work" && mkdir -p "$work"
users=20000
"$bin" generate --users $users --items 25000 --interactions 500000 --seed 11 --out "$work/shop" >/dev/null
"$bin" import --interactions "$work/shop/interactions.csv" --out "$work/data" --quiet >/dev/null
"$bin" train --data "$work/data" --out "$work/mf" --model mf --epochs 1 --no-progress >/dev/null
"$bin" train --data "$work/data" --out "$work/neumf" --model neumf --epochs 1 --no-progress >/dev/null

cat > "$work/recommend.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"userId": "u%d", "numResults": 25}', (counter * 7919) % $users)
  return wrk.format("POST", "/recommendations", {["Content-Type"] = "application/json"}, body)
end
LUA
cat > "$work/events.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  local events = {}
  for k = 1, 10 do
    events[k] = string.format('{"eventType": "view", "itemId": "i%d", "sentAt": %d}', (counter * 31 + k) % 25000, 1700000000 + counter)
  end
  local body = string.format('{"sessionId": "s%d", "userId": "u%d", "eventList": [%s]}', counter % 5000, counter % 20000, table.concat(events, ","))
  return wrk.format("POST", "/events", {["Content-Type"] = "application/json"}, body)
end
LUA

# run NAME MODEL SCRIPT: starts a server, runs wrk against it, prints "NAME req/s p50 p99".
run() {
  local name=$1 model=$2 script=$3
  "$bin" serve --model "$work/$model" --listen 127.0.0.1:18181 --events "$work/events-$name" > "$work/serve-$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18181/health >/dev/null 2>&1 && break; sleep 0.1; done
  wrk -t2 -c32 -d"${seconds}s" --latency -s "$script" http://127.0.0.1:18181 > "$work/wrk-$name.txt"
  kill -TERM $pid && wait $pid || true
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk-$name.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk-$name.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk-$name.txt")
  local errors
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk-$name.txt" | tr '\n' ' ')
  echo "| $name | $rps | $p50 | $p99 | ${errors:-none} |"
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
rows+=("$(run "GetRecommendations, mf" mf "$work/recommend.lua")")
rows+=("$(run "GetRecommendations, neumf" neumf "$work/recommend.lua")")
rows+=("$(run "PutEvents (10 events a request)" mf "$work/events.lua")")
events=$(cat "$work"/events-PutEvents*/events-*.csv | grep -vc '^USER_ID' || true)
table=$(
  echo "### \`tastebud serve\` under wrk ($(date -u +%Y-%m-%d), $(nproc) cores, load before $load_before)"
  echo
  echo "wrk -t2 -c32 -d${seconds}s; 20K users x 25K items, 500K interactions; top 25 per request."
  echo
  echo "| run | requests/s | p50 | p99 | errors |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "PutEvents wrote $events events to disk (each request's 10 acknowledged after fsync)."
)
echo "$table"
printf '\n%s\n' "$table" >> bench/RESULTS.md
