#include "host/inference.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <numeric>
#include <optional>
#include <ostream>
#include <span>
#include <sstream>
#include <unordered_map>

#include <omp.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cpu/topk.h"
#include "host/catalog_view.h"
#include "host/query_lines.h"
#include "host/ranker.h"
#include "host/slate.h"
#include "host/use_cases.h"
#include "tastebud/atomic_file.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/gpu_scorer.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/engine/scorer.h"
#include "tastebud/engine/train_options.h"  // kMaxThreads
#include "tastebud/error.h"
#include "tastebud/loss_math.h"
#include "tastebud/read_file.h"
#include "tastebud/json_input.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr size_t kMaxAttributeItems = 100;          // items that stand for an itemAttributes query
constexpr size_t kChunkLines = 4096;                // lines answered together between writes

// The k best of many scores (NaN never selected; ties to the lower index), in index order: the
// candidates of two-stage retrieval. cpu::top_k keeps a heap, the right tool for the final 25 but
// O(n log k) when scores arrive in rising order, as a young model's GMF scores often do. Here the
// k-th best value comes from nth_element on a copy of the floats (linear, no indirection), and
// one pass collects the items above it, then the ties at it.
void select_candidates(std::span<const float> scores, size_t k, std::vector<uint32_t>& out) {
  thread_local std::vector<float> values;
  values.resize(scores.size());
  size_t n = 0;
  for (float x : scores)
    if (!std::isnan(x)) values[n++] = x;
  out.clear();
  if (k == 0) return;
  if (n <= k) {
    for (uint32_t i = 0; i < scores.size(); ++i)
      if (!std::isnan(scores[i])) out.push_back(i);
    return;
  }
  // Most of the catalog is far below the k-th value: a strided sample estimates a bound under it
  // (with a wide margin), and only the values above that bound go through nth_element. When the
  // estimate is too high to leave k values, the whole set is used: the result is exact either way.
  if (n > 16 * k && n > 8192) {
    thread_local std::vector<float> sample;
    const size_t m = 4096, stride = n / m;
    sample.resize(m);
    for (size_t j = 0; j < m; ++j) sample[j] = values[j * stride];
    const size_t rank = std::min(m - 1, 2 * (k * m / n) + 32);
    std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<float>());
    const float bound = sample[rank];
    size_t kept = 0;
    for (size_t j = 0; j < n; ++j)
      if (values[j] >= bound) values[kept++] = values[j];
    if (kept >= k) {
      n = kept;
    } else {
      n = 0;
      for (float x : scores)
        if (!std::isnan(x)) values[n++] = x;
    }
  }
  std::nth_element(values.begin(), values.begin() + (k - 1), values.begin() + n, std::greater<float>());
  const float threshold = values[k - 1];
  out.resize(k);
  size_t above = 0;
  for (uint32_t i = 0; i < scores.size(); ++i) above += scores[i] > threshold;
  size_t ties = k - above, at = 0;
  for (uint32_t i = 0; i < scores.size() && at < k; ++i) {
    if (scores[i] > threshold) {
      out[at++] = i;
    } else if (scores[i] == threshold && ties > 0) {
      out[at++] = i;
      --ties;
    }
  }
}

}  // namespace

// ---- Recommender -----------------------------------------------------------------------------------

// A user's top-K as the GPU returns it: logits, best first; item UINT32_MAX ends a short list.
struct TopK {
  std::vector<uint32_t> items;
  std::vector<float> scores;
};

constexpr const char* kContextIgnored =
    "context ignored: the model was trained without contextual fields";
constexpr const char* kMetadataOnlyUser = "user unknown to the model: scored from the user's metadata alone";
constexpr const char* kRecentOnly = "user unknown to the model: scored from the recent items";

struct Recommender::Impl {
  explicit Impl(std::shared_ptr<const ModelData> m) : shared_model(std::move(m)), model(*shared_model) {}
  std::shared_ptr<const ModelData> shared_model;  // shared with the other recommenders of the model
  const ModelData& model;
  InferenceContext context;
  InferenceOptions options;
  std::optional<Filter> filter;
  std::unordered_map<std::string, uint32_t> user_index, item_index;
  std::unique_ptr<Ranker> ranker;       // what answers (host/ranker.h)
  const UseCase* use_case = nullptr;    // the domain recommender the model is (host/use_cases.h), or null
  const Scorer* scorer = nullptr;       // the ranker's, for a neural model: two-stage, contexts
  std::vector<uint32_t> popular_order;  // by the ranker's popularity, then index
  std::unique_ptr<GpuScorer> gpu;  // --device cuda (or auto with a GPU): top-K of plain user queries
  // The job configuration's parts (prepare_job).
  std::vector<Filter> promotion_filters;  // options.job.promotions' filters
  std::vector<uint8_t> explorable;        // cold and within the age cut-off (host/slate.h)
  std::vector<uint8_t> unscored;          // items whose score exploration ignores (empty: none)
  std::vector<double> popularity_percentile, freshness_percentile;  // per item, for ranking influence
  std::vector<MetadataColumn> metadata_columns;

  uint32_t num_items() const { return static_cast<uint32_t>(model.item_ids.size()); }
  const std::vector<float>& popularity() const { return ranker->popularity(); }
  const std::vector<float>& fallback_score() const { return ranker->fallback_scores(); }
  uint32_t num_users() const { return static_cast<uint32_t>(model.user_ids.size()); }
  // What the user's answers leave out: excluded.bin's items, else seen.bin's (ModelData::exclusions).
  std::span<const uint32_t> excluded_of(uint32_t user) const {
    const SeenItems& lists = model.exclusions();
    if (lists.offsets.empty()) return {};
    return {lists.items.data() + lists.offsets[user], lists.items.data() + lists.offsets[user + 1]};
  }

  void prepare() {
    user_index = index_ids(model.user_ids);
    item_index = index_ids(model.item_ids);
    ranker = make_ranker(model);
    scorer = ranker->scorer();
    popular_order.resize(num_items());
    std::iota(popular_order.begin(), popular_order.end(), 0);
    std::stable_sort(popular_order.begin(), popular_order.end(),
                     [&](uint32_t a, uint32_t b) { return popularity()[a] > popularity()[b]; });
  }

  // ---- Answers ----

  // Items the filter lets through for this query; empty means all.
  std::vector<uint8_t> allowed_items(const Query& q) const {
    std::vector<uint8_t> allowed;
    if (!filter) return allowed;
    if (filter->selects_users())
      throw LineError("the filter selects users (UserID expressions): that is a batch-segment filter");
    std::vector<UserEvent> events;
    if (filter->uses_interactions() && q.user_id && context.user_events) events = context.user_events(*q.user_id);
    filter->evaluate(FilterQuery{q.values, events, user_of(q), item_of(q)}, allowed);
    return allowed;
  }

  int64_t user_of(const Query& q) const {
    if (!q.user_id) return -1;
    const auto it = user_index.find(*q.user_id);
    return it == user_index.end() ? int64_t{-1} : int64_t{it->second};
  }
  int64_t item_of(const Query& q) const {
    if (!q.item_id) return -1;
    const auto it = item_index.find(*q.item_id);
    return it == item_index.end() ? int64_t{-1} : int64_t{it->second};
  }

  // Popular items, best first, among the allowed ones, skipping `skip`.
  void popular(size_t k, const std::vector<uint8_t>& allowed, const std::vector<uint8_t>& skip,
               std::vector<uint32_t>& items, std::vector<float>& scores) const {
    for (uint32_t i : popular_order) {
      if (items.size() >= k) break;
      if ((!allowed.empty() && !allowed[i]) || (!skip.empty() && skip[i])) continue;
      items.push_back(i);
      scores.push_back(fallback_score()[i]);
    }
  }

  // NaN where an item may not be recommended, so that top_k never selects it.
  static void mask_scores(std::vector<float>& s, const std::vector<uint8_t>& allowed) {
    if (allowed.empty()) return;
    for (size_t i = 0; i < s.size(); ++i)
      if (!allowed[i]) s[i] = NAN;
  }

  // A user's top K; `user` -1: a session the model never saw, known by its recent items alone.
  void recommend_for_user(int64_t user, const Query& q, const std::vector<uint8_t>& allowed,
                          std::vector<uint32_t>& items, std::vector<float>& scores, std::string& reason,
                          const TopK* precomputed) const {
    if (precomputed) {  // the GPU's answer for this line (answer_chunk)
      for (size_t k = 0; k < precomputed->items.size() && items.size() < q.k; ++k) {
        if (precomputed->items[k] == UINT32_MAX) break;
        items.push_back(precomputed->items[k]);
        scores.push_back(sigmoid(precomputed->scores[k]));
      }
      return;
    }
    thread_local std::vector<float> s;
    thread_local std::vector<uint32_t> top, candidates;
    thread_local std::vector<float> candidate_scores;
    auto mask_seen = [&] { for_each_excluded(user, q.recent, [&](uint32_t i) { s[i] = NAN; }); };
    if (user >= 0 && scorer && options.candidates > 0 && options.candidates < num_items()) {
      // Two-stage: the GMF dot product over the catalog picks candidates, the full model reranks.
      s.resize(num_items());
      scorer->gmf_scores(user, s);
      mask_scores(s, allowed);
      mask_seen();
      select_candidates(s, options.candidates, candidates);
      candidate_scores.resize(candidates.size());
      scorer->score(user, candidates, candidate_scores, q.context);
      cpu::top_k(candidate_scores, q.k, top);
      for (uint32_t c : top) {
        items.push_back(candidates[c]);
        scores.push_back(sigmoid(candidate_scores[c]));
      }
      return;
    }
    user_or_recent_scores(user, q, s);
    mask_scores(s, allowed);
    mask_seen();
    cpu::top_k(s, q.k, top);
    std::optional<CatalogShare> share;  // the masked scores: the allowed catalog less seen items
    if (options.normalize_scores) share.emplace(s, ranker->scores_are_logits());
    for (uint32_t i : top) {
      items.push_back(i);
      scores.push_back(share ? (*share)(s[i]) : ranker->shown(s[i]));
    }
    if (items.size() < q.k && ranker->neighbor_lists()) {
      // The service fills a short related list with popular items; they carry no similarity.
      std::vector<uint8_t> skip(num_items(), 0);
      for (uint32_t i : items) skip[i] = 1;
      for_each_excluded(user, q.recent, [&](uint32_t i) { skip[i] = 1; });
      const size_t before = items.size();
      popular(q.k, allowed, skip, items, scores);
      std::fill(scores.begin() + before, scores.end(), 0.0f);
      if (items.size() > before) reason = "fewer related items than numResults: filled with popular items (score 0)";
    }
  }

  // A user's relevance, with the query's recent items in the history when it has some.
  void user_or_recent_scores(int64_t user, const Query& q, std::vector<float>& s) const {
    if (q.recent.empty()) ranker->user_scores(static_cast<uint32_t>(user), q.context, s);
    else ranker->recent_scores(user, q.recent, q.context, s);
  }

  // The items a query with both a userId and an itemId ("customers who viewed X also viewed")
  // leaves out: the known user's seen items and the query's recent items, unless the job keeps
  // them. Empty: none.
  std::vector<uint8_t> seen_mask(int64_t user, std::span<const uint32_t> recent = {}) const {
    std::vector<uint8_t> mask;
    if ((user < 0 && recent.empty()) || options.keep_seen) return mask;
    mask.assign(num_items(), 0);
    for_each_excluded(user, recent, [&](uint32_t i) { mask[i] = 1; });
    return mask;
  }

  // Calls f on every item the asker has taken (a known user's seen items, the query's recent
  // items), unless the job keeps them: the one rule of what a recommendation leaves out.
  template <class F>
  void for_each_excluded(int64_t user, std::span<const uint32_t> recent, F&& f) const {
    if (options.keep_seen) return;
    if (user >= 0)
      for (uint32_t i : excluded_of(static_cast<uint32_t>(user))) f(i);
    for (uint32_t i : recent) f(i);
  }

  // Items related to `item`; `user` (-1: none) asks too, and its seen items stay out.
  void related(uint32_t item, int64_t user, const Query& q, const std::vector<uint8_t>& allowed,
               std::vector<uint32_t>& items, std::vector<float>& scores, std::string& reason) const {
    thread_local std::vector<float> s;
    thread_local std::vector<uint32_t> top;
    const std::vector<uint8_t> seen = seen_mask(user, q.recent);
    if (const ItemNeighbors* lists = ranker->neighbor_lists()) {
      const ItemNeighbors& nb = *lists;
      for (uint64_t k = nb.offsets[item]; k < nb.offsets[item + 1] && items.size() < q.k; ++k) {
        if (!allowed.empty() && !allowed[nb.items[k]]) continue;
        if (!seen.empty() && seen[nb.items[k]]) continue;
        items.push_back(nb.items[k]);
        scores.push_back(nb.scores[k]);
      }
      if (items.size() < q.k) {
        std::vector<uint8_t> skip = seen.empty() ? std::vector<uint8_t>(num_items(), 0) : seen;
        skip[item] = 1;
        for (uint32_t i : items) skip[i] = 1;
        const size_t before = items.size();
        popular(q.k, allowed, skip, items, scores);
        std::fill(scores.begin() + before, scores.end(), 0.0f);
        if (items.size() > before) reason = "fewer related items than numResults: filled with popular items (score 0)";
      }
      return;
    }
    ranker->item_scores(item, s);  // e.g. the cosine of the learned item embeddings
    s[item] = NAN;
    mask_scores(s, allowed);
    for (size_t i = 0; i < seen.size(); ++i)
      if (seen[i]) s[i] = NAN;
    cpu::top_k(s, q.k, top);
    for (uint32_t i : top) {
      items.push_back(i);
      scores.push_back(s[i]);
    }
  }

  json rank(const Query& q, const std::vector<uint8_t>& allowed, std::string& reason, bool& fallback) const {
    std::vector<uint32_t> known;
    std::vector<std::string> unknown;
    for (const std::string& id : *q.item_list) {
      const auto it = item_index.find(id);
      if (it == item_index.end()) unknown.push_back(id);
      else if (allowed.empty() || allowed[it->second]) known.push_back(it->second);
    }
    std::vector<float> s(known.size());
    const auto user = user_index.find(*q.user_id);
    if (user == user_index.end() && q.recent.empty()) {
      for (size_t k = 0; k < known.size(); ++k) s[k] = fallback_score()[known[k]];
      reason = "unknown user: ranked by popularity";
      fallback = true;
    } else if (!q.recent.empty()) {
      std::vector<float> all;
      const int64_t u = user == user_index.end() ? -1 : int64_t{user->second};
      ranker->recent_scores(u, q.recent, q.context, all);
      for (size_t k = 0; k < known.size(); ++k) s[k] = std::isnan(all[known[k]]) ? 0.0f : ranker->shown(all[known[k]]);
      if (u < 0) reason = kRecentOnly;
    } else {
      ranker->rank(user->second, known, q.context, s);
      if (user->second >= model.trained_users) reason = kMetadataOnlyUser;
    }
    std::vector<size_t> order(known.size());
    std::iota(order.begin(), order.end(), 0);
    const bool by_popularity = ranker->ties_by_popularity();
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (s[a] != s[b] || !by_popularity) return s[a] > s[b];
      return popularity()[known[a]] > popularity()[known[b]];
    });
    json items = json::array(), scores = json::array();
    for (size_t k : order) {
      items.push_back(model.item_ids[known[k]]);
      scores.push_back(s[k]);
    }
    for (const std::string& id : unknown) {
      items.push_back(id);
      scores.push_back(nullptr);
    }
    return json{{"recommendedItems", std::move(items)}, {"scores", std::move(scores)}};
  }

  // ---- Answers a job configuration shapes (host/slate.h) ----

  void prepare_job() {
    const JobConfig& job = options.job;
    for (size_t p = 0; p < job.promotions.size(); ++p) {
      const std::string at = fmt::format("{}: promotions[{}].filterExpression", job.source, p);
      try {
        promotion_filters.emplace_back(job.promotions[p].filter_expression, context.catalog);
      } catch (const FilterError& e) {
        throw Error(fmt::format("{}: {}", at, e.what()));
      }
      if (promotion_filters.back().selects_users())
        throw Error(fmt::format("{}: a promotion selects items (ItemID), not users", at));
    }
    if (job.exploration_weight_or_default() > 0) prepare_exploration(job);
    if (job.popularity_influence > 0 || job.freshness_influence > 0) {
      popularity_percentile = percentiles(std::vector<double>(popularity().begin(), popularity().end()));
      std::vector<double> time = context.item_time;
      time.resize(num_items(), NAN);  // unknown ages rank oldest
      freshness_percentile = percentiles(time);
    }
    metadata_columns = find_metadata_columns(job.metadata_columns, context.catalog);
  }

  // Explorable items: cold (at most kExplorationMaxInteractions training users) and young (created
  // within the cut-off; no date: new); the cold items whose score is noise.
  void prepare_exploration(const JobConfig& job) {
    // "now" is the dataset's latest timestamp (or --now), so answers do not depend on the clock.
    const double now = context.catalog.now, cutoff = job.exploration_age_cutoff_or_default() * 86400.0;
    auto time_of = [&](uint32_t i) { return i < context.item_time.size() ? context.item_time[i] : NAN; };
    explorable.assign(num_items(), 0);
    for (uint32_t i = 0; i < num_items(); ++i) {
      const double t = time_of(i);
      const bool young = std::isnan(t) || (!std::isnan(now) && now - t <= cutoff);
      explorable[i] = young && popularity()[i] <= kExplorationMaxInteractions;
    }
    if (!ranker->scores_cold_items()) {
      unscored.assign(num_items(), 0);
      for (uint32_t i = 0; i < num_items(); ++i) unscored[i] = popularity()[i] == 0;
    }
  }

  json item_metadata(int64_t item) const { return host::item_metadata(context.catalog, metadata_columns, item); }

  static uint64_t query_key(std::string_view id, bool user) {
    uint64_t h = user ? 1469598103934665603ull : 1099511628211ull;  // FNV-1a, a different start per kind
    for (char c : id) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h;
  }

  json shaped_answer(const Query& q, bool& fallback) const {
    const JobConfig& job = options.job;
    const int64_t user = user_of(q), item = item_of(q);
    const std::vector<uint8_t> allowed = allowed_items(q);
    std::vector<float> s;
    std::vector<uint8_t> excluded;
    std::string reason;
    bool by_popularity = false;
    SlateRequest r;
    r.k = q.k;
    r.seed = options.seed;
    if (q.user_id && !q.item_id) {
      r.position_key = query_key(*q.user_id, true);
      if (user < 0 && q.recent.empty()) {
        s = fallback_score();
        reason = "unknown user: the most popular items";
        fallback = by_popularity = true;
      } else {
        user_or_recent_scores(user, q, s);
        excluded = seen_mask(user, q.recent);
        if (user >= model.trained_users) reason = kMetadataOnlyUser;
        if (user < 0) reason = kRecentOnly;
        r.exploration_slots = share_slots(job.exploration_weight_or_default(), q.k);
        r.explorable = explorable;
        r.unscored = unscored;
        r.influence = {job.popularity_influence, job.freshness_influence, popularity_percentile, freshness_percentile};
      }
    } else {
      r.position_key = query_key(*q.item_id, false);
      excluded = seen_mask(user, q.recent);  // a userId beside the itemId: the user's seen items stay out
      if (item < 0) {
        s = fallback_score();
        reason = "unknown item: the most popular items";
        fallback = by_popularity = true;
      } else {
        ranker->item_scores(static_cast<uint32_t>(item), s);
        excluded.resize(num_items(), 0);
        excluded[item] = 1;
      }
    }
    if (ranker->neighbor_lists()) r.popular_order = popular_order;
    for (size_t p = 0; p < job.promotions.size(); ++p) {
      PromotionSlots& slots = r.promotions.emplace_back();
      slots.slots = share_slots(job.promotions[p].percent / 100.0, q.k);
      std::vector<UserEvent> events;
      if (promotion_filters[p].uses_interactions() && q.user_id && context.user_events) events = context.user_events(*q.user_id);
      promotion_filters[p].evaluate(FilterQuery{job.promotions[p].filter_values, events, user, item}, slots.allowed);
    }
    r.scores = s;
    r.allowed = allowed;
    r.excluded = excluded;
    const std::vector<SlateEntry> slate = build_slate(r);
    std::optional<CatalogShare> share;
    if (options.normalize_scores && q.user_id && !q.item_id)
      share.emplace(s, !by_popularity && ranker->scores_are_logits(), allowed, excluded);
    json ids = json::array(), scores = json::array(), reasons = json::array(), names = json::array(),
         metadata = json::array();
    for (const SlateEntry& e : slate) {
      ids.push_back(model.item_ids[e.item]);
      const float x = s[e.item];
      scores.push_back(share ? (*share)(x) : std::isnan(x) ? 0.0f : by_popularity ? x : ranker->shown(x));
      const SlotReason why = by_popularity && e.reason == SlotReason::kRelevance ? SlotReason::kPopularityFill : e.reason;
      reasons.push_back(reason_name(why) ? json(reason_name(why)) : json(nullptr));
      names.push_back(e.promotion >= 0 ? json(job.promotions[e.promotion].name) : json(nullptr));
      if (!metadata_columns.empty()) metadata.push_back(item_metadata(e.item));
    }
    json out{{"recommendedItems", std::move(ids)}, {"scores", std::move(scores)}, {"reasons", std::move(reasons)}};
    if (!job.promotions.empty()) out["promotionNames"] = std::move(names);
    if (!metadata_columns.empty()) out["metadata"] = std::move(metadata);
    if (!reason.empty()) out["reason"] = reason;
    return out;
  }

  // The answer to one query, with a warning when the query carried what the model cannot use.
  json answer_query(const Query& q, bool& fallback, const TopK* precomputed = nullptr) const {
    json out = answer_query_unwarned(q, fallback, precomputed);
    if (q.context_ignored) out["warning"] = kContextIgnored;
    return out;
  }

  json answer_query_unwarned(const Query& q, bool& fallback, const TopK* precomputed) const {
    if (use_case) check_use_case_query(*use_case, q);
    if (options.job.shapes_answers() && !precomputed) {
      if (!q.item_list) return shaped_answer(q, fallback);
      json out = answer_query_plain(q, fallback, nullptr);
      if (!metadata_columns.empty()) {
        json metadata = json::array();
        for (const json& id : out["recommendedItems"]) {
          const auto it = item_index.find(id.get<std::string>());
          metadata.push_back(item_metadata(it == item_index.end() ? -1 : static_cast<int64_t>(it->second)));
        }
        out["metadata"] = std::move(metadata);
      }
      return out;
    }
    return answer_query_plain(q, fallback, precomputed);
  }

  json answer_query_plain(const Query& q, bool& fallback, const TopK* precomputed) const {
    // A precomputed top-K (the GPU's) already applied the filter.
    const std::vector<uint8_t> allowed = precomputed ? std::vector<uint8_t>() : allowed_items(q);
    std::vector<uint32_t> items;
    std::vector<float> scores;
    std::string reason;
    if (q.item_list) {
      json out = rank(q, allowed, reason, fallback);
      if (!reason.empty()) out["reason"] = reason;
      return out;
    }
    if (q.user_id && !q.item_id) {
      const auto it = user_index.find(*q.user_id);
      if (it == user_index.end() && !q.recent.empty()) {
        recommend_for_user(-1, q, allowed, items, scores, reason, nullptr);
        reason = kRecentOnly;
      } else if (it == user_index.end()) {
        popular(q.k, allowed, {}, items, scores);
        if (options.normalize_scores) {
          const CatalogShare share(fallback_score(), false, allowed);
          for (float& x : scores) x = share(x);
        }
        reason = "unknown user: the most popular items";
        fallback = true;
      } else {
        recommend_for_user(it->second, q, allowed, items, scores, reason, precomputed);
        if (it->second >= model.trained_users) reason = kMetadataOnlyUser;
      }
    } else {
      const auto it = item_index.find(*q.item_id);
      if (it == item_index.end()) {
        popular(q.k, allowed, seen_mask(user_of(q), q.recent), items, scores);
        reason = "unknown item: the most popular items";
        fallback = true;
      } else {
        related(it->second, user_of(q), q, allowed, items, scores, reason);
      }
    }
    json ids = json::array(), values = json::array();
    for (size_t k = 0; k < items.size(); ++k) {
      ids.push_back(model.item_ids[items[k]]);
      values.push_back(scores[k]);
    }
    json out{{"recommendedItems", std::move(ids)}, {"scores", std::move(values)}};
    if (!reason.empty()) out["reason"] = reason;
    return out;
  }

  std::string answer(std::string_view line, LineOutcome& result) const {
    return result_line(line, "{\"userId\": \"u1\"}", result,
                       [&](const json& input) { return answer_query(parse_query(input, options.num_results, model, item_index), result.fallback); });
  }

  // A domain recommender answers the queries the service's GetRecommendations takes for it.
  static void check_use_case_query(const UseCase& u, const Query& q) {
    const bool user = q.user_id.has_value(), item = q.item_id.has_value();
    if (q.item_list) throw LineError(fmt::format("the {} recommender answers GetRecommendations lines, not an itemList", u.name));
    if (u.query == QueryNeeds::kUser && (!user || item))
      throw LineError(fmt::format("the {} recommender answers {{\"userId\"}} lines", u.name));
    if (u.query == QueryNeeds::kItem && !item)
      throw LineError(fmt::format("the {} recommender answers {{\"itemId\"}} lines (a userId beside it is optional)", u.name));
    if (u.query == QueryNeeds::kUserAndItem && !(user && item))
      throw LineError(fmt::format("the {} recommender answers lines with both a userId and an itemId", u.name));
  }

  // ---- The GPU path ----

  // A line the GPU answers: a known user's top-K (no itemList), exact (no two-stage on the GPU).
  // The line is parsed once: the request keeps its JSON and query for the result line.
  struct GpuRequest {
    json input;
    Query query;
    uint32_t user = 0;
    std::vector<uint8_t> allowed;
  };
  // False for every other line, and for one that does not parse: the CPU path answers those (and
  // writes their errors).
  bool gpu_request(std::string_view line, GpuRequest& request) const {
    try {
      request.input = parse_line(line);
      if (!request.input.is_object()) return false;
      request.query = parse_query(request.input, options.num_results, model, item_index);
      const Query& q = request.query;
      if (!q.user_id || q.item_id || q.item_list || !q.recent.empty()) return false;
      if (options.job.shapes_answers()) return false;  // exploration, promotions, influence, metadata: the CPU
      if (options.normalize_scores) return false;      // the shares need every item's score
      const auto it = user_index.find(*q.user_id);
      if (it == user_index.end()) return false;
      request.user = it->second;
      request.allowed = allowed_items(q);
      return true;
    } catch (...) {
      return false;
    }
  }

  // Answers a chunk of lines: the GPU lines' top-K in batches of users that share a filter result
  // (seen items excluded per user), then every line formatted as on the CPU.
  void answer_chunk(std::span<const std::string> lines, std::span<std::string> answers,
                    std::span<LineOutcome> results, int workers) const {
    const int64_t n = static_cast<int64_t>(lines.size());
    if (!gpu) {
#pragma omp parallel for schedule(dynamic, 4) num_threads(workers)
      for (int64_t k = 0; k < n; ++k) answers[k] = answer(lines[k], results[k]);
      return;
    }
    std::vector<GpuRequest> requests(lines.size());
    std::vector<uint8_t> on_gpu(lines.size(), 0);
#pragma omp parallel for schedule(dynamic, 16) num_threads(workers)
    for (int64_t k = 0; k < n; ++k) on_gpu[k] = gpu_request(lines[k], requests[k]);
    // Lines grouped by their allowed items (one group without a filter).
    std::unordered_map<std::string, std::vector<size_t>> groups;
    for (size_t k = 0; k < lines.size(); ++k) {
      if (!on_gpu[k]) continue;
      const std::vector<uint8_t>& allowed = requests[k].allowed;
      groups[std::string(allowed.begin(), allowed.end())].push_back(k);
    }
    std::vector<TopK> top(lines.size());
    const uint32_t e = model.params->config.mlp_embedding();
    for (const auto& [mask, members] : groups) {
      std::vector<uint32_t> users;
      std::vector<float> contexts;
      std::vector<uint64_t> offsets{0};
      std::vector<uint32_t> exclude;
      uint32_t k_max = 1;
      bool any_context = false;
      for (size_t line : members) any_context |= !requests[line].query.context.empty();
      for (size_t line : members) {
        const GpuRequest& r = requests[line];
        users.push_back(r.user);
        k_max = std::max(k_max, r.query.k);
        if (any_context) {
          const std::vector<float>& context = r.query.context;
          if (context.empty()) contexts.resize(contexts.size() + e, 0.0f);
          else contexts.insert(contexts.end(), context.begin(), context.end());
        }
        if (!options.keep_seen) {
          const auto seen = excluded_of(r.user);
          exclude.insert(exclude.end(), seen.begin(), seen.end());
        }
        offsets.push_back(exclude.size());
      }
      if (options.keep_seen) offsets.clear();
      std::vector<uint32_t> items(users.size() * k_max);
      std::vector<float> scores(users.size() * k_max);
      const std::span<const uint8_t> allowed(reinterpret_cast<const uint8_t*>(mask.data()), mask.size());
      gpu->top_k(users, contexts, offsets, exclude, allowed, k_max, items, scores);
      for (size_t u = 0; u < members.size(); ++u) {
        TopK& t = top[members[u]];
        t.items.assign(items.begin() + u * k_max, items.begin() + (u + 1) * k_max);
        t.scores.assign(scores.begin() + u * k_max, scores.begin() + (u + 1) * k_max);
      }
    }
#pragma omp parallel for schedule(dynamic, 4) num_threads(workers)
    for (int64_t k = 0; k < n; ++k) {
      if (!on_gpu[k]) {
        answers[k] = answer(lines[k], results[k]);
        continue;
      }
      answers[k] = answered_line(std::move(requests[k].input), results[k], [&](const json&) {
        return answer_query(requests[k].query, results[k].fallback, &top[k]);
      });
    }
  }

  // ---- Segments ----

  std::string segment(std::string_view line, uint32_t default_k, LineOutcome& result) const {
    return result_line(line, "{\"itemId\": \"i1\"}", result, [&](const json& input) {
      const auto item_id = string_field(input, "itemId");
      const auto attributes = string_field(input, "itemAttributes");
      if (!item_id && !attributes) throw LineError("the query names neither an itemId nor itemAttributes");
      if (item_id && attributes) throw LineError("give an itemId or itemAttributes, not both");
      const uint32_t k = num_results_of(input, default_k, std::max<uint32_t>(num_users(), 1));
      std::vector<uint32_t> items;
      if (item_id) {
        const auto it = item_index.find(*item_id);
        if (it == item_index.end())
          throw LineError(fmt::format("item '{}' is not in the model; a new item reaches users through itemAttributes", *item_id));
        items.push_back(it->second);
      } else {
        const std::vector<uint8_t> mask = match_item_attributes(*attributes, context.catalog);
        for (uint32_t i : popular_order) {
          if (items.size() >= kMaxAttributeItems) break;
          if (mask[i]) items.push_back(i);
        }
        if (items.empty()) throw LineError("no item of the model has these attributes");
      }
      std::vector<float> affinity;
      ranker->user_affinity(items, affinity);
      if (filter) {  // UserID expressions: the users it lets through
        if (!filter->selects_users())
          throw LineError("the filter selects items (ItemID expressions): that is a batch-infer filter");
        FilterValues values;
        if (const auto it = input.find("filterValues"); it != input.end() && it->is_object())
          for (auto v = it->begin(); v != it->end(); ++v)
            if (v.value().is_string()) values[v.key()] = v.value().get<std::string>();
        std::vector<uint8_t> allowed;
        filter->evaluate(FilterQuery{values, {}, -1, item_id ? static_cast<int64_t>(items[0]) : -1}, allowed);
        for (uint32_t u = 0; u < num_users(); ++u)
          if (!allowed[u]) affinity[u] = NAN;
      }
      if (item_id && !options.keep_seen) {
        // Users who already interacted with the item are not a segment to reach.
        for (uint32_t u = 0; u < num_users(); ++u) {
          const auto seen = excluded_of(u);
          if (std::binary_search(seen.begin(), seen.end(), items[0])) affinity[u] = NAN;
        }
      }
      std::vector<uint32_t> top;
      cpu::top_k(affinity, k, top);
      json users = json::array();
      for (uint32_t u : top) users.push_back(model.user_ids[u]);
      return json{{"recommendedUsers", std::move(users)}};
    });
  }
};

Recommender::Recommender(ModelData model, InferenceContext context, InferenceOptions options)
    : Recommender(std::make_shared<const ModelData>(std::move(model)), std::move(context), std::move(options)) {}

Recommender::Recommender(std::shared_ptr<const ModelData> model, InferenceContext context, InferenceOptions options)
    : impl_(std::make_unique<Impl>(std::move(model))) {
  TB_CHECK(options.num_results >= 1 && options.num_results <= kMaxResults,
           fmt::format("--num-results must be from 1 to {}", kMaxResults));
  impl_->context = std::move(context);
  impl_->options = std::move(options);
  if (impl_->context.catalog.item_ids.empty()) impl_->context.catalog.item_ids = impl_->model.item_ids;
  TB_CHECK(impl_->context.catalog.num_items() == impl_->model.item_ids.size(),
           "inference: the catalog and the model list different items");
  if (impl_->options.candidates > 0 && !(impl_->model.params && impl_->model.params->config.has_gmf()))
    throw Error("--candidates: two-stage retrieval ranks candidates by the GMF branch; this model has none");
  if (impl_->options.candidates > 0 && impl_->options.normalize_scores)
    throw Error("`normalize_scores`: a share of the catalog needs every item's score, and two-stage retrieval "
                "(`candidates`) scores only its candidates");
  if (!std::isnan(impl_->options.now)) impl_->context.catalog.now = impl_->options.now;
  if (!impl_->options.filter.empty()) impl_->filter.emplace(impl_->options.filter, impl_->context.catalog);
  impl_->use_case = use_case_named(impl_->model.use_case);
  // A use case that explores new items (recommended-for-you) does so unless a job configuration or
  // flag says otherwise, with the service's default age cut-off.
  if (impl_->use_case && impl_->use_case->exploration_weight > 0 && !impl_->options.job.exploration_weight)
    impl_->options.job.exploration_weight = impl_->use_case->exploration_weight;
  impl_->prepare();
  impl_->prepare_job();
  if (impl_->options.device == "cuda" && impl_->model.params) {
    impl_->gpu = std::make_unique<GpuScorer>(*impl_->model.params);
  }
}

std::string Recommender::device() const {
  return impl_->gpu ? impl_->gpu->describe() : std::string("the cpu");
}

void Recommender::answer_chunk(std::span<const std::string> lines, std::span<std::string> answers,
                               std::span<LineOutcome> outcomes, int workers) const {
  impl_->answer_chunk(lines, answers, outcomes, workers);
}

Recommender::~Recommender() = default;

const ModelData& Recommender::model() const { return impl_->model; }
std::shared_ptr<const ModelData> Recommender::shared_model() const { return impl_->shared_model; }

bool Recommender::personalized() const { return impl_->ranker->answers_segments(); }

std::string Recommender::answer(std::string_view line, LineOutcome* outcome) const {
  LineOutcome ignored;
  return impl_->answer(line, outcome ? *outcome : ignored);
}

std::string Recommender::segment(std::string_view line, uint32_t default_num_results, LineOutcome* outcome) const {
  LineOutcome ignored;
  return impl_->segment(line, default_num_results, outcome ? *outcome : ignored);
}

// ---- Jobs ----------------------------------------------------------------------------------------

namespace {

std::ifstream open_input(const fs::path& input) {
  std::ifstream in(input, std::ios::binary);
  if (!in) throw Error(fmt::format("--input {}: cannot open: {}", input.string(), std::strerror(errno)));
  return in;
}

// chunk(lines, answers, results, workers) answers one chunk of lines.
template <typename ChunkFn>
BatchStats run_lines(const fs::path& input, const fs::path& output, uint32_t threads, ChunkFn&& chunk,
                     const std::function<void(uint64_t, uint64_t, uint64_t)>& on_progress = {}) {
  const auto start = std::chrono::steady_clock::now();
  TB_CHECK(threads <= kMaxThreads, fmt::format("--threads must be from 0 (all cores) to {}, not {}", kMaxThreads, threads));
  // Several ranks: every rank reads the input, answers its contiguous share of each chunk, and
  // rank 0 gathers the answers in rank order (input order) and writes the one output file.
  Communicator& comm = world_communicator();
  std::ifstream in = open_input(input);
  std::optional<AtomicFile> out;
  if (comm.root()) {
    remove_stale_temporaries(output.has_parent_path() ? output.parent_path() : fs::path("."));
    out.emplace(output);
  }
  BatchStats stats;
  std::vector<std::string> lines, answers;
  std::vector<LineOutcome> results;
  const int workers = threads > 0 ? static_cast<int>(threads) : omp_get_max_threads();
  std::string line;
  bool more = true;
  while (more) {
    lines.clear();
    while (lines.size() < kChunkLines && (more = static_cast<bool>(std::getline(in, line)))) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!blank(line)) lines.push_back(line);
    }
    const auto [first, last] = rank_slice(lines.size(), comm.rank(), comm.size());
    const int64_t n = static_cast<int64_t>(last - first);
    answers.assign(n, std::string());
    results.assign(n, LineOutcome{});
    chunk(std::span<const std::string>(lines).subspan(first, n), std::span<std::string>(answers),
          std::span<LineOutcome>(results), workers);
    std::string text;
    for (int64_t k = 0; k < n; ++k) {
      text += answers[k];
      text += '\n';
      stats.errors += results[k].error;
      stats.fallbacks += results[k].fallback;
    }
    if (comm.size() > 1) text = gather_text(comm, text);
    if (out) out->write(text);
    stats.lines += lines.size();
    if (on_progress && comm.root()) {  // input bytes read, of its size (0 for a pipe: unknown)
      std::error_code no_size;
      const uint64_t size = fs::is_regular_file(input, no_size) ? fs::file_size(input, no_size) : 0;
      const std::streamoff at = more ? static_cast<std::streamoff>(in.tellg()) : -1;
      on_progress(at < 0 ? size : static_cast<uint64_t>(at), size, stats.lines);
    }
  }
  if (in.bad()) throw Error(fmt::format("--input {}: read failed", input.string()));
  if (comm.size() > 1) {
    double counts[2] = {static_cast<double>(stats.errors), static_cast<double>(stats.fallbacks)};
    comm.allreduce_sum(counts);
    stats.errors = static_cast<uint64_t>(counts[0]);
    stats.fallbacks = static_cast<uint64_t>(counts[1]);
  }
  if (out) out->commit();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

// auto: the GPU when one answers, else the CPU (with the reason in `notice`); cuda without a GPU
// is an error that says why.
std::string resolve_device(const std::string& device, std::string* notice) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw Error(fmt::format("unknown --device '{}': expected auto, cpu or cuda", device));
  if (device == "cpu") return "cpu";
  std::string reason;
  if (gpu_scorer_available(&reason)) return "cuda";
  if (device == "cuda") throw Error("--device cuda: " + reason);
  *notice = reason + ", so scoring on the CPU";
  return "cpu";
}

// The service's folder layout: every NAME.json of the input folder answered into
// output/NAME.json.out; or the one file. `job(input, output)` answers one file.
template <typename JobFn>
BatchStats run_files(const fs::path& input, const fs::path& output, JobFn&& job) {
  if (!fs::is_directory(input)) return job(input, output);
  if (fs::exists(output) && !fs::is_directory(output))
    throw Error(fmt::format("--output {}: --input is a folder, so the output must be a folder too", output.string()));
  std::vector<fs::path> files;
  for (const fs::directory_entry& e : fs::directory_iterator(input))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(fmt::format("--input {}: the folder holds no .json file", input.string()));
  if (world_communicator().root()) fs::create_directories(output);
  world_communicator().barrier();
  BatchStats total;
  for (const fs::path& file : files) {
    const BatchStats s = job(file, output / (file.filename().string() + ".out"));
    total.lines += s.lines;
    total.errors += s.errors;
    total.fallbacks += s.fallbacks;
    total.seconds += s.seconds;
  }
  return total;
}

void print_stats(std::ostream& log, const char* job, const BatchStats& s, const fs::path& output) {
  log << fmt::format("{}: {} lines ({} errors, {} fallbacks) in {:.2f}s, {:.0f} lines/s -> {}\n", job, s.lines,
                     s.errors, s.fallbacks, s.seconds, s.lines / std::max(s.seconds, 1e-9), output.string());
}

}  // namespace

BatchStats run_batch_infer(const Recommender& recommender, const fs::path& input, const fs::path& output,
                           uint32_t threads, const std::function<void(uint64_t, uint64_t, uint64_t)>& on_progress) {
  return run_files(input, output, [&](const fs::path& in, const fs::path& out) {
    return run_lines(in, out, threads,
                     [&](std::span<const std::string> lines, std::span<std::string> answers,
                         std::span<LineOutcome> results, int workers) {
                       recommender.answer_chunk(lines, answers, results, workers);
                     }, on_progress);
  });
}

BatchStats run_batch_segment(const Recommender& recommender, const fs::path& input, const fs::path& output,
                             uint32_t num_results, uint32_t threads) {
  TB_CHECK(recommender.personalized(),
           fmt::format("batch-segment needs a personalized model (neumf, gmf, mlp or sims), not {}",
                       to_string(recommender.model().kind)));
  TB_CHECK(num_results >= 1, "--num-results must be positive");
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  // Lines one at a time: each segment already scores every user in parallel.
  return run_files(input, output, [&](const fs::path& in, const fs::path& out) {
    return run_lines(in, out, threads,
                     [&](std::span<const std::string> lines, std::span<std::string> answers,
                         std::span<LineOutcome> results, int) {
                       for (size_t k = 0; k < lines.size(); ++k) answers[k] = recommender.segment(lines[k], num_results, &results[k]);
                     });
  });
}

BatchStats batch_infer(const fs::path& model_dir, const fs::path& input, const fs::path& output,
                       const InferenceOptions& options, std::ostream& log) {
  check_output_apart(output, model_dir, input, "--output");
  InferenceOptions resolved = options;
  std::string notice;
  resolved.device = resolve_device(options.device, &notice);
  if (!options.filter.empty()) {  // fail before loading anything
    check_filter_syntax(options.filter);
    if (filter_selects_users(options.filter))
      throw Error("--filter: UserID expressions select users, for batch-segment; batch-infer filters items (INCLUDE|EXCLUDE ItemID ...)");
  }
  ModelData model = load_model_dir(model_dir);
  fs::path data;
  if (!options.filter.empty()) {
    if (model.data.empty() || !fs::exists(model.data))
      throw Error(fmt::format("--filter reads item metadata and events from the dataset the model was "
                              "trained on, {}, which is missing",
                              model.data.empty() ? "(not recorded)" : model.data.string()));
    data = model.data;
  }
  // Item ages, popularity, promotion filters and metadata columns read the dataset too; without
  // it, items without interactions count as new and metadata columns are an error.
  if (options.job.shapes_answers() && !model.data.empty() && fs::exists(model.data)) data = model.data;
  InferenceContext context = load_context(model, data);
  const ModelType kind = model.kind;
  // Only the NeuMF family scores on the GPU; recipes answer from tables, sasrec on the host's encoder.
  const bool on_host = !neural_kind(kind).has_value();
  if (on_host) resolved.device = "cpu";
  if (!notice.empty() && !on_host) log << notice << "\n";
  const Recommender recommender(std::move(model), std::move(context), resolved);
  log << fmt::format("batch-infer: {} model, {} users, {} items, {} on {}{}{}\n", to_string(kind),
                     recommender.model().user_ids.size(), recommender.model().item_ids.size(),
                     resolved.device == "cuda" ? "exact top-k (user queries)"
                     : options.candidates > 0 ? fmt::format("two-stage ({} candidates)", options.candidates)
                                              : "exact top-k",
                     recommender.device(), options.filter.empty() ? "" : ", filter: ", options.filter);
  const BatchStats stats = run_batch_infer(recommender, input, output, options.threads, options.on_progress);
  print_stats(log, "batch-infer", stats, output);
  return stats;
}

BatchStats batch_segment(const fs::path& model_dir, const fs::path& input, const fs::path& output,
                         uint32_t num_results, bool keep_seen, uint32_t threads, std::ostream& log,
                         const std::string& filter) {
  check_output_apart(output, model_dir, input, "--output");
  if (!filter.empty()) {
    check_filter_syntax(filter);
    if (!filter_selects_users(filter))
      throw Error("--filter: batch-segment filters users (INCLUDE|EXCLUDE UserID WHERE Users.<field> ...)");
  }
  ModelData model = load_model_dir(model_dir);
  const fs::path data = !model.data.empty() && fs::exists(model.data) ? model.data : fs::path();
  InferenceContext context = load_context(model, data);
  InferenceOptions options;
  options.keep_seen = keep_seen;
  options.threads = threads;
  options.filter = filter;
  const Recommender recommender(std::move(model), std::move(context), options);
  const BatchStats stats = run_batch_segment(recommender, input, output, num_results, threads);
  print_stats(log, "batch-segment", stats, output);
  return stats;
}

}  // namespace tastebud::host
