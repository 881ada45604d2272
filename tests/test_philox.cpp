#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tastebud/philox.h"

namespace tastebud {
namespace {

// Known-answer vectors from Random123's kat_vectors for philox4x32_10.
TEST(Philox, MatchesRandom123KnownAnswers) {
  struct Case {
    Philox4 counter;
    uint32_t key0, key1;
    Philox4 expected;
  };
  const Case cases[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       0xffffffff,
       0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       0xa4093822,
       0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const auto& c : cases) {
    const Philox4 got = philox4x32_10(c.counter, c.key0, c.key1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], c.expected.v[i]) << "word " << i;
  }
}

TEST(Philox, StreamsAndEpochsDiffer) {
  const auto a = random_words(7, RandomStream::kNegatives, 0, 42);
  const auto b = random_words(7, RandomStream::kShuffle, 0, 42);
  const auto c = random_words(7, RandomStream::kNegatives, 1, 42);
  EXPECT_NE(a.v[0], b.v[0]);
  EXPECT_NE(a.v[0], c.v[0]);
}

TEST(Philox, UniformBelowIsInRangeAndRoughlyFlat) {
  constexpr uint32_t n = 10;
  std::vector<int> counts(n, 0);
  constexpr int draws = 100000;
  for (int i = 0; i < draws; ++i) {
    const uint32_t x = uniform_below(random_words(1, RandomStream::kNegatives, 0, i).v[0], n);
    ASSERT_LT(x, n);
    ++counts[x];
  }
  // Each bucket expects 10000 with standard deviation ~95; 6 sigma keeps this from flaking.
  for (uint32_t k = 0; k < n; ++k) EXPECT_NEAR(counts[k], draws / n, 600) << "bucket " << k;
}

}  // namespace
}  // namespace tastebud
