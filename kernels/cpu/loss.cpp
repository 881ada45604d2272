#include "cpu/loss.h"

#include "tastebud/loss_math.h"

namespace tastebud::cpu {

double bce_loss_and_grad(const float* logits, const float* labels, const float* weights,
                         int64_t rows, float scale, float* dlogits) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    total += static_cast<double>(weights[r]) * bce_loss(logits[r], labels[r]);
    dlogits[r] = scale * weights[r] * bce_grad(logits[r], labels[r]);
  }
  return total;
}

double bpr_loss_and_grad(const float* logits, const float* weights, int64_t rows, float scale,
                         float* dlogits) {
  double total = 0.0;
  for (int64_t r = 0; r + 1 < rows; r += 2) {
    const float w = weights[r];
    total += static_cast<double>(w) * bpr_loss(logits[r], logits[r + 1]);
    const float g = scale * w * bpr_grad_pos(logits[r], logits[r + 1]);
    dlogits[r] = g;
    dlogits[r + 1] = -g;
  }
  return total;
}

}  // namespace tastebud::cpu
