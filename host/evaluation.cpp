#include "host/evaluation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>

#include <fmt/format.h>

#include "cpu/topk.h"
#include "tastebud/error.h"
#include "tastebud/philox.h"

namespace tastebud::host {
namespace {

constexpr size_t kCutoffs[3] = {5, 10, 25};
constexpr uint32_t kListSize = 25;

UserValues evaluate_loo(const Split& split, const ScoreFn& score, UserRange range) {
  const size_t first = range.begin, users = range.end - range.begin;
  const uint32_t m = split.negatives_per_user;
  UserValues out;
  out.names = {"hr@10", "ndcg@10"};
  out.values.assign(users * 2, 0.0);
#pragma omp parallel
  {
    std::vector<uint32_t> items(m + 1);
    std::vector<float> scores(m + 1);
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = 0; i < static_cast<int64_t>(users); ++i) {
      const size_t k = first + static_cast<size_t>(i);
      items[0] = split.held_out_item[k];
      std::copy_n(split.candidates.begin() + k * m, m, items.begin() + 1);
      score(split.eval_users[k], items, scores);
      const uint32_t rank = rank_against(scores[0], std::span<const float>(scores).subspan(1));
      if (rank < 10) {
        out.values[2 * i] = 1.0;
        out.values[2 * i + 1] = std::log(2.0) / std::log(rank + 2.0);
      }
    }
  }
  return out;
}

// Per-user holdout metrics of each user's top 25, the user's training items left out;
// `scores_of` fills all-item scores.
template <class ScoresOf>
UserValues evaluate_holdout_with(const Split& split, ScoresOf scores_of, UserRange range) {
  const TrainingSet& train = split.train;
  const size_t first = range.begin, users = range.end - range.begin;
  UserValues out;
  out.names = UserValues::list_metric_names();
  const size_t columns = out.names.size();
  out.values.assign(users * columns, 0.0);
  out.list_size = kListSize;
  out.num_items = train.num_items;
  out.lists.assign(users * kListSize, UINT32_MAX);
#pragma omp parallel
  {
    std::vector<float> scores(train.num_items);
    std::vector<uint32_t> top;
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < static_cast<int64_t>(users); ++i) {
      const size_t k = first + static_cast<size_t>(i);
      const uint32_t u = split.eval_users[k];
      scores_of(u, std::span<float>(scores));
      for (uint64_t p = train.user_offsets[u]; p < train.user_offsets[u + 1]; ++p) {
        scores[train.item[p]] = -std::numeric_limits<float>::infinity();
      }
      cpu::top_k(scores, kListSize, top);
      const std::span<const uint32_t> truth(split.truth.data() + split.truth_offsets[k],
                                            split.truth_offsets[k + 1] - split.truth_offsets[k]);
      const RankedListMetrics r = ranked_list_metrics(top, truth);
      double* row = out.values.data() + i * columns;
      for (int c = 0; c < 3; ++c) {
        row[c] = r.precision_at[c];
        row[3 + c] = r.ndcg_at[c];
      }
      row[6] = r.reciprocal_rank_at_25;
      std::copy(top.begin(), top.end(), out.lists.begin() + i * kListSize);
    }
  }
  return out;
}

// Each resample's users: draw j of resample r is user uniform_below(word) of n.
uint32_t resampled_user(const BootstrapOptions& o, uint32_t resample, uint64_t draw, uint32_t n) {
  const Philox4 w = random_words(o.seed, RandomStream::kBootstrap, resample, draw / 4);
  return uniform_below(w.v[draw % 4], n);
}

// The 2.5th and 97.5th percentiles of the resampled statistics.
std::pair<double, double> percentile_interval(std::vector<double> stats) {
  if (stats.empty()) return {NAN, NAN};
  std::sort(stats.begin(), stats.end());
  auto at = [&](double q) { return stats[static_cast<size_t>(std::floor(q * (stats.size() - 1) + 0.5))]; };
  return {at(0.025), at(0.975)};
}

// Resampled means of every column: stats[c][r], the same draws for every column. `value_of`
// gives the per-user values to average (the values, or the differences of two systems).
template <class ValueOf>
std::vector<std::vector<double>> resampled_means(size_t users, size_t columns, const BootstrapOptions& o,
                                                 ValueOf value_of) {
  std::vector<std::vector<double>> stats(columns, std::vector<double>(o.resamples, 0.0));
  const uint32_t n = static_cast<uint32_t>(users);
  if (n == 0) return stats;
#pragma omp parallel
  {
    std::vector<double> sums(columns);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < static_cast<int64_t>(o.resamples); ++r) {
      std::fill(sums.begin(), sums.end(), 0.0);
      for (uint64_t j = 0; j < n; ++j) {
        const uint32_t u = resampled_user(o, static_cast<uint32_t>(r), j, n);
        for (size_t c = 0; c < columns; ++c) sums[c] += value_of(u, c);
      }
      for (size_t c = 0; c < columns; ++c) stats[c][r] = sums[c] / n;
    }
  }
  return stats;
}

double coverage_of(const UserValues& v, std::span<const uint32_t> users, std::vector<uint32_t>& stamp, uint32_t mark) {
  uint64_t covered = 0;
  for (uint32_t u : users) {
    for (uint32_t j = 0; j < v.list_size; ++j) {
      const uint32_t item = v.lists[static_cast<size_t>(u) * v.list_size + j];
      if (item < v.num_items && stamp[item] != mark) {
        stamp[item] = mark;
        ++covered;
      }
    }
  }
  return static_cast<double>(covered) / std::max<uint32_t>(v.num_items, 1);
}

// Catalog coverage and its interval (at most 200 resamples: each one walks every list).
void add_coverage(const UserValues& v, const BootstrapOptions& o, Metrics& m) {
  if (v.lists.empty()) return;
  const uint32_t n = static_cast<uint32_t>(v.users());
  std::vector<uint32_t> all(n), stamp(v.num_items, UINT32_MAX);
  std::iota(all.begin(), all.end(), 0u);
  m["coverage"] = coverage_of(v, all, stamp, 0);
  if (n == 0) return;
  const uint32_t resamples = std::min<uint32_t>(o.resamples, 200);
  std::vector<double> stats(resamples);
  for (uint32_t r = 0; r < resamples; ++r) {
    for (uint64_t j = 0; j < n; ++j) all[j] = resampled_user(o, r, j, n);
    stats[r] = coverage_of(v, all, stamp, r + 1);
  }
  std::tie(m["coverage.lo"], m["coverage.hi"]) = percentile_interval(std::move(stats));
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

bool is_interval_key(const std::string& key) {
  auto ends_with = [&](const char* tail) {
    const size_t n = std::char_traits<char>::length(tail);
    return key.size() > n && key.compare(key.size() - n, n, tail) == 0;
  };
  return ends_with(".lo") || ends_with(".hi") || ends_with(".p");
}

std::vector<std::string> metric_names(EvalProtocol protocol) {
  switch (protocol) {
    case EvalProtocol::kNone: return {};
    case EvalProtocol::kLeaveOneOut:
    case EvalProtocol::kColdItems: return {"hr@10", "ndcg@10"};
    case EvalProtocol::kHoldout:
    case EvalProtocol::kPersonalize: {
      std::vector<std::string> names = UserValues::list_metric_names();
      names.push_back("coverage");
      return names;
    }
  }
  return {};
}

std::vector<std::string> UserValues::list_metric_names() {
  return {"precision@5", "precision@10", "precision@25", "ndcg@5", "ndcg@10", "ndcg@25", "mrr@25"};
}

void UserValues::add_list(std::span<const uint32_t> ranked, std::span<const uint32_t> relevant) {
  if (names.empty()) {
    names = list_metric_names();
    list_size = kListSize;
  }
  const RankedListMetrics r = ranked_list_metrics(ranked, relevant);
  for (int c = 0; c < 3; ++c) values.push_back(r.precision_at[c]);
  for (int c = 0; c < 3; ++c) values.push_back(r.ndcg_at[c]);
  values.push_back(r.reciprocal_rank_at_25);
  const size_t first = lists.size();
  lists.resize(first + kListSize, UINT32_MAX);
  std::copy_n(ranked.begin(), std::min<size_t>(ranked.size(), kListSize), lists.begin() + first);
}

void UserValues::append(const UserValues& more) {
  if (more.users() == 0) return;
  if (names.empty()) {
    *this = more;
    return;
  }
  TB_CHECK(names == more.names && list_size == more.list_size, "UserValues::append: the two hold other metrics");
  values.insert(values.end(), more.values.begin(), more.values.end());
  lists.insert(lists.end(), more.lists.begin(), more.lists.end());
}

Metrics summarize(const UserValues& v, const BootstrapOptions& o) {
  const size_t users = v.users(), columns = v.names.size();
  Metrics m;
  m["eval_users"] = static_cast<double>(users);
  const auto stats = resampled_means(users, columns, o, [&](uint32_t u, size_t c) { return v.values[u * columns + c]; });
  for (size_t c = 0; c < columns; ++c) {
    double sum = 0;
    for (size_t u = 0; u < users; ++u) sum += v.values[u * columns + c];
    m[v.names[c]] = users > 0 ? sum / users : 0.0;
    std::tie(m[v.names[c] + ".lo"], m[v.names[c] + ".hi"]) =
        users > 0 ? percentile_interval(stats[c]) : std::pair{0.0, 0.0};
  }
  add_coverage(v, o, m);
  return m;
}

Metrics compare_paired(const UserValues& a, const UserValues& b, const BootstrapOptions& o) {
  TB_CHECK(a.names == b.names && a.users() == b.users(), "a paired comparison needs the same metrics of the same users");
  const size_t users = a.users(), columns = a.names.size();
  auto diff = [&](uint32_t u, size_t c) { return b.values[u * columns + c] - a.values[u * columns + c]; };
  const auto stats = resampled_means(users, columns, o, diff);
  Metrics m;
  m["eval_users"] = static_cast<double>(users);
  for (size_t c = 0; c < columns; ++c) {
    double sum = 0;
    for (size_t u = 0; u < users; ++u) sum += diff(static_cast<uint32_t>(u), c);
    const std::string& name = a.names[c];
    m[name] = users > 0 ? sum / users : 0.0;
    std::tie(m[name + ".lo"], m[name + ".hi"]) = percentile_interval(stats[c]);
    // Two-sided: twice the share of resampled differences on the other side of zero.
    const double below = static_cast<double>(std::count_if(stats[c].begin(), stats[c].end(), [](double x) { return x <= 0; }));
    const double above = static_cast<double>(std::count_if(stats[c].begin(), stats[c].end(), [](double x) { return x >= 0; }));
    m[name + ".p"] = std::min(1.0, 2.0 * std::min(below, above) / std::max<size_t>(stats[c].size(), 1));
  }
  return m;
}

std::string metrics_table(const std::vector<std::string>& headers, const std::vector<const Metrics*>& columns) {
  auto cell = [](const Metrics& m, const std::string& key) -> std::string {
    const auto it = m.find(key);
    if (it == m.end()) return "-";
    std::string text = fmt::format("{:.4f}", it->second);
    if (m.count(key + ".lo")) text += fmt::format(" [{:.4f}, {:.4f}]", m.at(key + ".lo"), m.at(key + ".hi"));
    if (m.count(key + ".p")) text += fmt::format(" p={:.3f}", m.at(key + ".p"));
    return text;
  };
  std::vector<std::string> keys;
  for (const Metrics* m : columns) {
    for (const auto& [key, value] : *m) {
      const bool counts = key == "eval_users" || key.ends_with(".eval_users");
      if (!counts && !is_interval_key(key) && std::find(keys.begin(), keys.end(), key) == keys.end()) {
        keys.push_back(key);
      }
    }
  }
  std::sort(keys.begin(), keys.end());
  std::string out = fmt::format("{:<14}", "metric");
  for (const std::string& h : headers) out += fmt::format("{:>34}", h);
  out += "\n";
  for (const std::string& key : keys) {
    out += fmt::format("{:<14}", key);
    for (const Metrics* m : columns) out += fmt::format("{:>34}", cell(*m, key));
    out += "\n";
  }
  return out;
}

UserValues evaluate_users(const Split& split, const ScoreFn& score, uint32_t, UserRange range) {
  range.end = std::min(range.end, split.eval_users.size());
  range.begin = std::min(range.begin, range.end);
  switch (split.protocol) {
    case EvalProtocol::kNone: return {};
    case EvalProtocol::kLeaveOneOut:
    case EvalProtocol::kColdItems: return evaluate_loo(split, score, range);
    case EvalProtocol::kHoldout:
    case EvalProtocol::kPersonalize:
      return evaluate_holdout_with(split, [&](uint32_t u, std::span<float> out) { score(u, {}, out); }, range);
  }
  return {};
}

Metrics evaluate(const Split& split, const ScoreFn& score, uint32_t threads) {
  if (split.protocol == EvalProtocol::kNone) return {};
  return summarize(evaluate_users(split, score, threads));
}

Metrics evaluate_popularity(const Split& split) {
  const std::vector<float> popularity = popularity_scores(split.train);
  return evaluate(split, [&](uint32_t, std::span<const uint32_t> items, std::span<float> out) {
    if (items.empty()) {
      std::copy(popularity.begin(), popularity.end(), out.begin());
    } else {
      for (size_t k = 0; k < items.size(); ++k) out[k] = popularity[items[k]];
    }
  }, 0);
}

}  // namespace tastebud::host
