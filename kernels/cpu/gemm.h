// The dense layers' matrix products in single precision on the CPU, for the small shapes a
// training chunk has (a few hundred rows, layers of tens of units), where a general GEMM spends
// much of its time packing. Register-blocked AVX2 kernels; Eigen where the CPU has no AVX2.
#pragma once

#include <cstdint>

namespace tastebud::cpu {

// C[m x n] (row stride ldc) = A B, or C += A B with accumulate. A[i, p] is a[i * a_row + p * a_col]
// (either orientation: a transposed operand needs no copy); B is row-major [k x n] with row
// stride ldb. Without accumulate, `bias` (null, or n values) is added to each row and `relu` then
// clamps at zero. Each C[i, j] is summed over p in order, one fused multiply-add at a time, so a
// result does not depend on its position in the blocking.
struct GemmOperands {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t a_row = 0, a_col = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
};

void gemm(const GemmOperands& g, bool accumulate, const float* bias, bool relu);

// C = A B where B is given as its transpose Bt [n x k] (row stride ldbt); g.b and g.ldb are
// ignored. A small weight matrix is transposed into per-thread scratch, then gemm.
void gemm_bt(GemmOperands g, const float* bt, int64_t ldbt);

}  // namespace tastebud::cpu
