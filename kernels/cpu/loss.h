// Losses on logits on the CPU; both write d loss / d logit, scaled, and return the summed loss.
#pragma once

#include <cstdint>

namespace tastebud::cpu {

// Row r: label labels[r], weight weights[r]; dlogits[r] = scale * weight * d bce / d z.
double bce_loss_and_grad(const float* logits, const float* labels, const float* weights,
                         int64_t rows, float scale, float* dlogits);

// Rows come in pairs (2t: positive, 2t + 1: negative) weighted by weights[2t].
double bpr_loss_and_grad(const float* logits, const float* weights, int64_t rows, float scale,
                         float* dlogits);

}  // namespace tastebud::cpu
