#!/usr/bin/env bash
# Installs what tastebud builds with, from Debian's packages (run as root on Debian 12).
# The CUDA toolkit is optional: with nvcc on PATH the CUDA backend is built too.
# The Python package (python/) builds with pybind11-dev and python3-dev in a python3-venv; the
# report's rendering test runs headless chromium.
# Open MPI (openmpi-bin, libopenmpi-dev) builds the multi-process path (TASTEBUD_MPI).
# Usage: bash scripts/setup.sh [--fuzz]
set -euo pipefail
packages=(build-essential cmake libeigen3-dev libomp-dev libcli11-dev nlohmann-json3-dev libfmt-dev
          libtomlplusplus-dev libgtest-dev libbenchmark-dev zlib1g-dev pybind11-dev python3-dev python3-venv chromium
          openmpi-bin libopenmpi-dev libcpp-httplib-dev pkg-config universal-ctags)
# --fuzz: clang and its sanitizer and libFuzzer runtimes too (scripts/fuzz.sh, scripts/sanitize.sh).
[ "${1:-}" = "--fuzz" ] && packages+=(clang libclang-rt-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
