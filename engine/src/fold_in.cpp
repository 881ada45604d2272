#include "tastebud/engine/fold_in.h"

#include <algorithm>
#include <cmath>

#include "cpu/neumf.h"
#include "tastebud/error.h"
#include "tastebud/loss_math.h"
#include "tastebud/optim_math.h"
#include "tastebud/philox.h"

namespace tastebud {
namespace {

// One step's rows and their buffers: each positive, then its negatives.
struct FoldBatch {
  std::vector<uint32_t> items;
  std::vector<float> labels;
  std::vector<float> user_gmf, item_gmf, gmf, gmf_grad_user, gmf_grad_item, logits, dlogits;
  std::vector<std::vector<float>> acts, act_grads;
};

// A negative for positive p at step t: uniform over the catalog, never one of the positives.
uint32_t draw_negative(uint64_t seed, uint32_t step, uint64_t index, uint32_t items, std::span<const uint32_t> sorted) {
  for (uint32_t attempt = 0;; ++attempt) {
    const Philox4 w = random_words(seed, RandomStream::kFoldIn, step, index * 64 + attempt % 64);
    const uint32_t i = uniform_below(w.v[0], items);
    if (!std::binary_search(sorted.begin(), sorted.end(), i) || attempt >= 256) return i;
  }
}

}  // namespace

UserRows user_rows(const ModelParams& params, uint32_t user) {
  const ModelConfig& c = params.config;
  TB_CHECK(user < c.num_users, "fold-in: user index out of range");
  UserRows rows;
  if (c.has_gmf()) {
    const float* u = params.user_gmf.values.data() + static_cast<size_t>(user) * c.factors;
    rows.gmf.assign(u, u + c.factors);
  }
  if (c.has_mlp()) {
    const uint32_t e = c.mlp_embedding();
    const float* u = params.user_mlp.values.data() + static_cast<size_t>(user) * e;
    rows.mlp.assign(u, u + e);
  }
  return rows;
}

UserRows new_user_rows(const ModelParams& params) {
  const ModelConfig& c = params.config;
  UserRows rows;
  if (c.has_gmf()) rows.gmf.assign(c.factors, 0.0f);
  if (c.has_mlp()) rows.mlp.assign(c.mlp_embedding(), 0.0f);
  if (const int64_t k = c.constant_column(false); k >= 0) rows.gmf[k] = 1.0f;
  return rows;
}

UserRows fold_in_user(const ModelParams& params, UserRows u, std::span<const uint32_t> positives,
                      const FoldInOptions& options) {
  const ModelConfig& c = params.config;
  TB_CHECK(!c.has_metadata() && !c.has_context(), "fold-in: the model must be id-only (fold its features first)");
  if (positives.empty()) return u;
  for (uint32_t i : positives) TB_CHECK(i < c.num_items, "fold-in: item index out of range");
  std::vector<uint32_t> sorted(positives.begin(), positives.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  const NeuMFShape shape = c.neumf_shape();
  const int64_t f = shape.factors, e = c.mlp_embedding(), rows = static_cast<int64_t>(sorted.size()) * (1 + options.negatives);
  const int64_t constant = c.constant_column(false);

  cpu::DenseParams<float> p;
  for (size_t j = 0; j < c.num_dense_layers(); ++j) {
    p.weights.push_back(params.weights[j].values.data());
    p.biases.push_back(params.biases[j].values.data());
  }
  p.head_weight = params.head_weight.values.data();
  p.head_bias = params.head_bias.values.data();
  // The dense gradients backward accumulates: scratch, never applied.
  std::vector<std::vector<float>> dense_scratch;
  cpu::DenseGrads<float> g;
  for (size_t j = 0; j < c.num_dense_layers(); ++j) {
    g.weights.push_back(dense_scratch.emplace_back(params.weights[j].values.size()).data());
    g.biases.push_back(dense_scratch.emplace_back(params.biases[j].values.size()).data());
  }
  g.head_weight = dense_scratch.emplace_back(params.head_weight.values.size()).data();
  g.head_bias = dense_scratch.emplace_back(1).data();

  FoldBatch b;
  b.items.resize(rows);
  b.labels.resize(rows);
  for (auto* v : {&b.user_gmf, &b.item_gmf, &b.gmf, &b.gmf_grad_user, &b.gmf_grad_item}) v->assign(rows * f, 0.0f);
  b.logits.assign(rows, 0.0f);
  b.dlogits.assign(rows, 0.0f);
  for (int64_t width : shape.layers) {
    b.acts.emplace_back(rows * width, 0.0f);
    b.act_grads.emplace_back(rows * width, 0.0f);
  }
  cpu::ChunkRows<float> chunk;
  chunk.rows = rows;
  chunk.user_gmf = b.user_gmf.data();
  chunk.item_gmf = b.item_gmf.data();
  chunk.gmf = b.gmf.data();
  for (size_t j = 0; j < b.acts.size(); ++j) {
    chunk.acts.push_back(b.acts[j].data());
    chunk.act_grads.push_back(b.act_grads[j].data());
  }
  chunk.logits = b.logits.data();
  chunk.dlogits = b.dlogits.data();
  chunk.user_gmf_grad = b.gmf_grad_user.data();
  chunk.item_gmf_grad = b.gmf_grad_item.data();

  OptimizerParams adam;
  adam.lr = options.lr;
  std::vector<float> m_gmf(f, 0.0f), v_gmf(f, 0.0f), m_mlp(e, 0.0f), v_mlp(e, 0.0f), grad_gmf(f), grad_mlp(e);
  for (uint32_t step = 1; step <= options.steps; ++step) {
    // This step's rows: each positive, then its negatives.
    for (size_t k = 0; k < sorted.size(); ++k) {
      const int64_t r0 = static_cast<int64_t>(k) * (1 + options.negatives);
      b.items[r0] = sorted[k];
      b.labels[r0] = 1.0f;
      for (uint32_t n = 0; n < options.negatives; ++n) {
        b.items[r0 + 1 + n] = draw_negative(options.seed, step, k * options.negatives + n, c.num_items, sorted);
        b.labels[r0 + 1 + n] = 0.0f;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const size_t i = b.items[r];
      if (f > 0) {
        std::copy(u.gmf.begin(), u.gmf.end(), b.user_gmf.begin() + r * f);
        std::copy_n(params.item_gmf.values.begin() + i * f, f, b.item_gmf.begin() + r * f);
      }
      if (e > 0) {
        float* in = b.acts[0].data() + r * 2 * e;
        std::copy(u.mlp.begin(), u.mlp.end(), in);
        std::copy_n(params.item_mlp.values.begin() + i * e, e, in + e);
      }
    }
    cpu::neumf_forward(shape, p, chunk);
    for (int64_t r = 0; r < rows; ++r) b.dlogits[r] = bce_grad(b.logits[r], b.labels[r]) / static_cast<float>(rows);
    cpu::neumf_backward(shape, p, chunk, g);
    std::fill(grad_gmf.begin(), grad_gmf.end(), 0.0f);
    std::fill(grad_mlp.begin(), grad_mlp.end(), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < f; ++k) grad_gmf[k] += b.gmf_grad_user[r * f + k];
      for (int64_t k = 0; k < e; ++k) grad_mlp[k] += b.act_grads[0][r * 2 * e + k];
    }
    const float step_size = adam_step_size(adam, step);
    const OptimizerParams s = step_params(adam, step);
    for (int64_t k = 0; k < f; ++k) {
      if (k == constant) continue;  // MF: the user's column against the item biases stays at one
      apply_update(s.kind, step_size, s.beta1, s.beta2, s.eps, options.l2, u.gmf[k], m_gmf[k], v_gmf[k], grad_gmf[k]);
    }
    for (int64_t k = 0; k < e; ++k)
      apply_update(s.kind, step_size, s.beta1, s.beta2, s.eps, options.l2, u.mlp[k], m_mlp[k], v_mlp[k], grad_mlp[k]);
  }
  return u;
}

}  // namespace tastebud
