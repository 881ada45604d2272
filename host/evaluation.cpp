#include "host/evaluation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/topk.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

constexpr size_t kCutoffs[3] = {5, 10, 25};

Metrics evaluate_loo(const Split& split, const ScoreFn& score) {
  const size_t users = split.eval_users.size();
  const uint32_t m = split.negatives_per_user;
  double hits = 0, ndcg = 0;
#pragma omp parallel reduction(+ : hits, ndcg)
  {
    std::vector<uint32_t> items(m + 1);
    std::vector<float> scores(m + 1);
#pragma omp for schedule(dynamic, 64)
    for (int64_t k = 0; k < static_cast<int64_t>(users); ++k) {
      items[0] = split.held_out_item[k];
      std::copy_n(split.candidates.begin() + k * m, m, items.begin() + 1);
      score(split.eval_users[k], items, scores);
      const uint32_t rank = rank_against(scores[0], std::span<const float>(scores).subspan(1));
      if (rank < 10) {
        hits += 1;
        ndcg += std::log(2.0) / std::log(rank + 2.0);
      }
    }
  }
  const double n = std::max<size_t>(users, 1);
  return {{"hr@10", hits / n}, {"ndcg@10", ndcg / n}, {"eval_users", static_cast<double>(users)}};
}

// Accumulates holdout metrics of a per-user ranked list; `scores_of` fills all-item scores.
template <class ScoresOf>
Metrics evaluate_holdout_with(const Split& split, ScoresOf scores_of) {
  const TrainingSet& train = split.train;
  const size_t users = split.eval_users.size();
  double precision[3] = {0, 0, 0}, ndcg[3] = {0, 0, 0}, mrr = 0;
  std::vector<uint8_t> covered(train.num_items, 0);
#pragma omp parallel
  {
    std::vector<float> scores(train.num_items);
    std::vector<uint32_t> top;
    double p_local[3] = {0, 0, 0}, n_local[3] = {0, 0, 0}, mrr_local = 0;
    std::vector<uint32_t> covered_local;
#pragma omp for schedule(dynamic, 16)
    for (int64_t k = 0; k < static_cast<int64_t>(users); ++k) {
      const uint32_t u = split.eval_users[k];
      scores_of(u, std::span<float>(scores));
      for (uint64_t p = train.user_offsets[u]; p < train.user_offsets[u + 1]; ++p) {
        scores[train.item[p]] = -std::numeric_limits<float>::infinity();
      }
      cpu::top_k(scores, 25, top);
      const std::span<const uint32_t> truth(split.truth.data() + split.truth_offsets[k],
                                            split.truth_offsets[k + 1] - split.truth_offsets[k]);
      const RankedListMetrics r = ranked_list_metrics(top, truth);
      for (int c = 0; c < 3; ++c) {
        p_local[c] += r.precision_at[c];
        n_local[c] += r.ndcg_at[c];
      }
      mrr_local += r.reciprocal_rank_at_25;
      covered_local.insert(covered_local.end(), top.begin(), top.end());
    }
#pragma omp critical
    {
      for (int c = 0; c < 3; ++c) {
        precision[c] += p_local[c];
        ndcg[c] += n_local[c];
      }
      mrr += mrr_local;
      for (uint32_t i : covered_local) covered[i] = 1;
    }
  }
  const double n = std::max<size_t>(users, 1);
  Metrics m;
  for (int c = 0; c < 3; ++c) {
    m["precision@" + std::to_string(kCutoffs[c])] = precision[c] / n;
    m["ndcg@" + std::to_string(kCutoffs[c])] = ndcg[c] / n;
  }
  m["mrr@25"] = mrr / n;
  m["coverage"] = static_cast<double>(std::count(covered.begin(), covered.end(), 1)) /
                  std::max<uint32_t>(train.num_items, 1);
  m["eval_users"] = static_cast<double>(users);
  return m;
}

std::vector<float> popularity_scores(const TrainingSet& train) {
  std::vector<float> scores(train.num_items);
  for (uint32_t i = 0; i < train.num_items; ++i) scores[i] = static_cast<float>(train.item_counts[i]);
  return scores;
}

}  // namespace

uint32_t rank_against(float target_score, std::span<const float> candidate_scores) {
  uint32_t rank = 0;
  // A NaN target never wins: NaN >= x is false, so count it as beaten by every candidate.
  if (std::isnan(target_score)) return static_cast<uint32_t>(candidate_scores.size());
  for (float s : candidate_scores) rank += !(s < target_score);
  return rank;
}

RankedListMetrics ranked_list_metrics(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant) {
  RankedListMetrics m;
  if (relevant.empty()) return m;
  double dcg = 0, hits = 0;
  size_t c = 0;
  for (size_t pos = 0; pos < 25; ++pos) {
    if (pos < ranked.size() && std::binary_search(relevant.begin(), relevant.end(), ranked[pos])) {
      hits += 1;
      dcg += 1.0 / std::log2(pos + 2.0);
      if (m.reciprocal_rank_at_25 == 0) m.reciprocal_rank_at_25 = 1.0 / (pos + 1.0);
    }
    if (pos + 1 == kCutoffs[c]) {
      double ideal = 0;
      for (size_t q = 0; q < std::min(relevant.size(), kCutoffs[c]); ++q) ideal += 1.0 / std::log2(q + 2.0);
      m.precision_at[c] = hits / kCutoffs[c];
      m.ndcg_at[c] = dcg / ideal;
      ++c;
    }
  }
  return m;
}

Metrics evaluate(const Split& split, const ScoreFn& score, uint32_t threads) {
  switch (split.protocol) {
    case EvalProtocol::kNone: return {};
    case EvalProtocol::kLeaveOneOut:
    case EvalProtocol::kColdItems: return evaluate_loo(split, score);
    case EvalProtocol::kHoldout:
      return evaluate_holdout_with(split, [&](uint32_t u, std::span<float> out) { score(u, {}, out); });
  }
  return {};
}

Metrics evaluate_popularity(const Split& split) {
  const std::vector<float> popularity = popularity_scores(split.train);
  switch (split.protocol) {
    case EvalProtocol::kNone: return {};
    case EvalProtocol::kLeaveOneOut:
    case EvalProtocol::kColdItems:
      return evaluate_loo(split, [&](uint32_t, std::span<const uint32_t> items, std::span<float> out) {
        for (size_t k = 0; k < items.size(); ++k) out[k] = popularity[items[k]];
      });
    case EvalProtocol::kHoldout:
      return evaluate_holdout_with(split, [&](uint32_t, std::span<float> out) {
        std::copy(popularity.begin(), popularity.end(), out.begin());
      });
  }
  return {};
}

}  // namespace tastebud::host
