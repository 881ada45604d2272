// Scores users against items with a trained model on the CPU: evaluation, batch inference and
// segments all go through this one class.
//
// Arranged for throughput: the item half of the first MLP layer is computed once per catalog and
// the user half once per user, and the rest of the network runs over blocks of items with the
// output width of each layer fixed at compile time, so that the per-item accumulators stay in
// vector registers (Eigen's general GEMM on [block x 32] x [32 x 16] spends most of its time
// packing). tests/test_engine.cpp holds it against the training forward pass.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tastebud/engine/features.h"
#include "tastebud/engine/model.h"

namespace tastebud {

class Scorer {
 public:
  // params must be an id-only model (throws for one with metadata: use the other constructor).
  // Keeps a reference: params must outlive the scorer.
  explicit Scorer(const ModelParams& params);
  // A model with metadata: scores through fold_features(params, users, items), so users and items
  // without interactions score from their metadata.
  Scorer(const ModelParams& params, const FeatureInputs& users, const FeatureInputs& items);

  uint32_t num_items() const { return params_.config.num_items; }
  uint32_t num_users() const { return params_.config.num_users; }
  const ModelParams& params() const { return params_; }

  // A model with context (ModelConfig::has_context) takes each user's context vector
  // (context_vector in features.h, mlp_embedding() floats) in `context`; empty: no context.

  // out[i] = logit of item i for user, every item of the catalog. Thread-safe.
  void score_all(uint32_t user, std::span<float> out, std::span<const float> context = {}) const;
  // out[u * num_items() + i] = logit of item i for users[u]. Scoring a group of users together
  // reads each block of the catalog once for the group: the fast path of batch jobs. contexts:
  // empty, or users.size() context vectors back to back. Thread-safe.
  void score_users(std::span<const uint32_t> users, std::span<float> out,
                   std::span<const float> contexts = {}) const;
  // out[i] = logit of item i for a user given by its rows instead of its index (fold_in.h: a
  // session, or a user's rows moved by events the model has not trained on). Thread-safe.
  void score_rows(std::span<const float> user_gmf, std::span<const float> user_mlp, std::span<float> out,
                  std::span<const float> context = {}) const;
  // out[k] = logit of items[k] for user. Thread-safe.
  void score(uint32_t user, std::span<const uint32_t> items, std::span<float> out,
             std::span<const float> context = {}) const;
  // out[i] = the GMF branch's part of the logit, (user ⊙ head) · item: the cheap first stage of
  // two-stage retrieval. Requires a GMF branch.
  void gmf_scores(uint32_t user, std::span<float> out) const;

 private:
  void precompute();
  void score_block(const float* user_part, const float* user_head, const uint32_t* items,
                   uint32_t first_item, int64_t count, float* out, float* scratch) const;
  void prepare_user(uint32_t user, const float* context, float* user_part, float* user_head) const;
  void prepare_rows(const float* user_gmf, const float* user_mlp, const float* context, float* user_part,
                    float* user_head) const;
  size_t scratch_floats() const;

  std::unique_ptr<const ModelParams> folded_;  // declared first: params_ may refer to it
  const ModelParams& params_;
  std::vector<float> item_first_layer_;  // [items x layers[1]]: item_mlp * W0[E.., :]
};

}  // namespace tastebud
