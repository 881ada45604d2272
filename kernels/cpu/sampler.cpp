#include "cpu/sampler.h"

#include <cmath>

#include <algorithm>
#include <numeric>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

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
  // (key, p) pairs sort by key, then p, with no indirection in the comparisons.
  std::vector<std::pair<uint64_t, uint64_t>> keyed(count);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < static_cast<int64_t>(count); ++p) keyed[p] = {shuffle_key(seed, epoch, p), p};
  std::sort(keyed.begin(), keyed.end());
  for (uint64_t p = 0; p < count; ++p) order[p] = keyed[p].second;
}

}  // namespace tastebud::cpu

namespace tastebud::cpu {
namespace {

#if defined(__AVX2__)
// philox4x32_10 (philox.h) in eight lanes: words[k] holds counter word k of each lane.
struct Philox8 {
  __m256i v[4];
};

// The low and high halves of the 32 x 32-bit products a * m, lane by lane.
inline void mulhilo8(__m256i a, __m256i m, __m256i* lo, __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);   // lanes 1, 3, 5, 7
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

inline Philox8 philox8(Philox8 c, uint32_t key0, uint32_t key1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m256i lo0, hi0, lo1, hi1;
    mulhilo8(c.v[0], m0, &lo0, &hi0);
    mulhilo8(c.v[2], m1, &lo1, &hi1);
    const __m256i k0 = _mm256_set1_epi32(static_cast<int>(key0)), k1 = _mm256_set1_epi32(static_cast<int>(key1));
    c = Philox8{{_mm256_xor_si256(_mm256_xor_si256(hi1, c.v[1]), k0), lo1,
                 _mm256_xor_si256(_mm256_xor_si256(hi0, c.v[3]), k1), lo0}};
    key0 += 0x9E3779B9u;
    key1 += 0xBB67AE85u;
  }
  return c;
}

// One pass of feistel_permute (sampler_math.h) over eight lanes of (left, right) halves, each
// below 2^32 since half_bits <= 32: round r's Philox counter is (right, r << 24, epoch, stream),
// and only word 0 reaches the mask.
inline void feistel8(uint64_t seed, uint32_t epoch, uint32_t half_bits, uint32_t* left, uint32_t* right) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(half_bits >= 32 ? 0xFFFFFFFFu : (1u << half_bits) - 1));
  __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(left));
  __m256i r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(right));
  const __m256i e = _mm256_set1_epi32(static_cast<int>(epoch));
  const __m256i stream = _mm256_set1_epi32(static_cast<int>(RandomStream::kSampleOrder));
  for (uint32_t round = 0; round < 4; ++round) {
    const Philox8 words = philox8(Philox8{{r, _mm256_set1_epi32(static_cast<int>(round << 24)), e, stream}},
                                  static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const __m256i next = _mm256_xor_si256(l, _mm256_and_si256(words.v[0], mask));
    l = r;
    r = next;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(left), l);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(right), r);
}
#endif

}  // namespace

void sample_positions(uint64_t seed, uint32_t epoch, uint64_t count, uint64_t first, std::span<uint64_t> samples) {
  const uint64_t n = samples.size();
#if defined(__AVX2__)
  if (count >= 2) {
    uint32_t bits = 1;
    while (bits < 64 && (count - 1) >> bits != 0) ++bits;
    const uint32_t half_bits = (bits + 1) / 2;
    const uint64_t mask = (uint64_t{1} << half_bits) - 1;
    constexpr uint64_t kIdle = ~uint64_t{0};
    alignas(32) uint32_t left[8], right[8];
    uint64_t slot[8];  // which of samples each lane is walking, or kIdle
    uint64_t next = 0, busy = 0;
    const auto start = [&](int lane) {
      if (next < n) {
        const uint64_t x = first + next;
        left[lane] = static_cast<uint32_t>(x >> half_bits);
        right[lane] = static_cast<uint32_t>(x & mask);
        slot[lane] = next++;
        ++busy;
      } else {
        left[lane] = right[lane] = 0;
        slot[lane] = kIdle;
      }
    };
    for (int lane = 0; lane < 8; ++lane) start(lane);
    while (busy > 0) {
      feistel8(seed, epoch, half_bits, left, right);
      for (int lane = 0; lane < 8; ++lane) {
        if (slot[lane] == kIdle) continue;
        const uint64_t x = static_cast<uint64_t>(left[lane]) << half_bits | right[lane];
        if (x >= count) continue;  // walks on from x
        samples[slot[lane]] = x;
        --busy;
        start(lane);
      }
    }
    return;
  }
#endif
  for (uint64_t j = 0; j < n; ++j) samples[j] = sample_at(seed, epoch, count, first + j);
}

}  // namespace tastebud::cpu
