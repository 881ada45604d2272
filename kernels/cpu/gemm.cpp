#include "cpu/gemm.h"

#include <algorithm>
#include <cmath>

#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace tastebud::cpu {
namespace {

// What happens to a finished sum before it is stored.
struct Epilogue {
  bool accumulate = false;
  const float* bias = nullptr;
  bool relu = false;

  float apply(float sum, float old, int64_t j) const {
    if (accumulate) return old + sum;
    if (bias != nullptr) sum += bias[j];
    return relu ? std::max(sum, 0.0f) : sum;
  }
};

#if defined(__AVX2__) && defined(__FMA__)

inline __m256 finish(const Epilogue& e, __m256 sum, const float* c, int64_t j) {
  if (e.accumulate) return _mm256_add_ps(_mm256_loadu_ps(c), sum);
  if (e.bias != nullptr) sum = _mm256_add_ps(sum, _mm256_loadu_ps(e.bias + j));
  return e.relu ? _mm256_max_ps(sum, _mm256_setzero_ps()) : sum;
}

// Rows [i, i + MR) and columns [j, j + 8 * W) of C: MR x W registers of eight sums each.
template <int MR, int W>
inline void block(const GemmOperands& g, const Epilogue& e, int64_t i, int64_t j) {
  __m256 acc[MR][W];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) acc[r][w] = _mm256_setzero_ps();
  }
  const int64_t k = g.k, a_row = g.a_row, a_col = g.a_col, ldb = g.ldb;
  const float* a = g.a + i * a_row;
  const float* b = g.b + j;
  for (int64_t p = 0; p < k; ++p, a += a_col, b += ldb) {
    __m256 bv[W];
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) bv[w] = _mm256_loadu_ps(b + 8 * w);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * a_row);
#pragma GCC unroll 2
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(av, bv[w], acc[r][w]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* c = g.c + (i + r) * g.ldc + j;
#pragma GCC unroll 2
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(c + 8 * w, finish(e, acc[r][w], c + 8 * w, j + 8 * w));
  }
}

// Columns [j, j + 8 * W) for every row: blocks of six rows, then what is left.
template <int W>
void columns(const GemmOperands& g, const Epilogue& e, int64_t j) {
  int64_t i = 0;
  for (; i + 6 <= g.m; i += 6) block<6, W>(g, e, i, j);
  switch (g.m - i) {
    case 5: block<5, W>(g, e, i, j); break;
    case 4: block<4, W>(g, e, i, j); break;
    case 3: block<3, W>(g, e, i, j); break;
    case 2: block<2, W>(g, e, i, j); break;
    case 1: block<1, W>(g, e, i, j); break;
    default: break;
  }
}

#endif

// Columns [j, n), one sum at a time (the last n % 8 columns, or all of them without AVX2).
void scalar_columns(const GemmOperands& g, const Epilogue& e, int64_t j) {
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t col = j; col < g.n; ++col) {
      float sum = 0.0f;
      for (int64_t p = 0; p < g.k; ++p) sum = std::fma(g.a[i * g.a_row + p * g.a_col], g.b[p * g.ldb + col], sum);
      float& c = g.c[i * g.ldc + col];
      c = e.apply(sum, c, col);
    }
  }
}

}  // namespace

void gemm(const GemmOperands& g, bool accumulate, const float* bias, bool relu) {
  const Epilogue e{accumulate, accumulate ? nullptr : bias, !accumulate && relu};
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; j + 16 <= g.n; j += 16) columns<2>(g, e, j);
  if (j + 8 <= g.n) {
    columns<1>(g, e, j);
    j += 8;
  }
#endif
  scalar_columns(g, e, j);
}

void gemm_bt(GemmOperands g, const float* bt, int64_t ldbt) {
  // B = Bt^T, [k x n], copied once: the kernels read B's rows.
  thread_local std::vector<float> b;
  b.resize(static_cast<size_t>(g.k * g.n));
  for (int64_t j = 0; j < g.n; ++j) {
    for (int64_t p = 0; p < g.k; ++p) b[p * g.n + j] = bt[j * ldbt + p];
  }
  g.b = b.data();
  g.ldb = g.n;
  gemm(g, false, nullptr, false);
}

}  // namespace tastebud::cpu
