// Math of the sequence models (SASRec with gSASRec's loss), shared by both backends: the gBCE
// loss of the positive, the dropout mask, and double twins of loss_math.h's formulas so the
// CPU templates run the same formulas in double for the gradient checks.
#pragma once

#include <cmath>
#include <cstdint>

#include "tastebud/hd.h"
#include "tastebud/loss_math.h"
#include "tastebud/philox.h"

namespace tastebud {

// Double twins of loss_math.h's sigmoid, softplus and BCE (the same formulas in double).
TASTEBUD_HD double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }
TASTEBUD_HD double softplus(double z) { return z > 0.0 ? z + log1p(exp(-z)) : log1p(exp(z)); }
TASTEBUD_HD double bce_loss(double z, double y) { return softplus(z) - y * z; }
TASTEBUD_HD double bce_grad(double z, double y) { return sigmoid(z) - y; }

// gSASRec's calibration (Petrov and Macdonald, RecSys 2023): beta = alpha (t (1 - 1/alpha) + 1/alpha)
// with alpha = negatives / (num_items - 1), clamped into (0, 1]. Written as 1 - t (1 - alpha), the
// same value without the division: t = 0 gives beta = 1 (plain BCE), t = 1 gives beta = alpha.
TASTEBUD_HD float gbce_beta(float alpha, float t) {
  alpha = alpha > 1.0f ? 1.0f : alpha;
  alpha = alpha > 0.0f ? alpha : 1.17549435e-38f;  // FLT_MIN, the smallest positive normal
  return 1.0f - t * (1.0f - alpha);
}

// The positive's loss -log sigmoid(z)^beta = beta softplus(-z), and its derivative in z.
TASTEBUD_HD float gbce_positive_loss(float z, float beta) { return beta * softplus(-z); }
TASTEBUD_HD float gbce_positive_grad(float z, float beta) { return beta * (sigmoid(z) - 1.0f); }
TASTEBUD_HD double gbce_positive_loss(double z, double beta) { return beta * softplus(-z); }
TASTEBUD_HD double gbce_positive_grad(double z, double beta) { return beta * (sigmoid(z) - 1.0); }

// Dropout mask of 16 consecutive elements: bit b (0..15) is set when element 16 * block + b of
// this epoch's dropout stream is kept, that is when byte b of one Philox draw is >= rate * 256.
// Element e is kept iff bit (e % 16) of dropout_keep_bits(seed, epoch, e / 16, rate) is set; the
// caller scales kept elements by 1 / (1 - rate).
TASTEBUD_HD uint32_t dropout_keep_bits(uint64_t seed, uint32_t epoch, uint64_t block, float rate) {
  const Philox4 words = random_words(seed, RandomStream::kDropout, epoch, block);
  const float threshold = rate * 256.0f;
  uint32_t keep = 0;
  for (int b = 0; b < 16; ++b) {
    const uint32_t byte = (words.v[b / 4] >> (8 * (b % 4))) & 0xFFu;
    if (static_cast<float>(byte) >= threshold) keep |= 1u << b;
  }
  return keep;
}

}  // namespace tastebud
