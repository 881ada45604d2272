#include "host/recipes.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <ostream>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "host/model_dir.h"
#include "host/evaluation.h"
#include "host/split.h"
#include "tastebud/binary_lists.h"
#include "tastebud/checksum.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Version 2 ends in the checksum trailer (tastebud/checksum.h); version 3 adds the latest-item
// lists after the neighbour lists. Versions 1 and 2 still load.
constexpr char kRecipeMagic[8] = {'T', 'B', 'R', 'E', 'C', 'I', 'P', '3'};
constexpr char kRecipeMagicV2[8] = {'T', 'B', 'R', 'E', 'C', 'I', 'P', '2'};
constexpr char kRecipeMagicV1[8] = {'T', 'B', 'R', 'E', 'C', 'I', 'P', '1'};

int64_t newest(const EventLog& log) {
  int64_t t = INT64_MIN;
  for (int64_t x : log.timestamp) t = std::max(t, x);
  return t;
}

// The newest `max_history` distinct items of each basket with a used event, sorted: a basket is a
// user's history, or the log's basket of each event (events of kNoBasket form none). Baskets with
// no used event are left out.
std::vector<std::vector<uint32_t>> baskets(const EventLog& log, const std::vector<double>& weight,
                                           uint32_t max_history) {
  TB_CHECK(log.basket.empty() || log.basket.size() == log.user.size(), "recipes: one basket per event expected");
  auto key = [&](size_t e) { return log.basket.empty() ? uint64_t{log.user[e]} : log.basket[e]; };
  std::vector<size_t> order;
  for (size_t e = 0; e < weight.size(); ++e)
    if (weight[e] > 0 && key(e) != kNoBasket) order.push_back(e);
  // By basket, newest first within it, so that the cap keeps the most recent items.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return key(a) != key(b) ? key(a) < key(b) : log.timestamp[a] > log.timestamp[b];
  });
  std::vector<std::vector<uint32_t>> out;
  std::vector<uint32_t> candidates;
  for (size_t k = 0; k < order.size();) {
    const uint64_t basket = key(order[k]);
    candidates.clear();
    for (; k < order.size() && key(order[k]) == basket; ++k)
      if (candidates.size() < max_history * 2u) candidates.push_back(log.item[order[k]]);  // duplicates removed below
    std::vector<uint32_t>& distinct = out.emplace_back();
    for (uint32_t i : candidates) {
      if (distinct.size() >= max_history) break;
      if (std::find(distinct.begin(), distinct.end(), i) == distinct.end()) distinct.push_back(i);
    }
    std::sort(distinct.begin(), distinct.end());
  }
  return out;
}

EventLog event_log_of(const datasets::Dataset& dataset) {
  EventLog log;
  log.num_users = dataset.num_users();
  log.num_items = dataset.num_items();
  log.user = dataset.interactions.user;
  log.item = dataset.interactions.item;
  log.timestamp = dataset.interactions.timestamp;
  log.event_type = dataset.interactions.event_type;
  for (size_t k = 0; k < dataset.event_types.size(); ++k) log.event_types.emplace_back(dataset.event_types[k]);
  return log;
}

SeenItems seen_of(const EventLog& log) {
  std::vector<std::vector<uint32_t>> per_user(log.num_users);
  for (size_t e = 0; e < log.user.size(); ++e) per_user[log.user[e]].push_back(log.item[e]);
  SeenItems seen;
  seen.offsets.push_back(0);
  for (auto& items : per_user) {
    std::sort(items.begin(), items.end());
    items.erase(std::unique(items.begin(), items.end()), items.end());
    seen.items.insert(seen.items.end(), items.begin(), items.end());
    seen.offsets.push_back(seen.items.size());
  }
  return seen;
}

}  // namespace

std::vector<float> split_event_weights(const Split& split, const EventLog& events, const std::vector<double>& base) {
  const TrainingSet& train = split.train;
  std::vector<uint64_t> cut(events.num_users, UINT64_MAX);
  if (holds_out_newest(split.protocol)) {
    for (size_t k = 0; k < split.eval_users.size(); ++k) cut[split.eval_users[k]] = split.eval_row[k];
  }
  std::vector<float> weight(base.size(), 0.0f);
  for (uint64_t r = 0; r < base.size(); ++r) {
    const uint32_t u = events.user[r];
    const auto first = train.item.begin() + static_cast<int64_t>(train.user_offsets[u]);
    const auto last = train.item.begin() + static_cast<int64_t>(train.user_offsets[u + 1]);
    if (r < cut[u] && std::binary_search(first, last, events.item[r])) weight[r] = static_cast<float>(base[r]);
  }
  return weight;
}

SeenItems seen_items_of(const EventLog& log) { return seen_of(log); }

namespace {

// A recipe judged like NeuMF (--eval): computed again from a split's training rows only (a user's
// row counts when its (user, item) pair is a training positive, the row is not another split's
// held-out row and, under holdout, it is older than the user's first held-out row), then asked to
// rank the same held-out interactions among the same candidates. popularity and trending score
// every user alike; sims sums each item's similarity to the user's training items; transitions
// scores from the user's latest training events, and the items those never led to follow, by
// popularity.
Metrics evaluate_recipe_on(const TrainPlan& plan, const Split& split, EventLog events, const std::vector<double>& base,
                           const RecipeOptions& options, const ItemTokens& metadata) {
  const ModelType model = plan.model;
  const TrainingSet& train = split.train;
  events.weight = split_event_weights(split, events, base);
  std::vector<float> item_scores;
  ItemNeighbors neighbors, latest;
  if (model == ModelType::kPopularity) item_scores = popularity_scores(events, options);
  if (model == ModelType::kTrending) item_scores = trending_scores(events, options);
  if (model == ModelType::kSims) neighbors = sims_neighbors(events, options, metadata);
  if (model == ModelType::kTransitions) {
    neighbors = transition_neighbors(events, options);
    latest = latest_items(events, options);
    // Below every transitions score (> 0): -1 + popularity / (2 max), in [-1, -0.5].
    item_scores = popularity_scores(events, options);
    const float most = *std::max_element(item_scores.begin(), item_scores.end());
    for (float& p : item_scores) p = most > 0 ? -1.0f + p / (2 * most) : -1.0f;
  }
  const ScoreFn score = [&](uint32_t u, std::span<const uint32_t> items, std::span<float> out) {
    if (model == ModelType::kPopularity || model == ModelType::kTrending) {
      for (size_t k = 0; k < out.size(); ++k) out[k] = item_scores[items.empty() ? k : items[k]];
      return;
    }
    thread_local std::vector<float> all;
    if (model == ModelType::kTransitions) {
      transition_scores(neighbors, latest, u, all);
      for (size_t k = 0; k < out.size(); ++k) {
        const uint32_t i = items.empty() ? static_cast<uint32_t>(k) : items[k];
        out[k] = std::isnan(all[i]) ? item_scores[i] : all[i];
      }
      return;
    }
    all.assign(events.num_items, 0.0f);
    for (uint64_t p = train.user_offsets[u]; p < train.user_offsets[u + 1]; ++p) {
      const uint32_t h = train.item[p];
      for (uint64_t k = neighbors.offsets[h]; k < neighbors.offsets[h + 1]; ++k) all[neighbors.items[k]] += neighbors.scores[k];
    }
    for (size_t k = 0; k < out.size(); ++k) out[k] = all[items.empty() ? k : items[k]];
  };
  return evaluate(split, score, plan.job.threads);
}

// The test split's metrics and, with --validation-users, the validation split's as "val.*" (the
// validation split is carved from the test split's training rows, as for NeuMF: a choice of the
// recipe's options made on it never sees the test rows).
EpochRecord evaluate_recipe(const TrainPlan& plan, const datasets::Dataset& dataset, const EventLog& events,
                            const RecipeOptions& options, const ItemTokens& metadata, Metrics* popularity_baseline) {
  const auto start = std::chrono::steady_clock::now();
  const Split split = make_split(dataset, plan.split);
  const std::vector<double> base = event_weights(events, options);
  EpochRecord record;
  record.epoch = 1;
  record.samples = events.user.size();
  record.metrics = evaluate_recipe_on(plan, split, events, base, options, metadata);
  if (plan.validate) {
    const Split validation = make_validation_split(dataset, plan.split, split, plan.job.validation_users);
    std::vector<double> kept = base;
    for (uint64_t r = 0; r < kept.size(); ++r)
      if (split.held_out_rows[r]) kept[r] = 0;  // the test split's held-out rows do not exist here
    for (const auto& [k, v] : evaluate_recipe_on(plan, validation, events, kept, options, metadata)) record.metrics["val." + k] = v;
  }
  record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *popularity_baseline = evaluate_popularity(split);
  return record;
}

// (key, value) pairs grouped by key (0..n-1) as CSR: offsets (n + 1) and the values, each key's in
// the order `each` emits them. `each(emit)` calls emit(key, value) for every pair; it runs twice
// (a count pass, then a fill pass), so it must emit the same pairs both times.
template <typename Value, typename Each>
std::pair<std::vector<uint64_t>, std::vector<Value>> group_by_key(uint32_t n, Each&& each) {
  std::vector<uint64_t> offsets(uint64_t{n} + 1, 0);
  each([&](uint32_t key, Value) { ++offsets[key + 1]; });
  for (uint32_t k = 0; k < n; ++k) offsets[k + 1] += offsets[k];
  std::vector<Value> values(offsets[n]);
  std::vector<uint64_t> fill(offsets.begin(), offsets.end() - 1);
  each([&](uint32_t key, Value value) { values[fill[key]++] = value; });
  return {std::move(offsets), std::move(values)};
}

// The `n` best (score, item) pairs of a list, best first (ties by item index).
void keep_best(std::vector<std::pair<float, uint32_t>>& list, size_t n) {
  auto better = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
  if (list.size() > n) {
    std::partial_sort(list.begin(), list.begin() + n, list.end(), better);
    list.resize(n);
    list.shrink_to_fit();  // a list of every candidate would otherwise stay allocated per item
  } else {
    std::sort(list.begin(), list.end(), better);
  }
}

// Per-item lists of (score, item) as one CSR table.
ItemNeighbors neighbor_lists(const std::vector<std::vector<std::pair<float, uint32_t>>>& best) {
  ItemNeighbors out;
  out.offsets.push_back(0);
  for (const auto& list : best) {
    for (const auto& [score, j] : list) {
      out.items.push_back(j);
      out.scores.push_back(score);
    }
    out.offsets.push_back(out.items.size());
  }
  return out;
}

}  // namespace

double parse_trend_window(std::string_view window) {
  static const std::pair<const char*, double> windows[] = {
      {"30m", 30.0 / 1440}, {"30min", 30.0 / 1440}, {"1h", 1.0 / 24}, {"3h", 3.0 / 24}, {"1d", 1.0}};
  for (const auto& [name, days] : windows)
    if (window == name) return days;
  throw Error(fmt::format("--trend-window '{}': the service's windows are 30m, 1h, 3h and 1d "
                          "(--trend-window-days takes any length)",
                          window));
}

PopularityCount parse_popularity_count(std::string_view name) {
  if (name == "users") return PopularityCount::kUsers;
  if (name == "events") return PopularityCount::kEvents;
  throw Error(fmt::format("`popularity_count` '{}': choose users (distinct users per item) or events "
                          "(summed event weights)", name));
}

CoOccurrence parse_co_occurrence(std::string_view name) {
  if (name == "user") return CoOccurrence::kUser;
  if (name == "order") return CoOccurrence::kOrder;
  if (name == "session") return CoOccurrence::kSession;
  throw Error(fmt::format("`co_occurrence` '{}': choose user, order or session", name));
}

RecipeOptions RecipeOptions::from_job(const TrainJob& job) {
  RecipeOptions o;
  TB_CHECK(job.half_life_days >= 0, "`half_life_days` must be >= 0");
  TB_CHECK(job.popularity_window_days >= 0, "`popularity_window_days` must be >= 0 (0: all time)");
  TB_CHECK(job.session_gap_hours > 0, "`session_gap_hours` must be positive");
  TB_CHECK(job.metadata_similarity >= 0 && job.metadata_similarity <= 1, "`metadata_similarity` must be in [0, 1]");
  TB_CHECK(!job.order_field.empty(), "`order_field` must name a field");
  o.popularity_count = parse_popularity_count(job.popularity_count);
  o.popularity_window_days = job.popularity_window_days;
  o.co_occurrence = parse_co_occurrence(job.co_occurrence);
  o.order_field = job.order_field;
  o.session_gap_hours = job.session_gap_hours;
  o.metadata_similarity = job.metadata_similarity;
  TB_CHECK(job.trend_window_days > 0, "`trend_window_days` must be positive");
  TB_CHECK(job.trend_smoothing >= 0, "`trend_smoothing` must be >= 0");
  TB_CHECK(job.popularity_discount >= 0, "`popularity_discount` must be >= 0");
  TB_CHECK(job.neighbors > 0, "`neighbors` must be positive");
  TB_CHECK(job.transition_window > 0, "`transition_window` must be positive");
  TB_CHECK(job.transition_decay > 0 && job.transition_decay <= 1, "`transition_decay` must be in (0, 1]");
  TB_CHECK(job.recent_items > 0, "`recent_items` must be positive");
  TB_CHECK(job.recent_decay > 0 && job.recent_decay <= 1, "`recent_decay` must be in (0, 1]");
  o.half_life_days = job.half_life_days;
  o.min_co_count = std::max<uint32_t>(job.min_co_count, 1);
  o.popularity_discount = job.popularity_discount;
  o.neighbors = job.neighbors;
  o.trend_window_days = job.trend_window_days;
  o.trend_smoothing = job.trend_smoothing;
  o.transition_window = job.transition_window;
  o.transition_decay = job.transition_decay;
  o.recent_items = job.recent_items;
  o.recent_decay = job.recent_decay;
  return o;
}

std::vector<double> event_weights(const EventLog& log, const RecipeOptions& options) {
  if (!log.weight.empty()) {
    TB_CHECK(log.weight.size() == log.user.size(), "recipes: one weight per event expected");
    return std::vector<double>(log.weight.begin(), log.weight.end());
  }
  std::vector<double> per_type(log.event_types.size(), options.event_weights.empty() ? 1.0 : 0.0);
  for (const auto& [type, w] : options.event_weights) {
    const auto it = std::find(log.event_types.begin(), log.event_types.end(), type);
    if (it == log.event_types.end()) {
      throw Error(fmt::format("event weights: the dataset has no event type '{}' (it has: {})", type,
                              fmt::join(log.event_types, ", ")));
    }
    per_type[it - log.event_types.begin()] = w;
  }
  std::vector<double> weight(log.user.size());
  for (size_t e = 0; e < weight.size(); ++e) {
    const uint32_t t = log.event_type.empty() ? 0 : log.event_type[e];
    weight[e] = t < per_type.size() ? per_type[t] : (options.event_weights.empty() ? 1.0 : 0.0);
  }
  return weight;
}

namespace {

// 0.5^(age in days / half-life) of an event at t when the newest is at `latest`; 1 without a half-life.
double recency(const RecipeOptions& options, int64_t latest, int64_t t) {
  if (options.half_life_days <= 0) return 1;
  // In double: a dataset imported before timestamps were range-checked may hold INT64_MIN.
  const double age_days = (static_cast<double>(latest) - static_cast<double>(t)) / 86400.0;
  return std::exp2(-age_days / options.half_life_days);
}

// Per item: the distinct users with a counted event (weight > 0), each weighing the recency of the
// user's newest counted event on the item.
std::vector<double> distinct_users(const EventLog& log, const std::vector<double>& weight, const RecipeOptions& options,
                                   int64_t latest) {
  const auto by_user = group_by_key<uint64_t>(log.num_users, [&](auto&& emit) {
    for (uint64_t e = 0; e < weight.size(); ++e)
      if (weight[e] > 0) emit(log.user[e], e);
  });
  std::vector<double> score(log.num_items, 0.0);
  std::vector<uint32_t> last_user(log.num_items, UINT32_MAX);
  std::vector<int64_t> newest_of(log.num_items);
  std::vector<uint32_t> touched;
  for (uint32_t u = 0; u < log.num_users; ++u) {
    touched.clear();
    for (uint64_t k = by_user.first[u]; k < by_user.first[u + 1]; ++k) {
      const uint64_t e = by_user.second[k];
      const uint32_t i = log.item[e];
      if (last_user[i] != u) {
        last_user[i] = u;
        newest_of[i] = log.timestamp[e];
        touched.push_back(i);
      } else {
        newest_of[i] = std::max(newest_of[i], log.timestamp[e]);
      }
    }
    for (uint32_t i : touched) score[i] += recency(options, latest, newest_of[i]);
  }
  return score;
}

}  // namespace

std::vector<float> popularity_scores(const EventLog& log, const RecipeOptions& options) {
  std::vector<double> weight = event_weights(log, options);
  const int64_t latest = newest(log);
  if (options.popularity_window_days > 0) {
    // Whole seconds, as trending's windows: an event exactly D days before the newest is out.
    const double window = std::round(options.popularity_window_days * 86400.0);
    for (size_t e = 0; e < weight.size(); ++e)
      if (static_cast<double>(latest) - static_cast<double>(log.timestamp[e]) >= window) weight[e] = 0;
  }
  std::vector<double> score(log.num_items, 0.0);
  if (options.popularity_count == PopularityCount::kUsers) {
    score = distinct_users(log, weight, options, latest);
  } else {
    for (size_t e = 0; e < weight.size(); ++e) score[log.item[e]] += weight[e] * recency(options, latest, log.timestamp[e]);
  }
  return std::vector<float>(score.begin(), score.end());
}

std::vector<uint64_t> session_baskets(const EventLog& log, double gap_hours) {
  std::vector<size_t> order(log.user.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return log.user[a] != log.user[b] ? log.user[a] < log.user[b] : log.timestamp[a] < log.timestamp[b];
  });
  const double gap = gap_hours * 3600;
  std::vector<uint64_t> basket(log.user.size());
  uint64_t session = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t e = order[k], before = k > 0 ? order[k - 1] : 0;
    const bool starts = k > 0 && (log.user[e] != log.user[before] ||
                                  static_cast<double>(log.timestamp[e]) - static_cast<double>(log.timestamp[before]) > gap);
    if (starts) ++session;
    basket[e] = session;
  }
  return basket;
}

std::vector<float> trending_scores(const EventLog& log, const RecipeOptions& options) {
  const std::vector<double> weight = event_weights(log, options);
  const int64_t latest = newest(log);
  // Whole seconds: 30 minutes is 1800 s exactly, not 0.0208333 days times 86400.
  const double window = std::round(options.trend_window_days * 86400.0);
  std::vector<double> recent(log.num_items, 0.0), before(log.num_items, 0.0);
  for (size_t e = 0; e < weight.size(); ++e) {
    const double age = static_cast<double>(latest) - static_cast<double>(log.timestamp[e]);
    if (age < window) recent[log.item[e]] += weight[e];
    else if (age < 2 * window) before[log.item[e]] += weight[e];
  }
  std::vector<float> score(log.num_items);
  for (uint32_t i = 0; i < log.num_items; ++i) {
    const double denominator = before[i] + options.trend_smoothing;
    score[i] = static_cast<float>(denominator > 0 ? (recent[i] - before[i]) / denominator
                                                   : (recent[i] > 0 ? recent[i] : 0.0));
  }
  return score;
}

ItemTokens item_tokens(const datasets::Metadata& items, uint32_t num_items) {
  // Token ids: each categorical field's values after the fields before it, then the text's hashes.
  std::vector<uint32_t> base;
  uint64_t next = 0;
  for (const auto& field : items.categorical) {
    base.push_back(static_cast<uint32_t>(next));
    next += field.vocabulary.size();
  }
  TB_CHECK(next + datasets::kTextHashBuckets < UINT32_MAX, "metadata similarity: too many categorical values");
  const auto text_base = static_cast<uint32_t>(next);
  ItemTokens out;
  out.field_starts = base;
  if (!items.textual.empty()) out.field_starts.push_back(text_base);
  out.offsets.push_back(0);
  for (uint32_t r = 0; r < num_items; ++r) {
    if (r < items.has_row.size() && items.has_row[r]) {
      for (size_t f = 0; f < items.categorical.size(); ++f) {
        const auto& field = items.categorical[f];
        if (uint64_t{r} + 1 >= field.offsets.size()) continue;
        for (uint64_t k = field.offsets[r]; k < field.offsets[r + 1]; ++k) out.tokens.push_back(base[f] + field.values[k]);
      }
      for (const auto& text : items.textual) {
        if (uint64_t{r} + 1 >= text.offsets.size()) continue;
        for (uint64_t k = text.offsets[r]; k < text.offsets[r + 1]; ++k) out.tokens.push_back(text_base + text.tokens[k]);
      }
    }
    out.offsets.push_back(out.tokens.size());
  }
  return out;
}

namespace {

// Items as unit TF-IDF vectors over their tokens (per item: distinct tokens and weights), and the
// inverted index token -> (item, weight) that finds the items sharing a token.
struct MetadataVectors {
  std::vector<uint64_t> item_offsets;
  std::vector<uint32_t> item_tokens;
  std::vector<float> item_weights;
  std::pair<std::vector<uint64_t>, std::vector<std::pair<uint32_t, float>>> holders;  // CSR over tokens
  bool empty() const { return item_offsets.empty(); }
};

// A token held by more than this share of the items (and more than kCommonTokenItems of them) is
// left out: its idf is below ln 5, and accumulating it would cost items x holders.
constexpr double kCommonTokenShare = 0.2;
constexpr uint64_t kCommonTokenItems = 1000;

MetadataVectors metadata_vectors(const ItemTokens& metadata, uint32_t num_items) {
  MetadataVectors v;
  if (metadata.offsets.empty()) return v;
  TB_CHECK(metadata.offsets.size() == uint64_t{num_items} + 1, "metadata similarity: one token list per item expected");
  const uint32_t tokens = metadata.tokens.empty() ? 0 : *std::max_element(metadata.tokens.begin(), metadata.tokens.end()) + 1;
  // Per item: its distinct tokens with their counts.
  std::vector<std::vector<std::pair<uint32_t, uint32_t>>> counted(num_items);
  std::vector<uint64_t> holders(tokens, 0);
  uint64_t described = 0;  // items with any token
  for (uint32_t i = 0; i < num_items; ++i) {
    std::vector<uint32_t> t(metadata.tokens.begin() + static_cast<int64_t>(metadata.offsets[i]),
                            metadata.tokens.begin() + static_cast<int64_t>(metadata.offsets[i + 1]));
    std::sort(t.begin(), t.end());
    for (size_t k = 0; k < t.size(); ++k) {
      if (k > 0 && t[k] == t[k - 1]) {
        ++counted[i].back().second;
      } else {
        counted[i].emplace_back(t[k], 1);
        ++holders[t[k]];
      }
    }
    described += t.empty() ? 0 : 1;
  }
  // Each field's part of an item's vector is a unit vector over sqrt(fields), so the dot product of
  // two items is the mean of their per-field cosines.
  const std::vector<uint32_t>& starts = metadata.field_starts;
  const size_t fields = std::max<size_t>(1, starts.size());
  auto field_of = [&](uint32_t t) {
    return starts.empty() ? size_t{0} : static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), t) - starts.begin() - 1);
  };
  std::vector<double> norm(fields);
  v.item_offsets.push_back(0);
  for (uint32_t i = 0; i < num_items; ++i) {
    const size_t first = v.item_tokens.size();
    std::fill(norm.begin(), norm.end(), 0.0);
    for (const auto& [t, count] : counted[i]) {
      if (holders[t] > kCommonTokenItems && static_cast<double>(holders[t]) > kCommonTokenShare * static_cast<double>(described)) continue;
      const double w = count * std::log(static_cast<double>(described) / static_cast<double>(holders[t]));
      if (w <= 0) continue;
      v.item_tokens.push_back(t);
      v.item_weights.push_back(static_cast<float>(w));
      norm[field_of(t)] += w * w;
    }
    for (size_t k = first; k < v.item_weights.size(); ++k) {
      const double scale = std::sqrt(norm[field_of(v.item_tokens[k])] * static_cast<double>(fields));
      v.item_weights[k] = static_cast<float>(v.item_weights[k] / scale);
    }
    v.item_offsets.push_back(v.item_tokens.size());
  }
  v.holders = group_by_key<std::pair<uint32_t, float>>(tokens, [&](auto&& emit) {
    for (uint32_t i = 0; i < num_items; ++i)
      for (uint64_t k = v.item_offsets[i]; k < v.item_offsets[i + 1]; ++k) emit(v.item_tokens[k], std::pair{i, v.item_weights[k]});
  });
  return v;
}

// One thread's scratch of sims: co-occurrence counts and metadata dot products per item, zero
// between items, and the items each touched.
struct SimsScratch {
  std::vector<uint32_t> co;
  std::vector<double> dot;
  std::vector<uint32_t> co_touched, dot_touched;
};

// Item i's co-occurrence scores, co / (n_i n_j)^discount for the pairs of at least min_co_count.
void co_occurrence_scores(uint32_t i, const std::vector<std::vector<uint32_t>>& history,
                          const std::pair<std::vector<uint64_t>, std::vector<uint32_t>>& by_item,
                          const RecipeOptions& options, SimsScratch& s, std::vector<std::pair<float, uint32_t>>& list) {
  const auto& [offsets, holders] = by_item;
  s.co_touched.clear();
  for (uint64_t k = offsets[i]; k < offsets[i + 1]; ++k) {
    for (uint32_t j : history[holders[k]]) {
      if (j == i) continue;
      if (s.co[j]++ == 0) s.co_touched.push_back(j);
    }
  }
  const double n_i = static_cast<double>(offsets[i + 1] - offsets[i]);
  for (uint32_t j : s.co_touched) {
    if (s.co[j] >= options.min_co_count) {
      const double n_j = static_cast<double>(offsets[j + 1] - offsets[j]);
      list.emplace_back(static_cast<float>(s.co[j] / std::pow(n_i * n_j, options.popularity_discount)), j);
    }
    s.co[j] = 0;
  }
}

// (1 - a) * the co-occurrence score over i's best + a * the metadata cosine, for every item that
// shares a co-occurrence or a token with i (without metadata, the co-occurrence part alone).
void blend_metadata(uint32_t i, const MetadataVectors& v, double a, SimsScratch& s,
                    std::vector<std::pair<float, uint32_t>>& list) {
  s.dot_touched.clear();
  for (uint64_t k = v.empty() ? 0 : v.item_offsets[i]; !v.empty() && k < v.item_offsets[i + 1]; ++k) {
    const uint32_t t = v.item_tokens[k];
    for (uint64_t h = v.holders.first[t]; h < v.holders.first[t + 1]; ++h) {
      const auto [j, w] = v.holders.second[h];
      if (j == i) continue;
      if (s.dot[j] == 0) s.dot_touched.push_back(j);
      s.dot[j] += double{v.item_weights[k]} * w;
    }
  }
  float best = 0;
  for (const auto& [score, j] : list) best = std::max(best, score);
  for (auto& [score, j] : list) {
    score = static_cast<float>((best > 0 ? (1 - a) * score / best : 0.0) + a * s.dot[j]);
    if (s.dot[j] > 0) s.dot[j] = -1;  // scored; reset with the touched below
  }
  for (uint32_t j : s.dot_touched) {
    if (s.dot[j] > 0) list.emplace_back(static_cast<float>(a * s.dot[j]), j);
    s.dot[j] = 0;
  }
}

}  // namespace

ItemNeighbors sims_neighbors(const EventLog& log, const RecipeOptions& options, const ItemTokens& metadata) {
  const std::vector<double> weight = event_weights(log, options);
  const std::vector<std::vector<uint32_t>> history = baskets(log, weight, options.max_history);
  const uint32_t n = log.num_items;
  // item -> baskets (CSR), to walk the co-occurrences of one item at a time.
  const auto by_item = group_by_key<uint32_t>(n, [&](auto&& emit) {
    for (uint32_t b = 0; b < history.size(); ++b)
      for (uint32_t i : history[b]) emit(i, b);
  });
  const double a = options.metadata_similarity;
  const MetadataVectors vectors = a > 0 ? metadata_vectors(metadata, n) : MetadataVectors{};
  std::vector<std::vector<std::pair<float, uint32_t>>> best(n);
  const int64_t items = n;
#pragma omp parallel
  {
    SimsScratch scratch{std::vector<uint32_t>(n, 0), std::vector<double>(a > 0 ? n : 0, 0.0), {}, {}};
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = 0; i < items; ++i) {
      co_occurrence_scores(static_cast<uint32_t>(i), history, by_item, options, scratch, best[i]);
      if (a > 0) blend_metadata(static_cast<uint32_t>(i), vectors, a, scratch, best[i]);
      keep_best(best[i], options.neighbors);
    }
  }
  return neighbor_lists(best);
}

ItemNeighbors user_sequences(const EventLog& log, const RecipeOptions& options) {
  const std::vector<double> weight = event_weights(log, options);
  std::vector<size_t> order;
  for (size_t e = 0; e < weight.size(); ++e)
    if (weight[e] > 0) order.push_back(e);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return log.user[a] != log.user[b] ? log.user[a] < log.user[b] : log.timestamp[a] < log.timestamp[b];
  });
  ItemNeighbors out;
  out.offsets.assign(uint64_t{log.num_users} + 1, 0);
  uint32_t previous_user = UINT32_MAX;
  for (size_t e : order) {
    const uint32_t u = log.user[e];
    if (u == previous_user && out.items.back() == log.item[e]) {
      out.scores.back() = std::max(out.scores.back(), static_cast<float>(weight[e]));
      continue;
    }
    out.items.push_back(log.item[e]);
    out.scores.push_back(static_cast<float>(weight[e]));
    ++out.offsets[u + 1];
    previous_user = u;
  }
  for (uint32_t u = 0; u < log.num_users; ++u) out.offsets[u + 1] += out.offsets[u];
  return out;
}

ItemNeighbors transition_neighbors(const EventLog& log, const RecipeOptions& options) {
  const ItemNeighbors seq = user_sequences(log, options);
  const uint32_t n = log.num_items;
  const uint64_t events = seq.items.size();
  // Where each event's sequence ends, and item -> its events (CSR), to walk one item at a time.
  std::vector<uint64_t> end(events);
  for (uint32_t u = 0; u < log.num_users; ++u)
    for (uint64_t p = seq.offsets[u]; p < seq.offsets[u + 1]; ++p) end[p] = seq.offsets[u + 1];
  const auto by_item = group_by_key<uint64_t>(n, [&](auto&& emit) {
    for (uint64_t p = 0; p < events; ++p) emit(seq.items[p], p);
  });
  const std::vector<uint64_t>& item_offsets = by_item.first;
  const std::vector<uint64_t>& item_events = by_item.second;
  std::vector<double> decay(options.transition_window + 1, 1.0);  // decay[d] = transition_decay^(d - 1)
  for (uint32_t d = 2; d <= options.transition_window; ++d) decay[d] = decay[d - 1] * options.transition_decay;
  std::vector<std::vector<std::pair<float, uint32_t>>> best(n);
  const int64_t items = n;
#pragma omp parallel
  {
    std::vector<double> followed(n, 0.0);
    std::vector<uint32_t> touched;
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = 0; i < items; ++i) {
      touched.clear();
      for (uint64_t k = item_offsets[i]; k < item_offsets[i + 1]; ++k) {
        const uint64_t p = item_events[k];
        const uint64_t last = std::min<uint64_t>(end[p], p + options.transition_window + 1);
        for (uint64_t q = p + 1; q < last; ++q) {
          const uint32_t j = seq.items[q];
          if (j == i) continue;
          if (followed[j] == 0) touched.push_back(j);
          followed[j] += seq.scores[q] * decay[q - p];
        }
      }
      double total = 0;
      for (uint32_t j : touched) total += followed[j];
      auto& list = best[i];
      for (uint32_t j : touched) {
        list.emplace_back(static_cast<float>(followed[j] / total), j);
        followed[j] = 0;
      }
      keep_best(list, options.neighbors);
    }
  }
  return neighbor_lists(best);
}

ItemNeighbors latest_items(const EventLog& log, const RecipeOptions& options) {
  const ItemNeighbors seq = user_sequences(log, options);
  ItemNeighbors out;
  out.offsets.push_back(0);
  for (uint32_t u = 0; u < log.num_users; ++u) {
    const size_t first = out.items.size();
    double w = 1;
    for (uint64_t p = seq.offsets[u + 1]; p > seq.offsets[u] && out.items.size() - first < options.recent_items; --p) {
      const uint32_t i = seq.items[p - 1];
      if (std::find(out.items.begin() + static_cast<int64_t>(first), out.items.end(), i) != out.items.end()) continue;
      out.items.push_back(i);
      out.scores.push_back(static_cast<float>(w));
      w *= options.recent_decay;
    }
    out.offsets.push_back(out.items.size());
  }
  return out;
}

void transition_scores(const ItemNeighbors& transitions, const ItemNeighbors& latest, uint32_t user,
                       std::vector<float>& s) {
  s.assign(transitions.offsets.empty() ? 0 : transitions.offsets.size() - 1, NAN);
  if (latest.offsets.empty()) return;
  for (uint64_t k = latest.offsets[user]; k < latest.offsets[user + 1]; ++k) {
    const uint32_t h = latest.items[k];
    const float w = latest.scores[k];
    for (uint64_t t = transitions.offsets[h]; t < transitions.offsets[h + 1]; ++t) {
      float& x = s[transitions.items[t]];
      x = std::isnan(x) ? w * transitions.scores[t] : x + w * transitions.scores[t];
    }
  }
}

void write_recipe(const RecipeData& data, const fs::path& path) {
  std::string bytes(kRecipeMagic, sizeof(kRecipeMagic));
  const json header{{"kind", data.kind}};
  const std::string text = header.dump();
  append_list(bytes, std::vector<char>(text.begin(), text.end()));
  append_list(bytes, data.popularity);
  append_list(bytes, data.item_scores);
  append_list(bytes, data.neighbors.offsets);
  append_list(bytes, data.neighbors.items);
  append_list(bytes, data.neighbors.scores);
  append_list(bytes, data.latest.offsets);
  append_list(bytes, data.latest.items);
  append_list(bytes, data.latest.scores);
  append_checksum(bytes);
  write_file_atomically(path, bytes);
}

// Neighbour lists like seen items: offsets from 0, increasing, within the lists; items in range.
// `lists`: how many lists there must be (one per item), or SIZE_MAX for any number (one per user).
void check_neighbors(const ItemNeighbors& nb, size_t lists, size_t items, const fs::path& path) {
  auto bad = [&](const std::string& what) { return Error(fmt::format("corrupt: {}: {}", path.string(), what)); };
  if (nb.items.size() != nb.scores.size()) throw bad("neighbour items and scores differ in count");
  if (nb.offsets.empty()) return;
  if (lists != SIZE_MAX && nb.offsets.size() != lists + 1)
    throw bad(fmt::format("neighbour lists for {} items, not {}", nb.offsets.size() - 1, lists));
  if (nb.offsets.front() != 0 || nb.offsets.back() != nb.items.size()) throw bad("neighbour offsets do not span the lists");
  for (size_t i = 0; i + 1 < nb.offsets.size(); ++i) {
    if (nb.offsets[i + 1] < nb.offsets[i] || nb.offsets[i + 1] > nb.items.size())
      throw bad(fmt::format("list {}'s neighbour offsets do not increase", i));
  }
  for (uint32_t j : nb.items)
    if (j >= items) throw bad(fmt::format("a neighbour item {} of {} items", j, items));
}

RecipeData read_recipe(const fs::path& path, uint32_t num_items) {
  const std::string file = read_file(path);
  std::string_view bytes = file;
  const bool with_latest = file.size() >= 8 && std::memcmp(file.data(), kRecipeMagic, 8) == 0;
  if (with_latest || (file.size() >= 8 && std::memcmp(file.data(), kRecipeMagicV2, 8) == 0)) bytes = checked_payload(file, path);
  else if (file.size() < 8 || std::memcmp(file.data(), kRecipeMagicV1, 8) != 0)
    throw Error(fmt::format("{}: not a tastebud recipe file", path.string()));
  size_t at = 8;
  RecipeData data;
  const std::vector<char> header = take_list<char>(bytes, at, path);
  try {
    data.kind = json::parse(std::string(header.begin(), header.end())).at("kind").get<std::string>();
  } catch (const json::exception& e) {
    throw Error(fmt::format("corrupt: {}: the recipe header: {}", path.string(), e.what()));
  }
  data.popularity = take_list<float>(bytes, at, path);
  data.item_scores = take_list<float>(bytes, at, path);
  data.neighbors.offsets = take_list<uint64_t>(bytes, at, path);
  data.neighbors.items = take_list<uint32_t>(bytes, at, path);
  data.neighbors.scores = take_list<float>(bytes, at, path);
  if (with_latest) {
    data.latest.offsets = take_list<uint64_t>(bytes, at, path);
    data.latest.items = take_list<uint32_t>(bytes, at, path);
    data.latest.scores = take_list<float>(bytes, at, path);
  }
  if (at != bytes.size()) throw Error(fmt::format("corrupt: {}: bytes after the last list", path.string()));
  if (data.popularity.size() != num_items)
    throw Error(fmt::format("corrupt: {}: covers {} items, the model has {}", path.string(), data.popularity.size(), num_items));
  if (!data.item_scores.empty() && data.item_scores.size() != num_items)
    throw Error(fmt::format("corrupt: {}: {} item scores for {} items", path.string(), data.item_scores.size(), num_items));
  check_neighbors(data.neighbors, num_items, num_items, path);
  check_neighbors(data.latest, SIZE_MAX, num_items, path);
  return data;
}

// The dataset's events, weighted by the same --event rules and [[events]] tables as NeuMF
// training (type, value threshold, weight) when the job has any.
namespace {

// The order of each event as its basket: the interactions' categorical field named `order_field`
// (a null order: kNoBasket, no pairs), or a numerical one when the import inferred numbers.
std::vector<uint64_t> order_baskets(const datasets::Dataset& dataset, const std::string& field) {
  const datasets::Interactions& in = dataset.interactions;
  std::vector<uint64_t> basket(in.size(), kNoBasket);
  for (const auto& c : in.context) {
    if (c.name != field) continue;
    for (size_t r = 0; r < basket.size(); ++r)
      if (c.values[r] != datasets::kNullContext) basket[r] = c.values[r];
    return basket;
  }
  for (const auto& c : in.numerical) {
    if (c.name != field) continue;
    for (size_t r = 0; r < basket.size(); ++r) {
      const float v = c.values[r];
      if (std::isnan(v)) continue;
      // Stored as float: whole numbers up to 2^24 are exact, larger ones would merge orders.
      TB_CHECK(std::fabs(v) <= 16777216.0f,
               fmt::format("`order_field` {} holds numbers ({}) too large to tell orders apart as the import "
                           "stored them (float); import it as a string field (a schema with \"type\": \"string\")",
                           field, v));
      uint32_t bits;
      std::memcpy(&bits, &v, sizeof(bits));
      basket[r] = bits;
    }
    return basket;
  }
  std::vector<std::string> names;
  for (const auto& c : in.context) names.push_back(c.name);
  for (const auto& c : in.numerical) names.push_back(c.name);
  throw Error(fmt::format("`co_occurrence` order: {}: the interactions have no field `order_field` {} (their fields: {})",
                          dataset.dir.string(), field, names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", "))));
}

}  // namespace

EventLog weighted_events(const TrainPlan& plan, const datasets::Dataset& dataset) {
  EventLog events = event_log_of(dataset);
  if (!plan.event_rules.empty()) {
    const EventWeights weights(dataset, plan.split.events);
    events.weight.resize(events.user.size());
    for (uint64_t r = 0; r < events.weight.size(); ++r) events.weight[r] = weights.weight(dataset.interactions, r);
  }
  TB_CHECK(events.user.size() > 0, fmt::format("{}: no interactions to train on", plan.job.data.string()));
  if (plan.model == ModelType::kSims) {
    const RecipeOptions options = RecipeOptions::from_job(plan.job);
    if (options.co_occurrence == CoOccurrence::kOrder) events.basket = order_baskets(dataset, options.order_field);
    if (options.co_occurrence == CoOccurrence::kSession) events.basket = session_baskets(events, options.session_gap_hours);
  }
  return events;
}

namespace {

RecipeData compute_recipe(ModelType model, const EventLog& events, const RecipeOptions& options,
                          const ItemTokens& metadata) {
  RecipeData data;
  data.kind = std::string(to_string(model));
  data.popularity = popularity_scores(events, options);
  switch (model) {
    case ModelType::kPopularity: data.item_scores = data.popularity; break;
    case ModelType::kTrending: data.item_scores = trending_scores(events, options); break;
    case ModelType::kSims: data.neighbors = sims_neighbors(events, options, metadata); break;
    case ModelType::kTransitions:
      data.neighbors = transition_neighbors(events, options);
      data.latest = latest_items(events, options);
      break;
    default: break;
  }
  return data;
}

// config.json's "recipe": the options the recipe was computed with.
json recipe_json(const TrainPlan& plan, const RecipeOptions& options) {
  json recipe{{"events", plan.event_rules}, {"half_life_days", options.half_life_days},
              {"popularity_count", plan.job.popularity_count}, {"popularity_window_days", options.popularity_window_days}};
  if (!plan.job.exclude_events.empty()) {
    recipe["exclude_events"] = plan.job.exclude_events;
    recipe["exclude_latest"] = plan.job.exclude_latest;
  }
  if (plan.model == ModelType::kSims) {
    recipe["min_co_count"] = options.min_co_count;
    recipe["popularity_discount"] = options.popularity_discount;
    recipe["neighbors"] = options.neighbors;
    recipe["max_history"] = options.max_history;
    recipe["co_occurrence"] = plan.job.co_occurrence;
    if (options.co_occurrence == CoOccurrence::kOrder) recipe["order_field"] = options.order_field;
    if (options.co_occurrence == CoOccurrence::kSession) recipe["session_gap_hours"] = options.session_gap_hours;
    recipe["metadata_similarity"] = options.metadata_similarity;
  }
  if (plan.model == ModelType::kTransitions) {
    recipe["transition_window"] = options.transition_window;
    recipe["transition_decay"] = options.transition_decay;
    recipe["recent_items"] = options.recent_items;
    recipe["recent_decay"] = options.recent_decay;
    recipe["neighbors"] = options.neighbors;
  }
  if (plan.model == ModelType::kTrending) {
    recipe["trend_window_days"] = options.trend_window_days;
    recipe["trend_smoothing"] = options.trend_smoothing;
  }
  return recipe;
}

// What the log says of a computed recipe: the pairs kept, or the top five items.
void log_recipe(const TrainPlan& plan, const RecipeData& data, const EventLog& events,
                const datasets::Dataset& dataset, std::ostream& log) {
  const bool pairs = plan.model == ModelType::kSims || plan.model == ModelType::kTransitions;
  const std::vector<float>& shown = pairs ? data.popularity : data.item_scores;
  if (pairs) {
    log << fmt::format("{} pairs kept: {} ({:.1f} per item)\n",
                       plan.model == ModelType::kSims ? "related-item" : "item-to-next-item",
                       data.neighbors.items.size(),
                       static_cast<double>(data.neighbors.items.size()) / std::max<uint32_t>(events.num_items, 1));
    return;
  }
  std::vector<uint32_t> order(shown.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t top = std::min<size_t>(5, order.size());
  std::partial_sort(order.begin(), order.begin() + top, order.end(),
                    [&](uint32_t a, uint32_t b) { return shown[a] != shown[b] ? shown[a] > shown[b] : a < b; });
  std::string line = plan.model == ModelType::kTrending ? "trending now:" : "most popular:";
  for (size_t k = 0; k < top; ++k) line += fmt::format(" {} ({:.4g})", dataset.item_ids[order[k]], shown[order[k]]);
  log << line << "\n";
}

// --eval: the recipe judged (metrics.jsonl, one row) and logged beside the popularity baseline.
void judge_recipe(const TrainPlan& plan, const datasets::Dataset& dataset, const EventLog& events,
                  const RecipeOptions& options, const ItemTokens& metadata, TrainResult& result, std::ostream& log) {
  const TrainJob& job = plan.job;
  result.history.push_back(evaluate_recipe(plan, dataset, events, options, metadata, &result.popularity));
  const EpochRecord& r = result.history.back();
  nlohmann::json metrics;
  std::string line = fmt::format("{} ({}, the recipe recomputed from the training rows):", job.model, job.eval);
  std::string validation;
  for (const auto& [k, v] : r.metrics) {
    metrics[k] = v;
    if (k.starts_with("val.")) {
      if (k != "val.eval_users") validation += fmt::format("  {} {:.4f}", k, v);
    } else if (k != "eval_users") {
      line += fmt::format("  {} {:.4f}", k, v);
    }
  }
  const nlohmann::json row{{"epoch", r.epoch}, {"seconds", r.seconds}, {"samples", r.samples}, {"metrics", metrics}};
  write_file_atomically(job.out / "metrics.jsonl", row.dump() + "\n");
  log << line << "\n";
  if (r.metrics.contains("val.eval_users")) {
    log << fmt::format("validation ({} users of the training rows, the recipe recomputed without their held-out rows):{}\n",
                       static_cast<uint64_t>(r.metrics.at("val.eval_users")), validation);
  }
  if (plan.model != ModelType::kPopularity) {
    std::string baseline = "popularity count baseline:";
    for (const auto& [k, v] : result.popularity) {
      if (k != "eval_users") baseline += fmt::format("  {} {:.4f}", k, v);
    }
    log << baseline << "\n";
  }
}

}  // namespace

TrainResult train_recipe(const TrainPlan& plan, std::ostream& log) {
  const TrainJob& job = plan.job;
  const auto start = std::chrono::steady_clock::now();
  const RecipeOptions options = RecipeOptions::from_job(job);
  const datasets::Dataset dataset = datasets::Dataset::open(job.data);
  const EventLog events = weighted_events(plan, dataset);
  const ItemTokens metadata = plan.model == ModelType::kSims && options.metadata_similarity > 0
                                  ? item_tokens(dataset.items, dataset.num_items())
                                  : ItemTokens{};
  const RecipeData data = compute_recipe(plan.model, events, options, metadata);

  fs::create_directories(job.out);
  write_ids(dataset.user_ids, job.out / "user_ids.json");
  write_ids(dataset.item_ids, job.out / "item_ids.json");
  write_seen(seen_of(events), job.out / "seen.bin");
  if (!job.exclude_events.empty()) write_excluded(dataset, job.exclude_events, job.exclude_latest, job.out / "excluded.bin");
  write_recipe(data, job.out / "recipe.bin");
  const json config{{"model", job.model}, {"data", fs::absolute(job.data).string()},
                    {"recipe", recipe_json(plan, options)}, {"checksums", file_checksums(job.out)}};
  write_file_atomically(job.out / "config.json", config_file_text(config));

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log << fmt::format("trained {} on {} ({} users, {} items, {} events) in {:.1f}s\n", job.model,
                     job.data.string(), events.num_users, events.num_items, events.user.size(), seconds);
  log_recipe(plan, data, events, dataset, log);
  TrainResult result;
  result.backend = "cpu";
  if (plan.protocol != EvalProtocol::kNone) judge_recipe(plan, dataset, events, options, metadata, result, log);
  return result;
}

}  // namespace tastebud::host
