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

}  // namespace tastebud::cpu
