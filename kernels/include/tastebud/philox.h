// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
// Every random draw in tastebud is a pure function of (seed, stream, epoch, index), so the CPU
// and the CUDA backend draw the same numbers whatever the thread or block layout.
#pragma once

#include <cstdint>

#include "tastebud/hd.h"

namespace tastebud {

struct Philox4 {
  uint32_t v[4];
};

TASTEBUD_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

TASTEBUD_HD Philox4 philox4x32_10(Philox4 counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kM0, counter.v[0], &hi0);
    const uint32_t lo1 = mulhilo32(kM1, counter.v[2], &hi1);
    counter = Philox4{{hi1 ^ counter.v[1] ^ key0, lo1, hi0 ^ counter.v[3] ^ key1, lo0}};
    key0 += kW0;
    key1 += kW1;
  }
  return counter;
}

// Independent streams of draws within one run.
enum class RandomStream : uint32_t {
  kShuffle = 1,
  kNegatives = 2,
  kInit = 3,
  kEvalNegatives = 4,
  kGenerator = 5,
  kSplit = 6,
  kImpressions = 7,
  kGeneratorSignals = 8,  // the synthetic shop's optional impressions and device effect
  kBootstrap = 9,         // evaluation: the users each bootstrap resample draws
  kTune = 10,             // tastebud tune: each trial's configuration
  kSampleOrder = 11,      // training: the Feistel rounds that shuffle an epoch's samples apart
  kSlate = 12,            // batch-infer: where promoted and exploration items sit in a result
  kFoldIn = 13,           // answering: the negatives that fold a session's events into its rows
  kDropout = 14,          // training: which activations a sequence model's dropout keeps
  kExploration = 15,      // batch-infer: the order of the explorable items a model cannot score
};

// Four 32-bit words for draw `index` of `stream` in `epoch`.
TASTEBUD_HD Philox4 random_words(uint64_t seed, RandomStream stream, uint32_t epoch, uint64_t index) {
  const Philox4 counter{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), epoch,
                         static_cast<uint32_t>(stream)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A uniform integer in [0, n) from one 32-bit word (Lemire's multiply-shift; the bias is below
// n / 2^32, far under anything a recommender can notice, and it needs no retry loop).
TASTEBUD_HD uint32_t uniform_below(uint32_t word, uint32_t n) {
  return static_cast<uint32_t>((static_cast<uint64_t>(word) * n) >> 32);
}

// A uniform float in [0, 1) with 24 random bits.
TASTEBUD_HD float uniform_unit(uint32_t word) { return (word >> 8) * (1.0f / 16777216.0f); }

// A uniform double in (0, 1], for Box-Muller.
TASTEBUD_HD double uniform_open_unit(uint32_t hi, uint32_t lo) {
  const uint64_t bits = (static_cast<uint64_t>(hi) << 21) ^ lo;
  return (static_cast<double>(bits & ((1ull << 53) - 1)) + 1.0) * (1.0 / 9007199254740992.0);
}

}  // namespace tastebud
