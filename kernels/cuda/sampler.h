// Negative sampling and the epoch shuffle on the GPU: the twin of cpu/sampler.h. Every draw goes
// through the TASTEBUD_HD rules in tastebud/sampler_math.h, so the GPU visits the positives in the
// CPU's order and draws the CPU's negatives, bit for bit.
#pragma once

#include <cstdint>

#include "cuda/common.h"

namespace tastebud::cuda {

// The training positives on the device, sorted by (user, item) as in TrainingSet.
struct PositivesView {
  const uint32_t* user = nullptr;
  const uint32_t* item = nullptr;
  const float* weight = nullptr;
  const uint64_t* user_offsets = nullptr;  // num_users + 1
  uint32_t num_items = 0;
  // The popularity sampler's alias table; both null for the uniform sampler.
  const float* alias_probability = nullptr;
  const uint32_t* alias_index = nullptr;
  // Items each user was shown and never acted on, sorted, as in TrainingSet: user u's are
  // impression_items[impression_offsets[u] .. impression_offsets[u + 1]). Null offsets: none.
  // fill_rows draws this share of its negatives from them (draw_training_negative).
  const uint64_t* impression_offsets = nullptr;
  const uint32_t* impression_items = nullptr;
  float impression_share = 0.0f;
};

// The epoch's visiting order: positives [0, count) sorted by (shuffle_key, index), like
// cpu::shuffle_order. Keys come from Philox; CUB's stable radix sort keeps equal keys in index
// order, which is the CPU's tie rule.
class Shuffler {
 public:
  explicit Shuffler(uint64_t count);
  void run(uint64_t seed, uint32_t epoch, uint32_t* d_order, StreamHandle stream);
  uint64_t count() const { return count_; }

 private:
  uint64_t count_ = 0;
  DeviceBuffer<uint64_t> keys_, sorted_keys_;
  DeviceBuffer<uint32_t> index_;
  DeviceBuffer<unsigned char> temp_;
};

// The rows of samples [first, first + samples) of an epoch, as CpuBackend::fill_rows builds them:
// BCE: `1 + negatives` rows per positive (the positive, then its negatives); BPR: `negatives`
// pairs per positive, rows 2s (positive) and 2s + 1 (negative). Negative j of positive p is draw
// p * negatives + j of draw_training_negative, so a share of them may come from impressions.
// d_positives (may be null: not needed) gets each row's positive index, the entity of its context:
// BCE, every row of positive p; BPR, both rows of a pair. d_impression_negatives (a device
// counter, may be null) grows by the negatives that came from impressions, unless d_halted (may be
// null) is set: an epoch stopped by a non-finite loss counts the batches up to the one that
// stopped it, as the CPU does.
struct SampleSpec {
  uint64_t seed = 1;
  uint32_t epoch = 0;
  uint32_t negatives = 0;
  bool bpr = false;
};
void fill_rows(const SampleSpec& spec, const PositivesView& positives, const uint32_t* d_order,
               uint64_t first, uint32_t samples, uint32_t* d_users, uint32_t* d_items,
               float* d_labels, float* d_weights, uint32_t* d_positives,
               unsigned long long* d_impression_negatives, const int* d_halted, StreamHandle stream);

// out[i] = draw_negative(seed, kNegatives, epoch, draw_index[i], positives of user[i], ...): the
// sampler alone (impressions ignored), for tests and benchmarks.
void draw_negatives(uint64_t seed, uint32_t epoch, const PositivesView& positives,
                    const uint64_t* d_draw_index, const uint32_t* d_user, int64_t count,
                    uint32_t* d_out, StreamHandle stream);

}  // namespace tastebud::cuda
