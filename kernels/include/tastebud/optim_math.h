// Per-parameter optimizer updates, shared by both backends. The gradient passed in already holds
// the L2 term. Sparse (lazy) updates call the same functions on the rows a batch touched only.
#pragma once

#include <cmath>
#include <cstdint>

#include "tastebud/hd.h"

namespace tastebud {

enum class OptimizerKind : uint32_t { kAdam = 0, kAdagrad = 1, kSgd = 2 };

struct OptimizerParams {
  OptimizerKind kind = OptimizerKind::kAdam;
  float lr = 0.001f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float l2 = 0.0f;
  float adagrad_init = 0.1f;  // initial accumulator, as in Duchi et al. and TensorFlow
};

// Adam's step size with the bias correction of step t (1-based), computed once per batch.
inline float adam_step_size(const OptimizerParams& p, uint64_t t) {
  const double c1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(t));
  const double c2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(t));
  return static_cast<float>(p.lr * std::sqrt(c2) / c1);
}

// The settings of step t (1-based) as apply_update takes them beside adam_step_size: Adam's epsilon
// scaled by sqrt(1 - beta2^t), so that step_size * m / (sqrt(v) + eps_t) is Kingma and Ba's update
// as PyTorch's Adam and SparseAdam compute it, lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps):
// epsilon is added to the bias-corrected sqrt(v). Added to the raw sqrt(v) instead, it is up to
// 1 / sqrt(1 - beta2) = 32 times larger in the first steps, where it swamps the small gradients of
// embedding rows and the model learns slower (issue 13). Other optimizers: p itself.
inline OptimizerParams step_params(OptimizerParams p, uint64_t t) {
  if (p.kind == OptimizerKind::kAdam) {
    p.eps = static_cast<float>(p.eps * std::sqrt(1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(t))));
  }
  return p;
}

// --l2 penalizes the embedding and feature tables only, the per-example penalty on latent factors
// of matrix factorisation: the dense layers and the head are updated without it (dense_params),
// which keeps a penalty from shrinking the weights a model needs to zero (a constant model).
inline OptimizerParams dense_params(OptimizerParams p) {
  p.l2 = 0.0f;
  return p;
}

// L2 of the lazily updated rows of a table: --l2 counts once per batch row that used the row and is
// scaled like that row's loss (1 / samples), so a row is regularized in proportion to how often it
// is trained, the per-example penalty of matrix factorisation (Rendle et al.) and implicit, not a
// full-strength decay at every step, which drowns rare rows' gradients and collapses the model.
// starts: the row groups' offsets (group k used by batch rows starts[k] .. starts[k + 1]).
struct RowL2 {
  const uint32_t* starts = nullptr;
  float scale = 0.0f;  // the loss scale, 1 / samples
};

// The L2 coefficient of touched row k.
TASTEBUD_HD float row_l2(float l2, const RowL2& r, int64_t k) {
  return l2 * r.scale * static_cast<float>(r.starts[k + 1] - r.starts[k]);
}

// One parameter's update. state0/state1: Adam's m and v, Adagrad's accumulator in state0.
// step_size: adam_step_size for Adam, lr otherwise; eps: step_params' for Adam.
TASTEBUD_HD void apply_update(OptimizerKind kind, float step_size, float beta1, float beta2,
                              float eps, float l2, float& w, float& state0, float& state1,
                              float grad) {
  const float g = grad + l2 * w;
  switch (kind) {
    case OptimizerKind::kAdam:
      state0 = beta1 * state0 + (1.0f - beta1) * g;
      state1 = beta2 * state1 + (1.0f - beta2) * g * g;
      w -= step_size * state0 / (sqrtf(state1) + eps);
      break;
    case OptimizerKind::kAdagrad:
      state0 += g * g;
      w -= step_size * g / (sqrtf(state0) + eps);
      break;
    case OptimizerKind::kSgd:
      w -= step_size * g;
      break;
  }
}

// One element of a lazily stepped row whose gradient is summed in place: stepped unless its row is
// frozen, then the gradient cleared for the next batch's sums (the sequence trainers' item and
// metadata rows, on both backends).
TASTEBUD_HD void step_and_clear(OptimizerKind kind, float step_size, float beta1, float beta2, float eps, float l2,
                                bool frozen, float& w, float& state0, float& state1, float& grad) {
  if (!frozen) apply_update(kind, step_size, beta1, beta2, eps, l2, w, state0, state1, grad);
  grad = 0.0f;
}

}  // namespace tastebud
