// Scores one user against the whole catalog (or a candidate list) for batch inference.
//
// The same NeuMF logit as tastebud::Scorer (tests hold the two side by side), arranged for
// throughput: the item half of the first MLP layer is computed once per catalog, the user half once
// per user, and the rest of the network runs over blocks of items with the output width of each
// layer fixed at compile time, so that the per-item accumulators stay in vector registers. Eigen's
// general GEMM on [block x 32] x [32 x 16] spends most of its time packing; this path is several
// times faster on the paper's model (layers 64,32,16,8).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tastebud/engine/model.h"

namespace tastebud::host {

class CatalogScorer {
 public:
  // Keeps a reference to params; they must outlive the scorer.
  explicit CatalogScorer(const ModelParams& params);

  uint32_t num_items() const { return params_.config.num_items; }
  uint32_t num_users() const { return params_.config.num_users; }
  const ModelParams& params() const { return params_; }

  // out[i] = logit of item i for user, every item of the catalog. Thread-safe.
  void score_all(uint32_t user, std::span<float> out) const;
  // out[u * num_items() + i] = logit of item i for users[u]. Scoring a group of users together
  // reads each block of the catalog once for the group: the fast path of batch jobs. Thread-safe.
  void score_users(std::span<const uint32_t> users, std::span<float> out) const;
  // out[k] = logit of items[k] for user. Thread-safe.
  void score(uint32_t user, std::span<const uint32_t> items, std::span<float> out) const;
  // out[i] = the GMF branch's part of the logit, (user ⊙ head) · item: the cheap first stage of
  // two-stage retrieval. Requires a GMF branch.
  void gmf_scores(uint32_t user, std::span<float> out) const;

 private:
  void score_block(const float* user_part, const float* user_head, const uint32_t* items,
                   uint32_t first_item, int64_t count, float* out, float* scratch) const;
  void prepare_user(uint32_t user, float* user_part, float* user_head) const;
  size_t scratch_floats() const;

  const ModelParams& params_;
  std::vector<float> item_first_layer_;  // [items x layers[1]]: item_mlp * W0[E.., :]
};

}  // namespace tastebud::host
