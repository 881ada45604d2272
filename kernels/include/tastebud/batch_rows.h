// How an epoch's samples become the rows of a batch: the rule both backends fill their batches
// by (CpuBackend::fill_rows, cuda::fill_rows_kernel), written once.
//
// An epoch has `per_positive` samples per positive. Position i of the epoch holds sample
// s = sample_at(seed, epoch, samples, i) (sampler_math.h: a Philox-keyed permutation of all the
// epoch's samples, so a positive and its negatives fall in different batches); sample s belongs
// to positive order[s / per_positive] (the shuffle-key order) and is its slot
// k = s % per_positive. BCE: slot 0 is the
// positive's own row (label 1, the positive's weight), slot k > 0 its negative k - 1 (label 0,
// weight 1), one row per sample. BPR: slot k is the pair (positive, negative k), rows 2s and
// 2s + 1, both with the positive's weight. Negative j of positive p is draw p * negatives + j of
// draw_training_negative, whatever the batch or the loss.
#pragma once

#include <cstdint>

#include "tastebud/hd.h"
#include "tastebud/sampler_math.h"

namespace tastebud {

// The training positives as both backends' samplers read them (host or device pointers), sorted
// by (user, item) as in TrainingSet.
struct PositivesView {
  const uint32_t* user = nullptr;
  const uint32_t* item = nullptr;
  const float* weight = nullptr;
  const uint64_t* user_offsets = nullptr;  // num_users + 1
  uint32_t num_items = 0;
  // The popularity sampler's alias table; both null for the uniform sampler.
  const float* alias_probability = nullptr;
  const uint32_t* alias_index = nullptr;
  // Items each user was shown and never acted on, sorted: user u's are
  // impression_items[impression_offsets[u] .. impression_offsets[u + 1]). Null offsets: none.
  const uint64_t* impression_offsets = nullptr;
  const uint32_t* impression_items = nullptr;
  float impression_share = 0.0f;
  // How many positives (user_offsets[num_users]): the epoch's sample permutation spans
  // samples_per_epoch(count, ...).
  uint64_t count = 0;
};

// What decides an epoch's samples besides the data.
struct SampleSpec {
  uint64_t seed = 1;
  uint32_t epoch = 0;
  uint32_t negatives = 0;
  bool bpr = false;
};

TASTEBUD_HD uint32_t samples_per_positive(uint32_t negatives, bool bpr) { return bpr ? negatives : 1 + negatives; }

// Samples (BCE rows or BPR pairs) in one epoch.
TASTEBUD_HD uint64_t samples_per_epoch(uint64_t positives, uint32_t negatives, bool bpr) {
  return positives * samples_per_positive(negatives, bpr);
}

// Batch rows per sample: 1 for BCE, 2 (the pair) for BPR.
TASTEBUD_HD uint32_t rows_per_sample(bool bpr) { return bpr ? 2u : 1u; }

// Where fill_sample writes; `positives` (the positive each row came from, the entity of its
// context) may be null.
struct BatchRowsOut {
  uint32_t* users = nullptr;
  uint32_t* items = nullptr;
  float* labels = nullptr;
  float* weights = nullptr;
  uint32_t* positives = nullptr;
};

// Negative j of `positive` (user `user`): from the user's impressions or the sampler.
TASTEBUD_HD uint32_t training_negative(const SampleSpec& spec, const PositivesView& pos, uint32_t user,
                                       uint64_t positive, uint32_t j, bool* from_impression) {
  const uint64_t begin = pos.user_offsets[user];
  const uint64_t count = pos.user_offsets[user + 1] - begin;
  const bool has_impressions = pos.impression_offsets != nullptr;
  const uint64_t shown = has_impressions ? pos.impression_offsets[user] : 0;
  const uint64_t shown_count = has_impressions ? pos.impression_offsets[user + 1] - shown : 0;
  return draw_training_negative(spec.seed, spec.epoch, positive * spec.negatives + j, pos.item + begin, count,
                                pos.num_items, pos.alias_probability, pos.alias_index,
                                shown_count > 0 ? pos.impression_items + shown : nullptr, shown_count,
                                pos.impression_share, from_impression);
}

// Fills the rows of batch sample s, which is epoch sample `sample` (sample_at of its position);
// returns 1 when its negative came from the user's impressions, else 0. Order: the positives'
// visiting order (uint32_t or uint64_t).
template <class Order>
TASTEBUD_HD uint32_t fill_sample_of(const SampleSpec& spec, const PositivesView& pos, const Order* order,
                                    uint64_t sample, uint64_t s, const BatchRowsOut& out) {
  const uint32_t per_positive = samples_per_positive(spec.negatives, spec.bpr);
  const uint64_t positive = order[sample / per_positive];
  const uint32_t k = static_cast<uint32_t>(sample % per_positive);
  const uint32_t user = pos.user[positive];
  bool from_impression = false;
  if (spec.bpr) {
    const uint64_t r = 2 * s;
    out.users[r] = out.users[r + 1] = user;
    out.items[r] = pos.item[positive];
    out.items[r + 1] = training_negative(spec, pos, user, positive, k, &from_impression);
    out.labels[r] = 1.0f;
    out.labels[r + 1] = 0.0f;
    out.weights[r] = out.weights[r + 1] = pos.weight[positive];
    if (out.positives != nullptr) out.positives[r] = out.positives[r + 1] = static_cast<uint32_t>(positive);
  } else {
    out.users[s] = user;
    out.items[s] = k == 0 ? pos.item[positive] : training_negative(spec, pos, user, positive, k - 1, &from_impression);
    out.labels[s] = k == 0 ? 1.0f : 0.0f;
    out.weights[s] = k == 0 ? pos.weight[positive] : 1.0f;
    if (out.positives != nullptr) out.positives[s] = static_cast<uint32_t>(positive);
  }
  return from_impression ? 1u : 0u;
}

// fill_sample_of batch sample s at epoch position first + s.
template <class Order>
TASTEBUD_HD uint32_t fill_sample(const SampleSpec& spec, const PositivesView& pos, const Order* order,
                                 uint64_t first, uint64_t s, const BatchRowsOut& out) {
  const uint64_t sample = sample_at(spec.seed, spec.epoch, samples_per_epoch(pos.count, spec.negatives, spec.bpr), first + s);
  return fill_sample_of(spec, pos, order, sample, s, out);
}

}  // namespace tastebud
