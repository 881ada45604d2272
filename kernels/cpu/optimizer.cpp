#include "cpu/optimizer.h"

namespace tastebud::cpu {

void dense_update(const OptimizerParams& p, float step_size, float* weights, float* state0,
                  float* state1, const float* grads, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    apply_update(p.kind, step_size, p.beta1, p.beta2, p.eps, p.l2, weights[i], state0[i],
                 state1[i], grads[i]);
  }
}

void sparse_update(const OptimizerParams& p, float step_size, float* table, float* state0,
                   float* state1, int64_t width, std::span<const uint32_t> rows,
                   const float* row_grads) {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < static_cast<int64_t>(rows.size()); ++k) {
    const int64_t base = static_cast<int64_t>(rows[k]) * width;
    for (int64_t j = 0; j < width; ++j) {
      apply_update(p.kind, step_size, p.beta1, p.beta2, p.eps, p.l2, table[base + j],
                   state0[base + j], state1[base + j], row_grads[k * width + j]);
    }
  }
}

}  // namespace tastebud::cpu
