#!/usr/bin/env bash
# Builds the GPU check here and stages it into DIR, to run on a machine where nothing can be
# installed (a lent H200: driver, CUDA toolkit, CMake, Python; none of Debian's -dev packages):
#
#   DIR/bin/   tastebud, the CUDA test executables and bench_kernels_cuda, stripped
#   DIR/lib/   every shared library they need beyond glibc, libstdc++/libgcc and the CUDA
#              toolkit's own (fmt, toml++, Google Benchmark, libgomp, ...)
#   DIR/gpu_check.sh, DIR/MANIFEST (what was built, from which commit, for which CPU flags)
#
# Usage: bash bench/gpu_bundle.sh [--no-build] DIR   (BUILD_DIR, default build: a Release build for
# sm_90 plus PTX, the one scripts/build.sh makes, so a tree built for the tests is not built again;
# --no-build stages what BUILD_DIR holds, as the test of the bundle does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_FIRST=1
if [ "${1:-}" = --no-build ]; then BUILD_FIRST=0; shift; fi
DIR="${1:?usage: bench/gpu_bundle.sh [--no-build] DIR}"
BUILD="${BUILD_DIR:-$ROOT/build}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
BINARIES=(host/tastebud tests/test_backends tests/test_gpu_scorer tests/test_inference tests/test_sequence_ops_cuda tests/test_sequence_model bench/bench_kernels_cuda bench/export_split)
OPTIONAL=(tests/test_mpi)  # builds with MPI: the ranks step
LIMIT_MIB=48  # the device tool carries 64 MiB in all

if [ "$BUILD_FIRST" = 1 ]; then
  command -v nvcc >/dev/null || { echo "gpu_bundle: nvcc is not on PATH; the bundle needs the CUDA build" >&2; exit 1; }
  bash "$ROOT/scripts/setup.sh"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTASTEBUD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target tastebud test_backends test_gpu_scorer test_inference test_sequence_ops_cuda test_sequence_model bench_kernels_cuda export_split
  # The target list read whole first: `| grep -q` under pipefail fails when grep closes the pipe
  # early (issue 22: test_mpi was never bundled).
  targets=$(cmake --build "$BUILD" --target help)
  if grep -qw test_mpi <<< "$targets"; then cmake --build "$BUILD" -j"$(nproc)" --target test_mpi; fi
fi
for b in "${BINARIES[@]}"; do
  [ -x "$BUILD/$b" ] || { echo "gpu_bundle: $BUILD/$b is missing: build with CUDA first" >&2; exit 1; }
done

rm -rf "$DIR"
mkdir -p "$DIR/bin" "$DIR/lib"
for b in "${BINARIES[@]}"; do
  strip -o "$DIR/bin/$(basename "$b")" "$BUILD/$b"
done
for b in "${OPTIONAL[@]}"; do
  if [ -x "$BUILD/$b" ]; then strip -o "$DIR/bin/$(basename "$b")" "$BUILD/$b"; fi
done

# What the target machine already has: glibc, the C++ runtime and the CUDA toolkit and driver.
provided='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libresolv|libutil|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libcurand|libnccl|libnvidia|libnvJitLink)\.'
for b in "$DIR"/bin/*; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r name path; do
  if [[ ! "$name" =~ $provided ]]; then
    cp -L "$path" "$DIR/lib/$name"
    strip --strip-unneeded "$DIR/lib/$name" 2>/dev/null || true
  fi
done
missing=$(for b in "$DIR"/bin/*; do ldd "$b"; done | grep "not found" | sort -u || true)
[ -z "$missing" ] || { echo "gpu_bundle: unresolved libraries here already:" >&2; echo "$missing" >&2; exit 1; }

cp "$ROOT/bench/gpu_check.sh" "$DIR/gpu_check.sh"
mkdir -p "$DIR/peers"
cp "$ROOT/bench/peers/pytorch_sasrec.py" "$ROOT/bench/peers/pytorch_neumf.py" "$ROOT/bench/peers/pytorch_neumf_gpu.py" "$DIR/peers/"
chmod +x "$DIR/gpu_check.sh"
{
  echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | cut -d' ' -f2)"
  echo "cuda_architectures $(grep -m1 '^CMAKE_CUDA_ARCHITECTURES' "$BUILD/CMakeCache.txt" | cut -d= -f2)"
  # -march=x86-64-v3 (CMakeLists.txt): the host code needs these CPU flags.
  echo "cpu_flags avx avx2 fma bmi1 bmi2 f16c movbe abm xsave"
  echo "bundled_libraries $(cd "$DIR/lib" && ls | tr '\n' ' ')"
} >"$DIR/MANIFEST"

size_mib=$(( $(du -sk "$DIR" | cut -f1) / 1024 ))
echo "gpu_bundle: $DIR holds $(ls "$DIR/bin" | wc -l) programs and $(ls "$DIR/lib" | wc -l) libraries, ${size_mib} MiB"
if [ "$size_mib" -ge "$LIMIT_MIB" ]; then
  echo "gpu_bundle: the bundle is over its ${LIMIT_MIB} MiB limit" >&2
  exit 1
fi
