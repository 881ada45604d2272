#include "host/slate.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>

#include "cpu/topk.h"
#include "tastebud/philox.h"

namespace tastebud::host {
namespace {

bool allows(std::span<const uint8_t> mask, uint32_t i) { return mask.empty() || mask[i] != 0; }
bool marks(std::span<const uint8_t> mask, uint32_t i) { return !mask.empty() && mask[i] != 0; }

// The `count` best items by relevance among those `eligible` lets through and `taken` does not
// hold; items without a relevance score come after every scored one, by index.
template <class Eligible>
std::vector<uint32_t> best_items(const SlateRequest& r, const std::vector<uint8_t>& taken, size_t count,
                                 Eligible&& eligible) {
  thread_local std::vector<float> s;
  std::vector<uint32_t> top;
  if (count == 0) return top;
  s.resize(r.scores.size());
  for (uint32_t i = 0; i < s.size(); ++i) {
    const bool ok = !taken[i] && !marks(r.excluded, i) && eligible(i);
    s[i] = !ok ? NAN : std::isnan(r.scores[i]) ? -FLT_MAX : r.scores[i];
  }
  cpu::top_k(s, count, top);
  return top;
}

// Exploration's order: scored items first, best first; then the unscored; ties in an order drawn
// for the query (Philox of the seed and the query's key), so that over many users every
// explorable item gets its share of the slots, and one query always gets the same.
struct ExplorationOrder {
  const SlateRequest& r;
  bool scored(uint32_t i) const { return !std::isnan(r.scores[i]) && !marks(r.unscored, i); }
  uint32_t draw(uint32_t i) const { return random_words(r.seed, RandomStream::kExploration, i, r.position_key).v[0]; }
  bool operator()(uint32_t a, uint32_t b) const {
    const bool sa = scored(a), sb = scored(b);
    if (sa != sb) return sa;
    if (sa && r.scores[a] != r.scores[b]) return r.scores[a] > r.scores[b];
    const uint32_t da = draw(a), db = draw(b);
    return da != db ? da < db : a < b;
  }
};

// The `count` first explorable items in exploration's order that the request filter allows and
// `blocked` does not hold.
std::vector<uint32_t> exploration_items(const SlateRequest& r, const std::vector<uint8_t>& blocked, size_t count) {
  std::vector<uint32_t> pool;
  for (uint32_t i = 0; i < r.explorable.size(); ++i)
    if (r.explorable[i] && !blocked[i] && !marks(r.excluded, i) && allows(r.allowed, i)) pool.push_back(i);
  const size_t n = std::min(count, pool.size());
  std::partial_sort(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(n), pool.end(), ExplorationOrder{r});
  pool.resize(n);
  return pool;
}

size_t candidate_count(uint32_t k) { return std::max<size_t>(200, 4 * static_cast<size_t>(k)); }

// The relevance slots' items: the allowed candidates in blended order (relevance alone when no
// influence is set), the first `count` of them.
std::vector<uint32_t> relevance_items(const SlateRequest& r, const std::vector<uint8_t>& taken, size_t count) {
  if (!r.influence.active()) {
    std::vector<uint32_t> top = best_items(r, taken, count, [&](uint32_t i) { return allows(r.allowed, i) && !std::isnan(r.scores[i]); });
    return top;
  }
  std::vector<uint32_t> candidates = best_items(r, taken, std::max(count, candidate_count(r.k)),
                                                [&](uint32_t i) { return allows(r.allowed, i) && !std::isnan(r.scores[i]); });
  const size_t n = candidates.size();
  // The candidates come best first: R by position, equal scores sharing their mid rank.
  std::vector<double> R(n, 1.0);
  for (size_t lo = 0; lo < n && n > 1;) {
    size_t hi = lo;
    while (hi + 1 < n && r.scores[candidates[hi + 1]] == r.scores[candidates[lo]]) ++hi;
    for (size_t c = lo; c <= hi; ++c) R[c] = 1.0 - 0.5 * static_cast<double>(lo + hi) / static_cast<double>(n - 1);
    lo = hi + 1;
  }
  const double a = r.influence.popularity_weight, b = r.influence.freshness_weight, w = std::max(0.0, 1.0 - a - b);
  std::vector<double> blended(n);
  for (size_t c = 0; c < n; ++c) {
    const uint32_t i = candidates[c];
    const double P = r.influence.popularity.empty() ? 0.0 : r.influence.popularity[i];
    const double F = r.influence.freshness.empty() ? 0.0 : r.influence.freshness[i];
    blended[c] = (w * R[c] + a * P + b * F) / (w + a + b);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Ties keep the relevance order (candidates come best first).
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return blended[x] > blended[y] || (blended[x] == blended[y] && x < y); });
  std::vector<uint32_t> out;
  for (size_t c = 0; c < std::min(count, n); ++c) out.push_back(candidates[order[c]]);
  return out;
}

// `special` sorted positions among `length` slots, drawn without replacement.
std::vector<uint32_t> special_positions(const SlateRequest& r, uint32_t special, uint32_t length) {
  std::vector<uint32_t> slots(length);
  std::iota(slots.begin(), slots.end(), 0);
  for (uint32_t j = 0; j < special; ++j) {
    const Philox4 words = random_words(r.seed, RandomStream::kSlate, j, r.position_key);
    std::swap(slots[j], slots[j + uniform_below(words.v[0], length - j)]);
  }
  slots.resize(special);
  std::sort(slots.begin(), slots.end());
  return slots;
}

}  // namespace

const char* reason_name(SlotReason reason) {
  switch (reason) {
    case SlotReason::kRelevance: return nullptr;
    case SlotReason::kPromotion: return "promotion";
    case SlotReason::kExploration: return "exploration";
    case SlotReason::kPopularityFill: return "popularity fill";
  }
  return nullptr;
}

uint32_t share_slots(double fraction, uint32_t k) {
  // The epsilon keeps a product such as 0.3 * 5 = 1.4999999999999998 a half.
  return static_cast<uint32_t>(std::floor(fraction * k + 0.5 + 1e-9));
}

CatalogShare::CatalogShare(std::span<const float> scores, bool logits, std::span<const uint8_t> allowed,
                           std::span<const uint8_t> excluded)
    : logits_(logits) {
  auto counted = [&](size_t i) { return !std::isnan(scores[i]) && allows(allowed, static_cast<uint32_t>(i)) && !marks(excluded, static_cast<uint32_t>(i)); };
  if (logits_) {
    for (size_t i = 0; i < scores.size(); ++i)
      if (counted(i)) max_ = std::max(max_, static_cast<double>(scores[i]));
    if (!std::isfinite(max_)) return;
    for (size_t i = 0; i < scores.size(); ++i)
      if (counted(i)) sum_ += std::exp(static_cast<double>(scores[i]) - max_);
  } else {
    for (size_t i = 0; i < scores.size(); ++i)
      if (counted(i)) sum_ += std::max(0.0, static_cast<double>(scores[i]));
  }
}

float CatalogShare::operator()(float score) const {
  if (std::isnan(score) || !(sum_ > 0)) return 0.0f;
  const double part = logits_ ? std::exp(static_cast<double>(score) - max_) : std::max(0.0, static_cast<double>(score));
  return static_cast<float>(part / sum_);
}

std::vector<double> percentiles(std::span<const double> values) {
  const size_t n = values.size();
  std::vector<double> out(n, 1.0);
  if (n <= 1) return out;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> key(n);
  for (size_t x = 0; x < n; ++x) key[x] = std::isnan(values[x]) ? -INFINITY : values[x];
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return key[x] < key[y] || (key[x] == key[y] && x < y); });
  for (size_t lo = 0; lo < n;) {
    size_t hi = lo;
    while (hi + 1 < n && key[order[hi + 1]] == key[order[lo]]) ++hi;
    const double mid = 0.5 * static_cast<double>(lo + hi) / static_cast<double>(n - 1);
    for (size_t k = lo; k <= hi; ++k) out[order[k]] = mid;
    lo = hi + 1;
  }
  return out;
}

std::vector<SlateEntry> build_slate(const SlateRequest& r) {
  const uint32_t n = static_cast<uint32_t>(r.scores.size());
  std::vector<uint8_t> taken(n, 0);
  std::vector<SlateEntry> special;  // promoted and exploration items
  uint32_t left = r.k;
  for (size_t p = 0; p < r.promotions.size(); ++p) {
    const PromotionSlots& promo = r.promotions[p];
    const uint32_t slots = std::min(promo.slots, left);
    for (uint32_t i : best_items(r, taken, slots, [&](uint32_t i) { return allows(promo.allowed, i); })) {
      special.push_back({i, SlotReason::kPromotion, static_cast<int32_t>(p)});
      taken[i] = 1;
      --left;
    }
  }
  // The relevance order is computed once: exploration skips its first left - explore items (it
  // never takes an item relevance would have placed anyway), relevance then takes the rest.
  const std::vector<uint32_t> ordered = relevance_items(r, taken, left);
  const uint32_t explore = std::min(r.exploration_slots, left);
  if (!r.explorable.empty() && explore > 0) {
    std::vector<uint8_t> blocked = taken;
    for (size_t k = 0; k < std::min<size_t>(ordered.size(), left - explore); ++k) blocked[ordered[k]] = 1;
    for (uint32_t i : exploration_items(r, blocked, explore)) {
      special.push_back({i, SlotReason::kExploration, -1});
      taken[i] = 1;
      --left;
    }
  }
  std::vector<SlateEntry> regular;
  for (uint32_t i : ordered) {
    if (regular.size() >= left) break;
    if (taken[i]) continue;  // an exploration item
    regular.push_back({i, SlotReason::kRelevance, -1});
    taken[i] = 1;
  }
  for (uint32_t i : r.popular_order) {
    if (regular.size() >= left) break;
    if (taken[i] || marks(r.excluded, i) || !allows(r.allowed, i)) continue;
    regular.push_back({i, SlotReason::kPopularityFill, -1});
    taken[i] = 1;
  }
  // Sorted among themselves: best relevance first (unscored last, in the query's drawn order).
  std::stable_sort(special.begin(), special.end(),
                   [order = ExplorationOrder{r}](const SlateEntry& x, const SlateEntry& y) { return order(x.item, y.item); });
  const uint32_t length = static_cast<uint32_t>(special.size() + regular.size());
  const std::vector<uint32_t> positions = special_positions(r, static_cast<uint32_t>(special.size()), length);
  std::vector<SlateEntry> out;
  out.reserve(length);
  size_t s = 0, g = 0;
  for (uint32_t slot = 0; slot < length; ++slot) {
    if (s < positions.size() && positions[s] == slot) out.push_back(special[s++]);
    else out.push_back(regular[g++]);
  }
  return out;
}

}  // namespace tastebud::host
