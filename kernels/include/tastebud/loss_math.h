// Loss formulas on logits, shared by both backends.
#pragma once

#include <cmath>

#include "tastebud/hd.h"

namespace tastebud {

TASTEBUD_HD float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// log(1 + e^z) without overflow.
TASTEBUD_HD float softplus(float z) { return z > 0.0f ? z + log1pf(expf(-z)) : log1pf(expf(z)); }

// Binary cross-entropy of a logit against label y in {0, 1}: softplus(z) - y z.
TASTEBUD_HD float bce_loss(float z, float y) { return softplus(z) - y * z; }
TASTEBUD_HD float bce_grad(float z, float y) { return sigmoid(z) - y; }

// BPR: -log sigmoid(z_pos - z_neg). The gradient with respect to z_pos; z_neg gets its negative.
TASTEBUD_HD float bpr_loss(float z_pos, float z_neg) { return softplus(z_neg - z_pos); }
TASTEBUD_HD float bpr_grad_pos(float z_pos, float z_neg) { return -sigmoid(z_neg - z_pos); }

TASTEBUD_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }

}  // namespace tastebud
