#!/usr/bin/env bash
# Installs, builds, generates the built-in synthetic shop and imports it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
work=${DEMO_DIR:-demo}
mkdir -p "$work"
./build/host/tastebud generate --users 2000 --items 500 --interactions 100000 --seed 1 --out "$work/shop"
./build/host/tastebud import --interactions "$work/shop/interactions.csv" --users "$work/shop/users.csv" \
  --items "$work/shop/items.csv" --out "$work/dataset" --overwrite
./build/host/tastebud info "$work/dataset"
