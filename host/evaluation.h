// Offline metrics: the research protocol (leave-one-out, HR@10 / NDCG@10 among 99 negatives) and
// the managed service's holdout metrics (precision, NDCG, MRR at 5/10/25 and catalog coverage),
// each beside the popularity-count baseline, each with a 95% bootstrap interval over users.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "host/split.h"

namespace tastebud::host {

// Metric name -> value. Every metric m also has "m.lo" and "m.hi", the bounds of its 95%
// percentile bootstrap interval over the evaluated users; "eval_users" counts them.
using Metrics = std::map<std::string, double>;

// True for the keys that are interval bounds ("hr@10.lo", "hr@10.hi").
bool is_interval_key(const std::string& key);

// The metrics `evaluate` reports for a protocol (intervals aside): what a metric named by the
// user must be one of.
std::vector<std::string> metric_names(EvalProtocol protocol);

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

// What an evaluation measured, user by user, before it is summarized: the per-user values of
// each metric that is a mean over users, and each user's recommended list where catalog coverage
// is measured.
struct UserValues {
  std::vector<std::string> names;  // the per-user metrics
  std::vector<double> values;      // users x names.size(), row-major
  // Each user's list (list_size items, UINT32_MAX padding) for coverage of num_items; empty: none.
  std::vector<uint32_t> lists;
  uint32_t list_size = 0;
  uint32_t num_items = 0;

  size_t users() const { return names.empty() ? 0 : values.size() / names.size(); }
  // The holdout metrics (precision, NDCG at 5/10/25, MRR@25) of one user's list.
  static std::vector<std::string> list_metric_names();
  void add_list(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant);
  // Appends the users of `more` (the same metrics) after these.
  void append(const UserValues& more);
};

struct BootstrapOptions {
  uint32_t resamples = 1000;          // for the means; coverage uses at most 200
  uint64_t seed = 2017;               // fixed: the same users resampled run after run
};

// Means (coverage: the share of the catalog in any list) with their 95% percentile intervals: every
// resample draws users with replacement, the same draws for every metric.
Metrics summarize(const UserValues& values, const BootstrapOptions& options = {});

// The paired comparison of two systems judged on the same users: for each metric, b - a with
// its 95% interval ("m.lo", "m.hi") and "m.p", the two-sided bootstrap p-value of no difference.
Metrics compare_paired(const UserValues& a, const UserValues& b, const BootstrapOptions& options = {});

// A table of metrics, one row per metric, one column per system: "0.6012 [0.5710, 0.6300]", the
// mean with its interval; a paired comparison's column also gives its p-value.
std::string metrics_table(const std::vector<std::string>& headers, const std::vector<const Metrics*>& columns);

// The evaluated users eval_users[begin, end) of a split: a rank's share of an evaluation that
// several ranks split (host/distributed_eval.h).
struct UserRange {
  size_t begin = 0;
  size_t end = SIZE_MAX;  // clamped to the split's users
};

// Per-user values of the users in `range`, in split order.
UserValues evaluate_users(const Split& split, const ScoreFn& score, uint32_t threads, UserRange range = {});
Metrics evaluate(const Split& split, const ScoreFn& score, uint32_t threads);

// The same metrics for the popularity-count model (training counts, every user the same list).
Metrics evaluate_popularity(const Split& split);

}  // namespace tastebud::host
