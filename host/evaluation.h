// Offline metrics: the research protocol (leave-one-out, HR@10 / NDCG@10 among 99 negatives) and
// the managed service's holdout metrics (precision, NDCG, MRR at 5/10/25 and catalog coverage),
// each beside the popularity-count baseline.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "host/split.h"

namespace tastebud::host {

using Metrics = std::map<std::string, double>;

// Scores items for one user: score_items(user, items, out); items empty means the whole catalog.
using ScoreFn = std::function<void(uint32_t, std::span<const uint32_t>, std::span<float>)>;

// Rank of the target among candidates: how many candidates score at least as high (ties count
// against the model, so a constant scorer ranks last).
uint32_t rank_against(float target_score, std::span<const float> candidate_scores);

// Metrics of one ranked list against a set of relevant items (sorted).
struct RankedListMetrics {
  double precision_at[3] = {0, 0, 0};  // @5, @10, @25
  double ndcg_at[3] = {0, 0, 0};
  double reciprocal_rank_at_25 = 0;
};
RankedListMetrics ranked_list_metrics(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant);

Metrics evaluate(const Split& split, const ScoreFn& score, uint32_t threads);

// The same metrics for the popularity-count model (training counts, every user the same list).
Metrics evaluate_popularity(const Split& split);

}  // namespace tastebud::host
