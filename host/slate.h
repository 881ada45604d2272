// One result's slots when a job configuration shapes answers (issue 14, host/job_config.h):
// promotions, exploration and ranking influence on top of the model's relevance.
//
// For a result of K slots:
//   1. each promotion, in the configuration's order, takes share_slots(percent / 100, K) slots:
//      its best items by relevance among those passing its own filter (the request filter does
//      not apply to them, as in the service), seen items removed, none twice;
//   2. exploration takes share_slots(weight, K) slots (fewer when promotions left fewer) from the
//      explorable items (below) that the request filter allows, no earlier slot took and relevance
//      would not place anyway: first those the model scores, best first, then the unscored ones
//      (NaN, or `unscored`: an id-only model's row for an item it never trained on is noise);
//      equal scores and the unscored items in an order drawn for the query (Philox stream
//      kExploration, the seed and the query's key: every unscored item gets its share over many
//      users; the same query the same items);
//   3. relevance fills the other slots from the candidates in blended order (ranking influence);
//      when the allowed items run out, popular items fill the rest ("popularity fill"); a slot a
//      promotion or exploration could not fill goes to relevance.
// share_slots rounds half up: round(0.3 * 5) = 2, round(0.3 * 10) = 3, round(0.2 * 4) = 1.
// The promoted and exploration items then sit at positions drawn from Philox (stream kSlate, the
// job's seed and a key of the query), in sorted order among themselves (best relevance first), as
// the service places promoted items: random relative to the other items, sorted among each other.
// The same seed and query always give the same result, whatever the threads or line order.
//
// Explorable (the caller's `explorable`, host/inference.cpp): the service explores "items with
// less interaction data", limited by the age cut-off to items newer than it. So an item is
// explorable when it is cold AND young: cold, when at most kExplorationMaxInteractions training
// users interacted with it (host/job_config.h says why that count); young, when created
// (CREATION_TIMESTAMP, else its first interaction) within explorationItemAgeCutOff days of the
// dataset's latest interaction; an item with no date at all counts as new. Not OR: a young item
// many users took is what relevance already shows, and an old cold item is what the cut-off is
// there to leave out.
//
// Ranking influence (POPULARITY a, FRESHNESS b, each 0..1) reorders the relevance slots over the
// candidates (the allowed items with the best max(200, 4 K) relevance scores: influence reorders
// the head of the ranking, it does not lift an irrelevant item from the tail):
//   blended = (w * R + a * P + b * F) / (w + a + b),  w = max(0, 1 - a - b)
// where R is the candidate's percentile among the candidates by relevance, and P and F the item's
// percentiles in the catalog by popularity (training interactions) and by freshness (item age:
// CREATION_TIMESTAMP, else the first interaction; unknown age ranks oldest), computed once per
// job; percentiles run from 0 (worst) to 1 (best), ties at their mid rank.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace tastebud::host {

enum class SlotReason : uint8_t { kRelevance, kPromotion, kExploration, kPopularityFill };
// null for kRelevance; "promotion", "exploration", "popularity fill".
const char* reason_name(SlotReason reason);

struct SlateEntry {
  uint32_t item = 0;
  SlotReason reason = SlotReason::kRelevance;
  int32_t promotion = -1;  // index into the job's promotions, or -1
};

// round(fraction * k), halves up.
uint32_t share_slots(double fraction, uint32_t k);

struct PromotionSlots {
  uint32_t slots = 0;
  std::vector<uint8_t> allowed;  // the promotion's own filter (empty: every item)
};

struct RankingSignals {
  double popularity_weight = 0, freshness_weight = 0;
  std::span<const double> popularity;  // per item: its popularity percentile in the catalog
  std::span<const double> freshness;   // per item: its freshness percentile in the catalog
  bool active() const { return popularity_weight > 0 || freshness_weight > 0; }
};

struct SlateRequest {
  uint32_t k = 25;
  std::span<const float> scores;       // relevance per item; NaN: none (ranks below every score)
  std::span<const uint8_t> allowed;    // the request filter (empty: every item)
  std::span<const uint8_t> excluded;   // never in the result: seen items, the query's item (empty: none)
  std::vector<PromotionSlots> promotions;
  uint32_t exploration_slots = 0;
  std::span<const uint8_t> explorable;   // per item (empty: none)
  std::span<const uint8_t> unscored;     // per item: its score says nothing (empty: every score counts)
  RankingSignals influence;
  std::span<const uint32_t> popular_order;  // fills a short list (empty: no fill)
  uint64_t seed = 0;
  uint64_t position_key = 0;  // the query's key for the positions' draws
};

std::vector<SlateEntry> build_slate(const SlateRequest& request);

// The service's scale for personalized answers: an item's share of the scores of every item
// counted (allowed, or `allowed` empty, and not `excluded`), so the shares of the whole catalog
// sum to 1. Logits: their softmax, exp(x - max) / Σ exp(x - max); other scores (counts, sums):
// max(x, 0) / Σ max(x, 0). NaN counts 0; when nothing counted is above 0 every share is 0.
class CatalogShare {
 public:
  CatalogShare(std::span<const float> scores, bool logits, std::span<const uint8_t> allowed = {},
               std::span<const uint8_t> excluded = {});
  float operator()(float score) const;

 private:
  bool logits_;
  double max_ = -INFINITY, sum_ = 0;
};

// Percentiles of `values` in [0, 1] (the largest 1, the smallest 0, ties at their mid rank, NaN
// below everything); a single value is 1.
std::vector<double> percentiles(std::span<const double> values);

}  // namespace tastebud::host
