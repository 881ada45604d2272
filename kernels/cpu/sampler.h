// Negative sampling and the epoch shuffle on the CPU.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tastebud::cpu {

// Walker's alias table over items, built with Vose's method; deterministic for given weights.
struct AliasTable {
  std::vector<float> probability;
  std::vector<uint32_t> alias;

  // weights[i] >= 0 with a positive sum; item i is drawn with probability weights[i] / sum.
  static AliasTable build(std::span<const double> weights);
  // The popularity sampler's table: item i drawn with probability ~ counts[i]^alpha. Both backends
  // use this one table (the CUDA backend uploads it), so they pick the same column and coin.
  static AliasTable popularity(std::span<const uint64_t> counts, double alpha);
};

// The order in which an epoch visits positives [0, count): sorted by Philox shuffle key.
void shuffle_order(uint64_t seed, uint32_t epoch, uint64_t count, std::span<uint64_t> order);

// samples[j] = sample_at(seed, epoch, count, first + j) (sampler_math.h): the same permutation,
// eight positions at a time where the CPU has AVX2. Each lane that cycle-walks out of [0, count)
// walks on while finished lanes take the next positions, so no lane idles on a slow neighbour.
void sample_positions(uint64_t seed, uint32_t epoch, uint64_t count, uint64_t first, std::span<uint64_t> samples);

}  // namespace tastebud::cpu
