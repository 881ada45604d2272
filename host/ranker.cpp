#include "host/ranker.h"

#include <cmath>
#include <algorithm>
#include <exception>
#include <utility>

#include <omp.h>

#include "cpu/dense.h"
#include "host/score_batcher.h"
#include "tastebud/engine/fold_in.h"
#include "tastebud/error.h"
#include "tastebud/loss_math.h"

namespace tastebud::host {

std::span<const uint32_t> Ranker::seen_of(uint32_t user) const {
  const SeenItems& seen = model_.seen;
  if (seen.offsets.empty()) return {};
  return {seen.items.data() + seen.offsets[user], seen.items.data() + seen.offsets[user + 1]};
}

void Ranker::rank(uint32_t user, std::span<const uint32_t> items, std::span<const float> context,
                  std::span<float> out) const {
  std::vector<float> all;
  user_scores(user, context, all);
  for (size_t k = 0; k < items.size(); ++k) out[k] = std::isnan(all[items[k]]) ? 0.0f : all[items[k]];
}

std::vector<std::pair<uint32_t, float>> Ranker::weighted_latest(std::span<const uint32_t> recent,
                                                                std::span<const uint32_t> stored) const {
  std::vector<std::pair<uint32_t, float>> out;
  double w = 1;
  auto add = [&](uint32_t item) {
    if (out.size() >= model_.recent_items) return;
    for (const auto& [i, x] : out)
      if (i == item) return;
    out.emplace_back(item, static_cast<float>(w));
    w *= model_.recent_decay;
  };
  for (size_t k = recent.size(); k > 0; --k) add(recent[k - 1]);
  for (uint32_t item : stored) add(item);
  return out;
}

void Ranker::sum_item_scores(std::span<const std::pair<uint32_t, float>> weighted, std::vector<float>& s) const {
  s.assign(num_items(), NAN);
  auto add = [&](uint32_t i, float x) { s[i] = std::isnan(s[i]) ? x : s[i] + x; };
  if (const ItemNeighbors* nb = neighbor_lists()) {
    for (const auto& [h, w] : weighted)
      for (uint64_t k = nb->offsets[h]; k < nb->offsets[h + 1]; ++k) add(nb->items[k], w * nb->scores[k]);
    return;
  }
  std::vector<float> related;
  for (const auto& [h, w] : weighted) {
    item_scores(h, related);
    for (uint32_t i = 0; i < num_items(); ++i)
      if (!std::isnan(related[i])) add(i, w * related[i]);
  }
}

void Ranker::recent_scores(int64_t user, std::span<const uint32_t> recent, std::span<const float> context,
                           std::vector<float>& s) const {
  if (user >= 0) return user_scores(static_cast<uint32_t>(user), context, s);
  sum_item_scores(weighted_latest(recent), s);
}

void Ranker::user_affinity(std::span<const uint32_t>, std::vector<float>&) const {
  throw Error("this model has no notion of a user's affinity for an item");
}

namespace {

// The NeuMF family (neumf, gmf, mlp, mf): logits from the Scorer, related items by the cosine of
// the concatenated [gmf | mlp] item embeddings.
class NeuralRanker final : public Ranker {
 public:
  explicit NeuralRanker(const ModelData& model) : Ranker(model), scorer_(*model.params) {
    // The neural models keep no counts: the training positives per item stand in.
    popularity_.assign(num_items(), 0.0f);
    for (uint32_t i : model.seen.items) popularity_[i] += 1.0f;
    fallback_ = popularity_;
    const uint32_t trained = std::min<uint32_t>(model.trained_users, static_cast<uint32_t>(model.user_ids.size()));
    if (trained > 0)
      for (float& x : fallback_) x /= static_cast<float>(trained);
    build_item_vectors();
  }

  void user_scores(uint32_t user, std::span<const float> context, std::vector<float>& s) const override {
    if (context.empty()) return batcher_.score(user, s);
    s.resize(num_items());
    scorer_.score_all(user, s, context);
  }

  void item_scores(uint32_t item, std::vector<float>& s) const override {
    s.resize(num_items());
    const float* v = item_vectors_.data() + static_cast<size_t>(item) * item_dim_;
    for (uint32_t i = 0; i < num_items(); ++i) {
      const float* w = item_vectors_.data() + static_cast<size_t>(i) * item_dim_;
      float z = 0;
      for (uint32_t j = 0; j < item_dim_; ++j) z += v[j] * w[j];
      s[i] = z;
    }
  }

  void rank(uint32_t user, std::span<const uint32_t> items, std::span<const float> context,
            std::span<float> out) const override {
    scorer_.score(user, items, out, context);
    for (float& x : out) x = sigmoid(x);
  }

  // The recent items folded into the user's rows (a session starts from a new user's rows): a
  // few gradient steps on those rows alone, item side frozen (engine/fold_in.h), then scored.
  void recent_scores(int64_t user, std::span<const uint32_t> recent, std::span<const float> context,
                     std::vector<float>& s) const override {
    const ModelParams& p = scorer_.params();
    if (p.config.has_context() || p.config.has_metadata()) return Ranker::recent_scores(user, recent, context, s);
    std::vector<uint32_t> positives;
    for (const auto& [item, w] : weighted_latest(recent)) positives.push_back(item);
    const UserRows start = user >= 0 ? user_rows(p, static_cast<uint32_t>(user)) : new_user_rows(p);
    const UserRows rows = fold_in_user(p, start, positives);
    s.resize(num_items());
    scorer_.score_rows(rows.gmf, rows.mlp, s, context);
  }

  float shown(float score) const override { return sigmoid(score); }
  bool scores_are_logits() const override { return true; }
  bool scores_cold_items() const override { return model_.item_metadata; }
  bool answers_segments() const override { return true; }
  const Scorer* scorer() const override { return &scorer_; }

  void user_affinity(std::span<const uint32_t> items, std::vector<float>& affinity) const override {
    const int64_t users = static_cast<int64_t>(model_.user_ids.size());
    affinity.assign(users, 0.0f);
    // An exception may not leave an OpenMP region: the first one is kept and rethrown after it.
    std::exception_ptr failure;
#pragma omp parallel
    {
      std::vector<float> s(items.size());
#pragma omp for schedule(static, 256)
      for (int64_t u = 0; u < users; ++u) {
        try {
          scorer_.score(static_cast<uint32_t>(u), items, s);
        } catch (...) {
#pragma omp critical(tastebud_affinity_failure)
          if (!failure) failure = std::current_exception();
          continue;
        }
        double sum = 0;
        for (float x : s) sum += sigmoid(x);
        affinity[u] = static_cast<float>(sum / items.size());
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

 private:
  // Unit-length [gmf | mlp] item embeddings, for related items.
  void build_item_vectors() {
    const ModelParams& p = *model_.params;
    const uint32_t f = p.config.has_gmf() ? p.config.factors : 0, e = p.config.mlp_embedding();
    item_dim_ = f + e;
    item_vectors_.resize(static_cast<size_t>(num_items()) * item_dim_);
    for (uint32_t i = 0; i < num_items(); ++i) {
      float* v = item_vectors_.data() + static_cast<size_t>(i) * item_dim_;
      for (uint32_t j = 0; j < f; ++j) v[j] = p.item_gmf.values[static_cast<size_t>(i) * f + j];
      for (uint32_t j = 0; j < e; ++j) v[f + j] = p.item_mlp.values[static_cast<size_t>(i) * e + j];
      double norm = 0;
      for (uint32_t j = 0; j < item_dim_; ++j) norm += double(v[j]) * v[j];
      const float scale = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
      for (uint32_t j = 0; j < item_dim_; ++j) v[j] *= scale;
    }
  }

  Scorer scorer_;
  mutable ScoreBatcher batcher_{scorer_};  // users asking at once (serve's connections) share a pass
  std::vector<float> item_vectors_;
  uint32_t item_dim_ = 0;
};

// Recipes: their popularity is the fallback's order and score.
class RecipeRanker : public Ranker {
 protected:
  explicit RecipeRanker(const ModelData& model) : Ranker(model) {
    popularity_ = model.recipe.popularity;
    fallback_ = popularity_;
  }
};

// popularity and trending: one score per item, whoever asks.
class ItemScoresRanker final : public RecipeRanker {
 public:
  explicit ItemScoresRanker(const ModelData& model) : RecipeRanker(model) {}
  void user_scores(uint32_t, std::span<const float>, std::vector<float>& s) const override { s = model_.recipe.item_scores; }
  void item_scores(uint32_t, std::vector<float>& s) const override { s = model_.recipe.item_scores; }
  void recent_scores(int64_t, std::span<const uint32_t>, std::span<const float>, std::vector<float>& s) const override {
    s = model_.recipe.item_scores;
  }
  void rank(uint32_t, std::span<const uint32_t> items, std::span<const float>, std::span<float> out) const override {
    for (size_t k = 0; k < items.size(); ++k) out[k] = model_.recipe.item_scores[items[k]];
  }
};

// sims and transitions: each item's neighbour list (NaN for the items not on it).
class NeighborRanker : public RecipeRanker {
 public:
  void item_scores(uint32_t item, std::vector<float>& s) const override {
    s.assign(num_items(), NAN);
    const ItemNeighbors& nb = model_.recipe.neighbors;
    for (uint64_t k = nb.offsets[item]; k < nb.offsets[item + 1]; ++k) s[nb.items[k]] = nb.scores[k];
  }
  const ItemNeighbors* neighbor_lists() const override { return &model_.recipe.neighbors; }

 protected:
  explicit NeighborRanker(const ModelData& model) : RecipeRanker(model) {}
};

// sims: a user's relevance for an item is its summed similarity to the user's history.
class SimsRanker final : public NeighborRanker {
 public:
  explicit SimsRanker(const ModelData& model) : NeighborRanker(model) { build_item_users(); }

  void user_scores(uint32_t user, std::span<const float>, std::vector<float>& s) const override {
    history_scores(seen_of(user), s);
  }

  // The history is the user's seen items and the recent ones.
  void recent_scores(int64_t user, std::span<const uint32_t> recent, std::span<const float>,
                     std::vector<float>& s) const override {
    std::vector<uint32_t> history(recent.begin(), recent.end());
    if (user >= 0) {
      const auto seen = seen_of(static_cast<uint32_t>(user));
      history.insert(history.end(), seen.begin(), seen.end());
    }
    std::sort(history.begin(), history.end());
    history.erase(std::unique(history.begin(), history.end()), history.end());
    history_scores(history, s);
  }

  bool answers_segments() const override { return true; }
  // A user's affinity for item i is the summed similarity of i to the user's history.
  void user_affinity(std::span<const uint32_t> items, std::vector<float>& affinity) const override {
    affinity.assign(model_.user_ids.size(), 0.0f);
    const ItemNeighbors& nb = model_.recipe.neighbors;
    for (uint32_t i : items) {
      for (uint64_t k = nb.offsets[i]; k < nb.offsets[i + 1]; ++k) {
        const uint32_t j = nb.items[k];
        for (uint64_t r = item_users_.offsets[j]; r < item_users_.offsets[j + 1]; ++r)
          affinity[item_users_.items[r]] += nb.scores[k] / items.size();
      }
    }
  }

 private:
  // Summed similarity of each item to the history's items, in the history's order.
  void history_scores(std::span<const uint32_t> history, std::vector<float>& s) const {
    std::vector<std::pair<uint32_t, float>> unweighted;
    for (uint32_t h : history) unweighted.emplace_back(h, 1.0f);
    sum_item_scores(unweighted, s);
  }

  // seen transposed: item -> users.
  void build_item_users() {
    item_users_.offsets.assign(num_items() + 1, 0);
    for (uint32_t i : model_.seen.items) ++item_users_.offsets[i + 1];
    for (uint32_t i = 0; i < num_items(); ++i) item_users_.offsets[i + 1] += item_users_.offsets[i];
    item_users_.items.resize(model_.seen.items.size());
    std::vector<uint64_t> fill(item_users_.offsets.begin(), item_users_.offsets.end() - 1);
    for (uint32_t u = 0; u < model_.user_ids.size(); ++u)
      for (uint32_t i : seen_of(u)) item_users_.items[fill[i]++] = u;
  }

  SeenItems item_users_;
};

// transitions: what followed the user's latest items (host/recipes.h, transition_scores).
class TransitionsRanker final : public NeighborRanker {
 public:
  explicit TransitionsRanker(const ModelData& model) : NeighborRanker(model) {}
  void user_scores(uint32_t user, std::span<const float>, std::vector<float>& s) const override {
    transition_scores(model_.recipe.neighbors, model_.recipe.latest, user, s);
  }
  // The recent items go first in the user's latest items.
  void recent_scores(int64_t user, std::span<const uint32_t> recent, std::span<const float>,
                     std::vector<float>& s) const override {
    const ItemNeighbors& latest = model_.recipe.latest;
    std::span<const uint32_t> stored;
    if (user >= 0 && !latest.offsets.empty())
      stored = std::span(latest.items).subspan(latest.offsets[user], latest.offsets[user + 1] - latest.offsets[user]);
    sum_item_scores(weighted_latest(recent, stored), s);
  }
  bool ties_by_popularity() const override { return true; }
};

// sasrec: the user's latest items (recipe.latest, oldest first) read by the sequence model; a
// query's recent items appended to them. Related items by the cosine of the item rows.
class SequenceRanker final : public Ranker {
 public:
  // The fallback as the neural models give it: ordered by the users who interacted with each item,
  // shown as their share, a probability like its scores.
  explicit SequenceRanker(const ModelData& model) : Ranker(model), encoder_(*model.sequence) {
    popularity_.assign(num_items(), 0.0f);
    for (uint32_t i : model.seen.items) popularity_[i] += 1.0f;
    fallback_ = popularity_;
    if (!model.user_ids.empty())
      for (float& x : fallback_) x /= static_cast<float>(model.user_ids.size());
    build_item_vectors();
  }

  void user_scores(uint32_t user, std::span<const float>, std::vector<float>& s) const override {
    score_sequence(latest_of(user), {}, s);
  }

  void recent_scores(int64_t user, std::span<const uint32_t> recent, std::span<const float>,
                     std::vector<float>& s) const override {
    std::vector<uint32_t> sequence;
    if (user >= 0) {
      const auto stored = latest_of(static_cast<uint32_t>(user));
      sequence.assign(stored.begin(), stored.end());
    }
    sequence.insert(sequence.end(), recent.begin(), recent.end());
    score_sequence(sequence, {}, s);
  }

  void rank(uint32_t user, std::span<const uint32_t> items, std::span<const float>, std::span<float> out) const override {
    std::vector<float> s;
    score_sequence(latest_of(user), items, s);
    for (size_t k = 0; k < items.size(); ++k) out[k] = std::isnan(s[k]) ? 0.0f : sigmoid(s[k]);
  }

  void item_scores(uint32_t item, std::vector<float>& s) const override {
    const uint32_t d = encoder_.hidden();
    s.resize(num_items());
    // The cosines: the normalized rows against the item's.
    cpu::row_dots(item_vectors_.data(), num_items(), d, item_vectors_.data() + static_cast<size_t>(item) * d, s.data());
  }

  float shown(float score) const override { return sigmoid(score); }
  bool scores_are_logits() const override { return true; }
  bool scores_cold_items() const override { return false; }  // id-only item rows
  bool answers_segments() const override { return true; }

  void user_affinity(std::span<const uint32_t> items, std::vector<float>& affinity) const override {
    const int64_t users = static_cast<int64_t>(model_.user_ids.size());
    affinity.assign(users, 0.0f);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t u = 0; u < users; ++u) {
      std::vector<float> s;
      score_sequence(latest_of(static_cast<uint32_t>(u)), items, s);
      double sum = 0;
      for (float x : s) sum += std::isnan(x) ? 0.0 : sigmoid(x);
      affinity[u] = static_cast<float>(sum / items.size());
    }
  }

 private:
  std::span<const uint32_t> latest_of(uint32_t user) const {
    const ItemNeighbors& latest = model_.recipe.latest;
    if (latest.offsets.empty()) return {};
    return std::span(latest.items).subspan(latest.offsets[user], latest.offsets[user + 1] - latest.offsets[user]);
  }

  // items empty: the whole catalog. NaN for every item when there is no sequence (the fallback answers).
  void score_sequence(std::span<const uint32_t> sequence, std::span<const uint32_t> items, std::vector<float>& s) const {
    s.resize(items.empty() ? num_items() : items.size());
    if (sequence.empty()) return std::fill(s.begin(), s.end(), NAN);
    encoder_.score_sequence(sequence, items, s);
  }

  void build_item_vectors() {
    const SequenceParams& p = encoder_.params();
    const uint32_t d = p.config.hidden;
    item_vectors_.assign(p.values.begin(), p.values.begin() + static_cast<int64_t>(size_t{num_items()} * d));
    for (uint32_t i = 0; i < num_items(); ++i) {
      float* v = item_vectors_.data() + static_cast<size_t>(i) * d;
      double norm = 0;
      for (uint32_t j = 0; j < d; ++j) norm += double(v[j]) * v[j];
      const float scale = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
      for (uint32_t j = 0; j < d; ++j) v[j] *= scale;
    }
  }

  SequenceEncoder encoder_;
  std::vector<float> item_vectors_;
};

}  // namespace

std::unique_ptr<Ranker> make_ranker(const ModelData& model) {
  switch (model.kind) {
    case ModelType::kNeuMF:
    case ModelType::kGMF:
    case ModelType::kMLP:
    case ModelType::kMF:
      TB_CHECK(model.params.has_value(), "a neural model without parameters");
      return std::make_unique<NeuralRanker>(model);
    case ModelType::kPopularity:
    case ModelType::kTrending: return std::make_unique<ItemScoresRanker>(model);
    case ModelType::kSims: return std::make_unique<SimsRanker>(model);
    case ModelType::kTransitions: return std::make_unique<TransitionsRanker>(model);
    case ModelType::kSASRec:
      TB_CHECK(model.sequence.has_value(), "a sequence model without parameters");
      return std::make_unique<SequenceRanker>(model);
  }
  throw Error("unknown model type");
}

}  // namespace tastebud::host
