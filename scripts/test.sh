#!/usr/bin/env bash
# Installs the dependencies, builds everything and runs the whole test suite: CTest, then the
# Python package's pytest suite against the command line built here, then the suite under the
# sanitizers and the fuzz harnesses (scripts/hardening.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_dir=${BUILD_DIR:-build}
venv="$PWD/$build_dir/pyvenv"

# The Python package's environment, from PyPI: its build backend and what its tests import.
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check scikit-build-core pytest numpy onnx onnxruntime pandas tqdm

# One build for everything: the module (TASTEBUD_PYTHON) links the libraries the CLI and the
# tests use, compiled once.
bash scripts/build.sh -DTASTEBUD_PYTHON=ON -DPython_EXECUTABLE="$venv/bin/python"
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)"

# `pip install ./python`, handed the module built above (python/CMakeLists.txt) instead of
# compiling the libraries a second time.
module=$(ls "$PWD/$build_dir"/python/module/_core*.so)
"$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall ./python \
  --config-settings=cmake.define.TASTEBUD_PREBUILT_MODULE="$module"
TASTEBUD_CLI="$PWD/$build_dir/host/tastebud" OMP_WAIT_POLICY=passive "$venv/bin/python" -m pytest -q python/tests

# Then the hardening half (issue 15): one clang ASan+UBSan+libFuzzer build, the suite under the
# sanitizers, and every fuzz harness for 30 s. TASTEBUD_QUICK=1 skips it for a quick local run.
[ "${TASTEBUD_QUICK:-0}" = 1 ] || bash scripts/hardening.sh
