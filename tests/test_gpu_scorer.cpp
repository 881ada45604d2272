// The GPU scorer against the CPU: logits against Scorer::score_all, top-K against Scorer +
// cpu::top_k with the same exclusions and allowed mask. Every test but the first skips without a
// usable GPU (and in a build without CUDA), saying why; the first checks the reason is given.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "cpu/topk.h"
#include "tastebud/engine/gpu_scorer.h"
#include "tastebud/engine/model.h"
#include "tastebud/engine/scorer.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

constexpr uint32_t kNone = UINT32_MAX;
// Two logits this close (relative, above 1) may come out in either order.
constexpr double kTieGap = 1e-5;

#define SKIP_WITHOUT_GPU()                                                             \
  do {                                                                                 \
    std::string reason_;                                                               \
    if (!gpu_scorer_available(&reason_)) GTEST_SKIP() << "no GPU scorer: " << reason_; \
  } while (0)

struct Shape {
  std::string name;
  ModelKind kind;
  uint32_t factors;
  std::vector<uint32_t> layers;
};
void PrintTo(const Shape& shape, std::ostream* os) { *os << shape.name; }

// initialize() draws embeddings N(0, 0.01): logits would all sit within ~1e-4 of each other and
// near-ties would hide real differences. These parameters give logits of order one: embeddings
// N(0, 1), weights N(0, 1 / fan_in), biases N(0, 0.1).
ModelParams random_model(const Shape& shape, uint32_t users, uint32_t items, uint32_t seed) {
  ModelConfig c;
  c.kind = shape.kind;
  c.num_users = users;
  c.num_items = items;
  c.factors = shape.factors;
  c.layers = shape.layers;
  ModelParams p = ModelParams::initialize(c, seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](Tensor& t, float scale) {
    for (float& v : t.values) v = scale * normal(rng);
  };
  fill(p.user_gmf, 1.0f);
  fill(p.item_gmf, 1.0f);
  fill(p.user_mlp, 1.0f);
  fill(p.item_mlp, 1.0f);
  for (size_t j = 0; j < p.weights.size(); ++j) {
    fill(p.weights[j],
         1.0f / std::sqrt(static_cast<float>(std::max<uint64_t>(1, p.weights[j].rows()))));
    fill(p.biases[j], 0.1f);
  }
  fill(p.head_weight,
       1.0f / std::sqrt(static_cast<float>(std::max<size_t>(1, p.head_weight.values.size()))));
  fill(p.head_bias, 0.1f);
  return p;
}

// The CPU reference for users with contexts: a model whose user q is users[q] with contexts[q]
// added to its MLP row, the very sum the GPU forms.
ModelParams with_contexts(const ModelParams& params, std::span<const uint32_t> users,
                          std::span<const float> contexts) {
  ModelParams p = params;
  const size_t e = params.config.mlp_embedding();
  const size_t f = params.config.has_gmf() ? params.config.factors : 0;
  p.config.num_users = static_cast<uint32_t>(users.size());
  p.user_mlp.shape = {users.size(), e};
  p.user_gmf.shape = {users.size(), f};
  p.user_mlp.values.assign(users.size() * e, 0.0f);
  p.user_gmf.values.assign(users.size() * f, 0.0f);
  for (size_t q = 0; q < users.size(); ++q) {
    for (size_t j = 0; j < e; ++j)
      p.user_mlp.values[q * e + j] = params.user_mlp.values[users[q] * e + j] +
                                     (contexts.empty() ? 0.0f : contexts[q * e + j]);
    for (size_t j = 0; j < f; ++j)
      p.user_gmf.values[q * f + j] = params.user_gmf.values[users[q] * f + j];
  }
  return p;
}

::testing::AssertionResult close(std::span<const float> got, std::span<const float> want,
                                 double atol, double rtol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes differ: " << got.size() << " vs " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(diff <= atol + rtol * std::fabs(want[i])))
      return ::testing::AssertionFailure()
             << "index " << i << ": GPU " << got[i] << ", CPU " << want[i];
  }
  return ::testing::AssertionSuccess();
}

// The CPU's answer for one user: logits (NaN where excluded or not allowed) and their top k,
// padded.
struct Reference {
  std::vector<float> logits;
  std::vector<uint32_t> items;
};

Reference cpu_top_k(const Scorer& scorer, uint32_t row, std::span<const uint32_t> excluded,
                    std::span<const uint8_t> allowed, uint32_t k) {
  Reference r;
  r.logits.resize(scorer.num_items());
  scorer.score_all(row, r.logits);
  for (uint32_t i : excluded) r.logits[i] = NAN;
  for (size_t i = 0; i < allowed.size(); ++i)
    if (!allowed[i]) r.logits[i] = NAN;
  cpu::top_k(r.logits, k, r.items);
  return r;
}

// One row of the GPU's top k against the CPU's: the same number of items; at each position the
// same item, or one whose CPU logit is within kTieGap of the CPU's pick there; eligible, distinct
// items; scores close to the CPU logits; padding UINT32_MAX / -inf.
::testing::AssertionResult same_top_k(const Reference& want, std::span<const uint32_t> items,
                                      std::span<const float> scores, size_t user) {
  const size_t k = items.size();
  std::set<uint32_t> seen;
  for (size_t t = 0; t < k; ++t) {
    const bool expected = t < want.items.size();
    if (!expected) {
      if (items[t] != kNone || !(std::isinf(scores[t]) && scores[t] < 0))
        return ::testing::AssertionFailure()
               << "user " << user << " position " << t << ": expected padding, got item "
               << items[t] << " score " << scores[t];
      continue;
    }
    const uint32_t g = items[t], c = want.items[t];
    if (g == kNone || g >= want.logits.size())
      return ::testing::AssertionFailure()
             << "user " << user << " position " << t << ": GPU gave no item, CPU " << c;
    if (std::isnan(want.logits[g]))
      return ::testing::AssertionFailure() << "user " << user << " position " << t << ": item " << g
                                           << " is excluded or not allowed";
    if (!seen.insert(g).second)
      return ::testing::AssertionFailure() << "user " << user << ": item " << g << " twice";
    if (g != c && std::fabs(want.logits[g] - want.logits[c]) >
                      kTieGap * std::max(1.0f, std::fabs(want.logits[c])))
      return ::testing::AssertionFailure()
             << "user " << user << " position " << t << ": GPU item " << g << " (CPU logit "
             << want.logits[g] << "), CPU item " << c << " (" << want.logits[c] << ")";
    if (!(std::fabs(scores[t] - want.logits[g]) <= 1e-4 + 1e-4 * std::fabs(want.logits[g])))
      return ::testing::AssertionFailure()
             << "user " << user << " position " << t << ": item " << g << " GPU score " << scores[t]
             << ", CPU " << want.logits[g];
  }
  return ::testing::AssertionSuccess();
}

std::vector<uint32_t> random_users(size_t count, uint32_t below, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> pick(0, below - 1);
  std::vector<uint32_t> users(count);
  for (uint32_t& u : users) u = pick(rng);
  return users;
}

// Exclusions: most users a few random items, user 1 all but `keep` items of the catalog (so
// fewer than k remain), user 2 nothing. Allowed: about 3 items in 4.
struct Filters {
  std::vector<uint64_t> offsets{0};
  std::vector<uint32_t> items;
  std::vector<uint8_t> allowed;
  std::span<const uint32_t> of(size_t u) const {
    return std::span<const uint32_t>(items).subspan(offsets[u], offsets[u + 1] - offsets[u]);
  }
};

Filters random_filters(size_t users, uint32_t num_items, uint32_t keep, bool with_allowed,
                       uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> pick(0, num_items - 1);
  Filters f;
  for (size_t u = 0; u < users; ++u) {
    if (u == 1) {
      for (uint32_t i = keep; i < num_items; ++i) f.items.push_back(i);
    } else if (u != 2) {
      const int count = static_cast<int>(pick(rng) % 40);
      for (int j = 0; j < count; ++j) f.items.push_back(pick(rng));  // duplicates allowed
    }
    f.offsets.push_back(f.items.size());
  }
  if (with_allowed) {
    f.allowed.resize(num_items);
    for (uint8_t& a : f.allowed) a = pick(rng) % 4 != 0;
  }
  return f;
}

// Runs everywhere: with a GPU the scorer builds; without one (or without CUDA) it says why.
TEST(GpuScorer, BuildsOrSaysWhyNot) {
  const ModelParams p = random_model({"small", ModelKind::kNeuMF, 4, {8, 4}}, 3, 5, 1);
  std::string reason;
  if (gpu_scorer_available(&reason)) {
    GpuScorer scorer(p);
    EXPECT_EQ(scorer.num_items(), 5u);
    EXPECT_GE(scorer.users_per_chunk(), 1u);
    EXPECT_FALSE(scorer.describe().empty());
    return;
  }
  EXPECT_FALSE(reason.empty());
  EXPECT_THROW(GpuScorer scorer(p), Error);
}

class GpuScorerShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(GpuScorerShapes, LogitsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  const ModelParams p = random_model(GetParam(), 53, 1037, 7);
  const Scorer cpu(p);
  GpuScorer gpu(p);
  SCOPED_TRACE(gpu.describe());
  const std::vector<uint32_t> users = random_users(41, 53, 8);
  std::vector<float> got(users.size() * p.config.num_items), want(p.config.num_items);
  gpu.score_users(users, {}, got);
  for (size_t u = 0; u < users.size(); ++u) {
    cpu.score_all(users[u], want);
    ASSERT_TRUE(
        close(std::span<const float>(got).subspan(u * want.size(), want.size()), want, 1e-4, 1e-4))
        << "user " << users[u];
  }
}

TEST_P(GpuScorerShapes, TopKMatchesTheCpuWithFilters) {
  SKIP_WITHOUT_GPU();
  const ModelParams p = random_model(GetParam(), 61, 911, 9);
  const Scorer cpu(p);
  GpuScorer gpu(p);
  SCOPED_TRACE(gpu.describe());
  const std::vector<uint32_t> users = random_users(37, 61, 10);
  for (const bool with_allowed : {false, true}) {
    for (const uint32_t k : {1u, 25u, 300u}) {
      const Filters filters =
          random_filters(users.size(), p.config.num_items, 12, with_allowed, 11 + k);
      std::vector<uint32_t> items(users.size() * k);
      std::vector<float> scores(users.size() * k);
      gpu.top_k(users, {}, filters.offsets, filters.items, filters.allowed, k, items, scores);
      for (size_t u = 0; u < users.size(); ++u) {
        const Reference want = cpu_top_k(cpu, users[u], filters.of(u), filters.allowed, k);
        ASSERT_TRUE(same_top_k(want, std::span<const uint32_t>(items).subspan(u * k, k),
                               std::span<const float>(scores).subspan(u * k, k), u))
            << "k " << k << (with_allowed ? " with" : " without") << " an allowed mask";
      }
    }
  }
}

TEST_P(GpuScorerShapes, ContextsAddToTheUsersEmbedding) {
  SKIP_WITHOUT_GPU();
  const ModelParams p = random_model(GetParam(), 29, 517, 13);
  const uint32_t e = p.config.mlp_embedding();
  if (e == 0) GTEST_SKIP() << "a GMF model takes no contexts";
  GpuScorer gpu(p);
  const std::vector<uint32_t> users = random_users(23, 29, 14);
  std::vector<float> contexts(users.size() * e);
  std::mt19937 rng(15);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (float& c : contexts) c = normal(rng);
  const ModelParams folded = with_contexts(p, users, contexts);
  const Scorer cpu(folded);

  std::vector<float> got(users.size() * p.config.num_items), want(p.config.num_items);
  gpu.score_users(users, contexts, got);
  for (size_t u = 0; u < users.size(); ++u) {
    cpu.score_all(static_cast<uint32_t>(u), want);
    ASSERT_TRUE(
        close(std::span<const float>(got).subspan(u * want.size(), want.size()), want, 1e-4, 1e-4))
        << "user " << u;
  }
  const uint32_t k = 20;
  const Filters filters = random_filters(users.size(), p.config.num_items, 7, true, 16);
  std::vector<uint32_t> items(users.size() * k);
  std::vector<float> scores(users.size() * k);
  gpu.top_k(users, contexts, filters.offsets, filters.items, filters.allowed, k, items, scores);
  for (size_t u = 0; u < users.size(); ++u) {
    const Reference ref =
        cpu_top_k(cpu, static_cast<uint32_t>(u), filters.of(u), filters.allowed, k);
    ASSERT_TRUE(same_top_k(ref, std::span<const uint32_t>(items).subspan(u * k, k),
                           std::span<const float>(scores).subspan(u * k, k), u));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, GpuScorerShapes,
    ::testing::Values(Shape{"paper", ModelKind::kNeuMF, 8, {64, 32, 16, 8}},
                      Shape{"odd", ModelKind::kNeuMF, 3, {14, 7, 5}},
                      Shape{"mlp_only", ModelKind::kMLP, 8, {64, 32, 16, 8}},
                      Shape{"gmf_only", ModelKind::kGMF, 8, {64, 32, 16, 8}},
                      Shape{"one_layer", ModelKind::kNeuMF, 5, {20, 10}},
                      Shape{"deep_padded", ModelKind::kNeuMF, 4, {16, 12, 8, 6, 4}},
                      Shape{"layered_wide", ModelKind::kNeuMF, 4, {200, 80, 24}}),
    [](const ::testing::TestParamInfo<Shape>& info) { return info.param.name; });

// More users than one chunk holds (4096), with exclusions: the chunks' rows and CSR slices line up.
TEST(GpuScorer, ManyUsersCrossChunks) {
  SKIP_WITHOUT_GPU();
  const ModelParams p = random_model({"small", ModelKind::kNeuMF, 4, {16, 8, 4}}, 5000, 97, 17);
  const Scorer cpu(p);
  GpuScorer gpu(p);
  std::vector<uint32_t> users(5000);
  for (uint32_t u = 0; u < users.size(); ++u) users[u] = (u * 7919) % 5000;
  const uint32_t k = 10;
  const Filters filters = random_filters(users.size(), p.config.num_items, 5, true, 18);
  std::vector<uint32_t> items(users.size() * k);
  std::vector<float> scores(users.size() * k);
  gpu.top_k(users, {}, filters.offsets, filters.items, filters.allowed, k, items, scores);
  EXPECT_LT(gpu.users_per_chunk(), users.size()) << "the test no longer crosses a chunk boundary";
  for (size_t u = 0; u < users.size(); ++u) {
    const Reference ref = cpu_top_k(cpu, users[u], filters.of(u), filters.allowed, k);
    ASSERT_TRUE(same_top_k(ref, std::span<const uint32_t>(items).subspan(u * k, k),
                           std::span<const float>(scores).subspan(u * k, k), u));
  }
}

TEST(GpuScorer, RejectsBadInputs) {
  SKIP_WITHOUT_GPU();
  const ModelParams p = random_model({"paper", ModelKind::kNeuMF, 8, {64, 32, 16, 8}}, 11, 50, 19);
  GpuScorer gpu(p);
  const std::vector<uint32_t> users{1, 2};
  std::vector<uint32_t> items(2 * 5);
  std::vector<float> scores(2 * 5);
  EXPECT_THROW(gpu.top_k(std::vector<uint32_t>{1, 11}, {}, {}, {}, {}, 5, items, scores),
               Error);  // user 11 of 11
  EXPECT_THROW(gpu.top_k(users, std::vector<float>(3), {}, {}, {}, 5, items, scores),
               Error);  // contexts
  EXPECT_THROW(gpu.top_k(users, {}, std::vector<uint64_t>{0, 1, 1}, std::vector<uint32_t>{50}, {},
                         5, items, scores),
               Error);  // item 50 of 50
  EXPECT_THROW(gpu.top_k(users, {}, {}, {}, std::vector<uint8_t>(49, 1), 5, items, scores),
               Error);  // mask size
  const uint32_t too_many = GpuScorer::max_k() + 1;
  std::vector<uint32_t> big_items(2 * too_many);
  std::vector<float> big_scores(2 * too_many);
  EXPECT_THROW(gpu.top_k(users, {}, {}, {}, {}, too_many, big_items, big_scores), Error);
}

}  // namespace
}  // namespace tastebud
