// The negative sampler's rules, shared by both backends: which random words a draw uses, how a
// candidate is picked (uniform or alias table) and when it is rejected.
#pragma once

#include <cstdint>

#include "tastebud/hd.h"
#include "tastebud/philox.h"

namespace tastebud {

inline constexpr uint32_t kMaxNegativeTries = 32;

// True when x is in the sorted range [begin, begin + count).
TASTEBUD_HD bool contains_sorted(const uint32_t* begin, uint64_t count, uint32_t x) {
  uint64_t lo = 0, hi = count;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (begin[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo < count && begin[lo] == x;
}

// Attempt `attempt` of draw `draw_index`: two 32-bit words. Each block of four Philox words
// serves two attempts; the block number sits in the counter's top 16 bits, so draw indices below
// 2^47 never share words.
TASTEBUD_HD void attempt_words(uint64_t seed, RandomStream stream, uint32_t epoch,
                               uint64_t draw_index, uint32_t attempt, uint32_t* w0, uint32_t* w1) {
  const Philox4 words =
      random_words(seed, stream, epoch, (draw_index << 1 | (attempt & 1u)) ^ (static_cast<uint64_t>(attempt >> 1) << 48));
  *w0 = words.v[0];
  *w1 = words.v[1];
}

// A candidate item: uniform over [0, num_items) when alias_prob is null, else from the alias
// table (Walker/Vose): column from w0, coin from w1.
TASTEBUD_HD uint32_t candidate_item(uint32_t w0, uint32_t w1, uint32_t num_items,
                                    const float* alias_prob, const uint32_t* alias_index) {
  const uint32_t column = uniform_below(w0, num_items);
  if (alias_prob == nullptr) return column;
  return uniform_unit(w1) < alias_prob[column] ? column : alias_index[column];
}

// A negative for a user whose positives are the sorted range [positives, positives + count):
// candidates are drawn until one is not a positive, at most kMaxNegativeTries times; the last
// candidate is kept when every try hit a positive (only users who touched nearly the whole
// catalog get there).
TASTEBUD_HD uint32_t draw_negative(uint64_t seed, RandomStream stream, uint32_t epoch,
                                   uint64_t draw_index, const uint32_t* positives, uint64_t count,
                                   uint32_t num_items, const float* alias_prob,
                                   const uint32_t* alias_index) {
  uint32_t item = 0;
  for (uint32_t attempt = 0; attempt < kMaxNegativeTries; ++attempt) {
    uint32_t w0, w1;
    attempt_words(seed, stream, epoch, draw_index, attempt, &w0, &w1);
    item = candidate_item(w0, w1, num_items, alias_prob, alias_index);
    if (!contains_sorted(positives, count, item)) return item;
  }
  return item;
}

// A training negative: with probability `impression_share` (when the user has any) one of the
// items the user was shown and did not act on, drawn uniformly from the sorted list
// [impressions, impressions + impression_count); otherwise draw_negative. *from_impression says
// which. Impression lists never hold a positive of the user, so neither path returns one.
TASTEBUD_HD uint32_t draw_training_negative(uint64_t seed, uint32_t epoch, uint64_t draw_index,
                                            const uint32_t* positives, uint64_t count,
                                            uint32_t num_items, const float* alias_prob,
                                            const uint32_t* alias_index,
                                            const uint32_t* impressions, uint64_t impression_count,
                                            float impression_share, bool* from_impression) {
  if (impression_count > 0 && impression_share > 0.0f) {
    const Philox4 words = random_words(seed, RandomStream::kImpressions, epoch, draw_index);
    if (uniform_unit(words.v[0]) < impression_share) {
      *from_impression = true;
      return impressions[uniform_below(words.v[1], static_cast<uint32_t>(impression_count))];
    }
  }
  *from_impression = false;
  return draw_negative(seed, RandomStream::kNegatives, epoch, draw_index, positives, count,
                       num_items, alias_prob, alias_index);
}

// The shuffle key of positive p in an epoch: positives are visited in (key, p) order.
TASTEBUD_HD uint64_t shuffle_key(uint64_t seed, uint32_t epoch, uint64_t p) {
  const Philox4 words = random_words(seed, RandomStream::kShuffle, epoch, p);
  return (static_cast<uint64_t>(words.v[0]) << 32) | words.v[1];
}

// Position i of an epoch of `count` samples visits sample sample_at(seed, epoch, count, i): a
// bijection of [0, count) drawn afresh each epoch, so a positive's negatives land in other batches
// as a notebook's shuffle of all samples puts them, without sorting count keys. A four-round
// Feistel network over the smallest even-width power of two >= count, Philox as its round
// function, and cycle walking back into [0, count) (fewer than four passes on average).
TASTEBUD_HD uint64_t feistel_permute(uint64_t seed, uint32_t epoch, uint32_t half_bits, uint64_t x) {
  const uint64_t mask = (uint64_t{1} << half_bits) - 1;
  uint64_t left = x >> half_bits, right = x & mask;
  for (uint32_t round = 0; round < 4; ++round) {
    const Philox4 words = random_words(seed, RandomStream::kSampleOrder, epoch, (uint64_t{round} << 56) | right);
    const uint64_t f = (static_cast<uint64_t>(words.v[1]) << 32 | words.v[0]) & mask;
    const uint64_t next = left ^ f;
    left = right;
    right = next;
  }
  return left << half_bits | right;
}

TASTEBUD_HD uint64_t sample_at(uint64_t seed, uint32_t epoch, uint64_t count, uint64_t i) {
  if (count < 2) return i;
  uint32_t bits = 1;
  while (bits < 64 && (count - 1) >> bits != 0) ++bits;
  const uint32_t half_bits = (bits + 1) / 2;
  uint64_t x = i;
  do x = feistel_permute(seed, epoch, half_bits, x); while (x >= count);
  return x;
}

}  // namespace tastebud
