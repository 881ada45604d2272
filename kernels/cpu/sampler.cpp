#include "cpu/sampler.h"

#include <cmath>

#include <algorithm>
#include <numeric>

#include "tastebud/error.h"
#include "tastebud/sampler_math.h"

namespace tastebud::cpu {

AliasTable AliasTable::popularity(std::span<const uint64_t> counts, double alpha) {
  std::vector<double> weights(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) weights[i] = std::pow(static_cast<double>(counts[i]), alpha);
  return build(weights);
}

AliasTable AliasTable::build(std::span<const double> weights) {
  const size_t n = weights.size();
  TB_CHECK(n > 0 && n <= UINT32_MAX, "alias table: need between 1 and 2^32-1 items");
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  TB_CHECK(total > 0.0, "alias table: the weights sum to zero");
  AliasTable table;
  table.probability.assign(n, 1.0f);
  table.alias.resize(n);
  std::iota(table.alias.begin(), table.alias.end(), 0u);
  std::vector<double> scaled(n);
  std::vector<uint32_t> small, large;
  for (size_t i = 0; i < n; ++i) {
    scaled[i] = weights[i] * static_cast<double>(n) / total;
    (scaled[i] < 1.0 ? small : large).push_back(static_cast<uint32_t>(i));
  }
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back();
    small.pop_back();
    const uint32_t l = large.back();
    table.probability[s] = static_cast<float>(scaled[s]);
    table.alias[s] = l;
    scaled[l] -= 1.0 - scaled[s];
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // Leftovers are 1 up to rounding.
  for (uint32_t i : small) table.probability[i] = 1.0f;
  for (uint32_t i : large) table.probability[i] = 1.0f;
  return table;
}

void shuffle_order(uint64_t seed, uint32_t epoch, uint64_t count, std::span<uint64_t> order) {
  TB_CHECK(order.size() == count, "shuffle_order: wrong output size");
  std::vector<uint64_t> keys(count);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < static_cast<int64_t>(count); ++p) keys[p] = shuffle_key(seed, epoch, p);
  std::iota(order.begin(), order.end(), uint64_t{0});
  std::sort(order.begin(), order.end(), [&](uint64_t a, uint64_t b) {
    return keys[a] != keys[b] ? keys[a] < keys[b] : a < b;
  });
}

}  // namespace tastebud::cpu
