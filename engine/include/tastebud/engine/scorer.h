// Scores (user, item) pairs with a trained model on the CPU, for evaluation and batch inference.
// The first MLP layer is split into a user part and an item part; the item part is computed once
// for the whole catalog, so scoring a user against many items costs the rest of the network only.
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
  explicit Scorer(const ModelParams& params);
  // A model with metadata: scores through fold_features(params, users, items), so users and items
  // without interactions score from their metadata.
  Scorer(const ModelParams& params, const FeatureInputs& users, const FeatureInputs& items);

  uint32_t num_items() const { return params_.config.num_items; }
  uint32_t num_users() const { return params_.config.num_users; }
  const ModelParams& params() const { return params_; }

  // out[k] = score of items[k] for user. Thread-safe (per-thread scratch).
  void score(uint32_t user, std::span<const uint32_t> items, std::span<float> out) const;
  // out[i] = score of item i for user, for every item in the catalog.
  void score_all(uint32_t user, std::span<float> out) const;

 private:
  void score_block(uint32_t user, const uint32_t* items, uint32_t first_item, int64_t count,
                   float* out, std::vector<float>& scratch) const;

  void precompute();

  std::unique_ptr<const ModelParams> folded_;  // declared first: params_ may refer to it
  const ModelParams& params_;
  std::vector<float> item_first_layer_;  // [items x layers[1]]: item_mlp * W0[E.., :]
};

}  // namespace tastebud
