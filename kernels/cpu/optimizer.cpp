#include "cpu/optimizer.h"

#include <vector>

namespace tastebud::cpu {
namespace {

// One optimizer kind per instantiation, so the loop has no branch and vectorizes.
template <OptimizerKind Kind>
inline void update_span(const OptimizerParams& p, float step_size, float* __restrict w,
                        float* __restrict s0, float* __restrict s1, const float* __restrict g,
                        int64_t count) {
  const float beta1 = p.beta1, beta2 = p.beta2, eps = p.eps, l2 = p.l2;
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    apply_update(Kind, step_size, beta1, beta2, eps, l2, w[i], s0[i], s1[i], g[i]);
  }
}

inline void update_any(const OptimizerParams& p, float step_size, float* w, float* s0, float* s1,
                       const float* g, int64_t count) {
  switch (p.kind) {
    case OptimizerKind::kAdam: update_span<OptimizerKind::kAdam>(p, step_size, w, s0, s1, g, count); break;
    case OptimizerKind::kAdagrad: update_span<OptimizerKind::kAdagrad>(p, step_size, w, s0, s1, g, count); break;
    case OptimizerKind::kSgd: update_span<OptimizerKind::kSgd>(p, step_size, w, s0, s1, g, count); break;
  }
}

constexpr int64_t kPrefetchRows = 6;

inline void prefetch_row(const float* table, const float* state0, const float* state1, int64_t base, int64_t width) {
  for (int64_t j = 0; j < width; j += 16) {
    __builtin_prefetch(table + base + j, 1);
    __builtin_prefetch(state0 + base + j, 1);
    __builtin_prefetch(state1 + base + j, 1);
  }
}

}  // namespace

void dense_update(const OptimizerParams& p, float step_size, float* weights, float* state0,
                  float* state1, const float* grads, int64_t count) {
  update_any(p, step_size, weights, state0, state1, grads, count);
}

void sparse_update(const OptimizerParams& p, float step_size, float* table, float* state0,
                   float* state1, int64_t width, std::span<const uint32_t> rows,
                   const float* row_grads, const RowL2& l2) {
  // Small batches are updated on one thread: forking costs more than the update.
  const int64_t count = static_cast<int64_t>(rows.size());
#pragma omp parallel for schedule(static) if (rows.size() * width > (1 << 15))
  for (int64_t k = 0; k < count; ++k) {
    const int64_t base = static_cast<int64_t>(rows[k]) * width;
    // The rows are scattered over the table, and another core may hold them (the chunk that
    // gathered them): ask for a later row's lines now, to be written.
    if (k + kPrefetchRows < count) prefetch_row(table, state0, state1, static_cast<int64_t>(rows[k + kPrefetchRows]) * width, width);
    OptimizerParams row = p;
    row.l2 = row_l2(p.l2, l2, k);
    update_any(row, step_size, table + base, state0 + base, state1 + base, row_grads + k * width, width);
  }
}

void untouched_update(const OptimizerParams& p, float step_size, float* table, float* state0, float* state1,
                      int64_t width, int64_t table_rows, const uint8_t* touched, int64_t constant_column) {
  if (p.kind != OptimizerKind::kAdam) return;
  OptimizerParams zero_l2 = p;
  zero_l2.l2 = 0.0f;
  const std::vector<float> zeros(static_cast<size_t>(width), 0.0f);
  // The columns before and after the constant one (all of them when there is none).
  const int64_t before = constant_column >= 0 ? constant_column : width;
  const int64_t after = constant_column >= 0 ? constant_column + 1 : width;
  for (int64_t r = 0; r < table_rows; ++r) {
    if (touched[r]) continue;
    const int64_t base = r * width;
    update_any(zero_l2, step_size, table + base, state0 + base, state1 + base, zeros.data(), before);
    update_any(zero_l2, step_size, table + base + after, state0 + base + after, state1 + base + after, zeros.data(),
               width - after);
  }
}

}  // namespace tastebud::cpu
