// Negative sampling and the epoch shuffle on the GPU: the twin of cpu/sampler.h. Every draw goes
// through the TASTEBUD_HD rules in tastebud/sampler_math.h, so the GPU visits the positives in the
// CPU's order and draws the CPU's negatives, bit for bit.
#pragma once

#include <cstdint>

#include "cuda/common.h"
#include "tastebud/batch_rows.h"

namespace tastebud::cuda {

struct StepScalars;  // cuda/graph.h

// The training positives on the device: tastebud::PositivesView (tastebud/batch_rows.h) over
// device pointers; fill_rows draws impression_share of its negatives from the impressions.
using tastebud::PositivesView;
using tastebud::SampleSpec;

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

// The rows of samples [first, first + samples) of an epoch by tastebud::fill_sample, the rule
// CpuBackend::fill_rows uses too (tastebud/batch_rows.h). d_positives (may be null: not needed)
// gets each row's positive index, the entity of its context. d_impression_negatives (a device
// counter, may be null) grows by the negatives that came from impressions, unless d_halted (may be
// null) is set: an epoch stopped by a non-finite loss counts the batches up to the one that
// stopped it, as the CPU does. d_step (a step replayed from a CUDA graph, cuda/graph.h; null
// otherwise): `first` and spec's epoch are read there on the device instead.
void fill_rows(const SampleSpec& spec, const PositivesView& positives, const uint32_t* d_order,
               uint64_t first, uint32_t samples, uint32_t* d_users, uint32_t* d_items,
               float* d_labels, float* d_weights, uint32_t* d_positives,
               unsigned long long* d_impression_negatives, const int* d_halted, StreamHandle stream,
               const StepScalars* d_step = nullptr);

// out[i] = draw_negative(seed, kNegatives, epoch, draw_index[i], positives of user[i], ...): the
// sampler alone (impressions ignored), for tests and benchmarks.
void draw_negatives(uint64_t seed, uint32_t epoch, const PositivesView& positives,
                    const uint64_t* d_draw_index, const uint32_t* d_user, int64_t count,
                    uint32_t* d_out, StreamHandle stream);

}  // namespace tastebud::cuda
