// Everything that answers is a Ranker: the neural models, the recipes with fixed item scores
// (popularity, trending), and the neighbour-list recipes (sims, transitions). One is chosen when
// a model is loaded (make_ranker, the one switch over the model's type); the query loop in
// host/inference.cpp asks it and never the model's kind.
//
// Scores are on the ranker's own scale (logits for the neural models; NaN: the model relates
// nothing); shown() turns one into what an answer prints.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "host/model_data.h"
#include "tastebud/engine/scorer.h"

namespace tastebud::host {

class Ranker {
 public:
  virtual ~Ranker() = default;

  // Relevance of every item for a known user; `context` is the query's context vector (empty: none).
  virtual void user_scores(uint32_t user, std::span<const float> context, std::vector<float>& s) const = 0;
  // Relevance of every item to a known item.
  virtual void item_scores(uint32_t item, std::vector<float>& s) const = 0;
  // Relevance of every item for someone whose latest items are `recent` (oldest first; events the
  // model has not trained on): a known user (`user` >= 0) or a session the model never saw (-1).
  // The newest ModelData::recent_items count, the newest weighted 1, the next recent_decay, ...
  // The neural models fold the items into the user's rows (a session from a new user's rows,
  // engine/fold_in.h) and score those; the recipes that learn from histories put the items into
  // the history; popularity and trending do not change.
  virtual void recent_scores(int64_t user, std::span<const uint32_t> recent, std::span<const float> context,
                             std::vector<float>& s) const;
  // Scores of some items for a known user, as an itemList ranking shows them (0 where unrelated).
  virtual void rank(uint32_t user, std::span<const uint32_t> items, std::span<const float> context,
                    std::span<float> out) const;
  // A score as an answer shows it.
  virtual float shown(float score) const { return score; }
  // Whether the scores are logits (the neural models, sasrec), whose share of the catalog is their
  // softmax; otherwise they are counts or sums >= 0, whose share is score / sum.
  virtual bool scores_are_logits() const { return false; }
  // Whether the score of an item without training interactions (popularity() 0) says anything:
  // the recipes' scores are what their tables hold (NaN or a count) and a metadata model scores
  // such an item through its metadata rows, but an id-only model's row for it never saw a positive
  // (its initialisation, or what negative sampling pushed down): noise, which exploration ignores.
  virtual bool scores_cold_items() const { return true; }

  // Per item, what the popularity fallback orders by, and the score it shows on the model's own
  // scale (neural models: the share of training users who interacted with the item, a probability
  // as their scores are; recipes: the recipe's popularity).
  const std::vector<float>& popularity() const { return popularity_; }
  const std::vector<float>& fallback_scores() const { return fallback_; }

  // The neighbour-list recipes answer an item with its list in order, and fill a short list with
  // popular items; nullptr for every other ranker.
  virtual const ItemNeighbors* neighbor_lists() const { return nullptr; }
  // Ranking ties go to the more popular item (transitions: the items the user's latest items never
  // led to follow by popularity); otherwise ties keep the list's order.
  virtual bool ties_by_popularity() const { return false; }

  // batch-segment: the mean affinity of every user for `items`. False where the model has no
  // notion of a user's affinity (popularity, trending, transitions).
  virtual bool answers_segments() const { return false; }
  virtual void user_affinity(std::span<const uint32_t> items, std::vector<float>& affinity) const;

  // The neural models' scorer, for what only they do (two-stage retrieval, the GPU, contexts).
  virtual const Scorer* scorer() const { return nullptr; }

 protected:
  explicit Ranker(const ModelData& model) : model_(model) {}
  uint32_t num_items() const { return static_cast<uint32_t>(model_.item_ids.size()); }
  std::span<const uint32_t> seen_of(uint32_t user) const;
  // Σ w · item_scores(item) over `weighted` (NaN where no item relates): through the neighbour
  // lists directly where the ranker has them.
  void sum_item_scores(std::span<const std::pair<uint32_t, float>> weighted, std::vector<float>& s) const;
  // `recent` newest first, each item once, at most recent_items of them, with their weights; a
  // known user's stored latest items (`stored`, newest first) follow the recent ones.
  std::vector<std::pair<uint32_t, float>> weighted_latest(std::span<const uint32_t> recent,
                                                          std::span<const uint32_t> stored = {}) const;

  const ModelData& model_;
  std::vector<float> popularity_, fallback_;
};

// `model` must outlive the ranker.
std::unique_ptr<Ranker> make_ranker(const ModelData& model);

}  // namespace tastebud::host
