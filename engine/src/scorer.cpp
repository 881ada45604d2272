#include "tastebud/engine/scorer.h"

#include <algorithm>

#include "cpu/dense.h"
#include "tastebud/error.h"
#include "tastebud/loss_math.h"

namespace tastebud {
namespace {
constexpr int64_t kBlock = 512;
}

Scorer::Scorer(const ModelParams& params) : params_(params) {
  TB_CHECK(!params.config.has_metadata(),
           "scorer: this model uses metadata; score it with the users' and items' feature inputs");
  precompute();
}

Scorer::Scorer(const ModelParams& params, const FeatureInputs& users, const FeatureInputs& items)
    : folded_(std::make_unique<const ModelParams>(fold_features(params, users, items))), params_(*folded_) {
  precompute();
}

void Scorer::precompute() {
  const ModelParams& params = params_;
  const ModelConfig& c = params.config;
  if (!c.has_mlp() || c.num_dense_layers() == 0) return;
  const int64_t e = c.mlp_embedding(), l1 = c.layers[1];
  item_first_layer_.resize(static_cast<size_t>(c.num_items) * l1);
  cpu::ConstMatrixMap<float> items(params.item_mlp.values.data(), c.num_items, e);
  cpu::ConstMatrixMap<float> w_item(params.weights[0].values.data() + e * l1, e, l1);
  cpu::MatrixMap<float> out(item_first_layer_.data(), c.num_items, l1);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < static_cast<int64_t>(c.num_items); b += 4096) {
    const int64_t n = std::min<int64_t>(4096, c.num_items - b);
    out.middleRows(b, n).noalias() = items.middleRows(b, n) * w_item;
  }
}

void Scorer::score_block(uint32_t user, const uint32_t* items, uint32_t first_item, int64_t count,
                         float* out, std::vector<float>& scratch) const {
  const ModelConfig& c = params_.config;
  const int64_t f = c.has_gmf() ? c.factors : 0;
  const int64_t h = c.mlp_output();
  const int64_t layers = static_cast<int64_t>(c.num_dense_layers());
  auto item_at = [&](int64_t k) -> uint32_t { return items ? items[k] : first_item + static_cast<uint32_t>(k); };
  const float* head = params_.head_weight.values.data();
  // GMF: (user ⊙ item) · w = item · (user ⊙ w).
  for (int64_t k = 0; k < count; ++k) out[k] = params_.head_bias.values[0];
  if (f > 0) {
    float user_head[512];
    TB_CHECK(f <= 512, "scorer: more than 512 factors");
    const float* u = params_.user_gmf.values.data() + static_cast<int64_t>(user) * f;
    for (int64_t j = 0; j < f; ++j) user_head[j] = u[j] * head[j];
    for (int64_t k = 0; k < count; ++k) {
      const float* v = params_.item_gmf.values.data() + static_cast<int64_t>(item_at(k)) * f;
      float z = 0.0f;
      for (int64_t j = 0; j < f; ++j) z += v[j] * user_head[j];
      out[k] += z;
    }
  }
  if (h == 0) return;
  const int64_t e = c.mlp_embedding();
  const int64_t l1 = c.layers[1];
  size_t widest = 0;
  for (uint32_t w : c.layers) widest = std::max<size_t>(widest, w);
  scratch.resize(2 * kBlock * widest + l1);
  float* user_part = scratch.data();
  float* a = user_part + l1;
  float* b = a + kBlock * widest;
  // First layer: user part (once) + item part (precomputed) + bias, then ReLU.
  {
    cpu::ConstMatrixMap<float> u(params_.user_mlp.values.data() + static_cast<int64_t>(user) * e, 1, e);
    cpu::ConstMatrixMap<float> w_user(params_.weights[0].values.data(), e, l1);
    cpu::MatrixMap<float> up(user_part, 1, l1);
    up.noalias() = u * w_user;
    const float* bias = params_.biases[0].values.data();
    for (int64_t j = 0; j < l1; ++j) user_part[j] += bias[j];
  }
  for (int64_t k = 0; k < count; ++k) {
    const float* q = item_first_layer_.data() + static_cast<int64_t>(item_at(k)) * l1;
    for (int64_t j = 0; j < l1; ++j) a[k * l1 + j] = relu(q[j] + user_part[j]);
  }
  for (int64_t j = 1; j < layers; ++j) {
    cpu::dense_forward<float>(a, count, c.layers[j], params_.weights[j].values.data(),
                              params_.biases[j].values.data(), c.layers[j + 1], true, b);
    std::swap(a, b);
  }
  for (int64_t k = 0; k < count; ++k) {
    float z = 0.0f;
    for (int64_t j = 0; j < h; ++j) z += a[k * h + j] * head[f + j];
    out[k] += z;
  }
}

void Scorer::score(uint32_t user, std::span<const uint32_t> items, std::span<float> out) const {
  TB_CHECK(out.size() == items.size(), "scorer: output size differs from the item count");
  thread_local std::vector<float> scratch;
  for (size_t k = 0; k < items.size(); k += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, items.size() - k);
    score_block(user, items.data() + k, 0, n, out.data() + k, scratch);
  }
}

void Scorer::score_all(uint32_t user, std::span<float> out) const {
  TB_CHECK(out.size() == num_items(), "scorer: output size differs from the catalog size");
  thread_local std::vector<float> scratch;
  for (uint32_t first = 0; first < num_items(); first += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, num_items() - first);
    score_block(user, nullptr, first, n, out.data() + first, scratch);
  }
}

}  // namespace tastebud
