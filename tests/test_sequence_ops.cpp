// The SASRec ops on the CPU (kernels/cpu/sequence.h): known answers, finite-difference gradients
// in double, causality and padding, the scatter's determinism over thread counts, the dropout
// mask and gSASRec's beta.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "cpu/sequence.h"
#include "tastebud/sequence_math.h"

namespace {

using tastebud::cpu::causal_attention_backward;
using tastebud::cpu::causal_attention_forward;
using tastebud::cpu::layer_norm_backward;
using tastebud::cpu::layer_norm_forward;
using tastebud::cpu::newest_query_attention;
using tastebud::cpu::sampled_loss_forward_backward;
using tastebud::cpu::scatter_item_grads;

std::vector<double> random_vector(size_t size, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  std::vector<double> out(size);
  for (double& value : out) value = dist(rng);
  return out;
}

// Central differences of f with respect to every entry of x, against the analytic gradient.
::testing::AssertionResult gradient_matches(std::vector<double>& x, const std::vector<double>& analytic,
                                            const std::function<double()>& f, const char* name) {
  constexpr double kStep = 1e-6, kTolerance = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + kStep;
    const double up = f();
    x[i] = saved - kStep;
    const double down = f();
    x[i] = saved;
    const double numeric = (up - down) / (2 * kStep);
    if (std::abs(numeric - analytic[i]) > kTolerance * std::max(1.0, std::abs(numeric)))
      return ::testing::AssertionFailure() << name << "[" << i << "]: analytic " << analytic[i]
                                           << ", finite differences " << numeric;
  }
  return ::testing::AssertionSuccess();
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

TEST(LayerNorm, KnownAnswer) {
  const std::vector<double> x = {1, 2, 3, 4}, gamma = {1, 1, 1, 1}, beta = {0, 0, 0, 0};
  std::vector<double> y(4), mean(1), rstd(1);
  layer_norm_forward(x.data(), gamma.data(), beta.data(), 1, 4, 1e-5, y.data(), mean.data(), rstd.data());
  EXPECT_DOUBLE_EQ(mean[0], 2.5);
  EXPECT_DOUBLE_EQ(rstd[0], 1.0 / std::sqrt(1.25 + 1e-5));
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], (x[i] - 2.5) / std::sqrt(1.25 + 1e-5), 1e-15);
}

TEST(LayerNorm, GradientsMatchFiniteDifferences) {
  const int64_t n = 3, d = 5;
  std::vector<double> x = random_vector(n * d, 1), gamma = random_vector(d, 2), beta = random_vector(d, 3);
  const std::vector<double> r = random_vector(n * d, 4);  // loss = sum(y * r)
  std::vector<double> y(n * d), mean(n), rstd(n);
  auto loss = [&] {
    layer_norm_forward(x.data(), gamma.data(), beta.data(), n, d, 1e-5, y.data(), mean.data(), rstd.data());
    return dot(y, r);
  };
  loss();
  std::vector<double> dx(n * d), dgamma(d, 0.0), dbeta(d, 0.0);
  layer_norm_backward(r.data(), x.data(), gamma.data(), mean.data(), rstd.data(), n, d, dx.data(),
                      dgamma.data(), dbeta.data());
  EXPECT_TRUE(gradient_matches(x, dx, loss, "x"));
  EXPECT_TRUE(gradient_matches(gamma, dgamma, loss, "gamma"));
  EXPECT_TRUE(gradient_matches(beta, dbeta, loss, "beta"));
}

struct AttentionCase {
  int64_t length, first, heads, dh;
};

void check_attention_gradients(const AttentionCase& c) {
  const int64_t d = c.heads * c.dh, size = c.length * d;
  std::vector<double> q = random_vector(size, 11), k = random_vector(size, 12), v = random_vector(size, 13);
  const std::vector<double> r = random_vector(size, 14);  // loss = sum(out * r)
  std::vector<double> probs(c.heads * c.length * c.length), out(size);
  auto loss = [&] {
    causal_attention_forward(q.data(), k.data(), v.data(), c.length, c.first, c.heads, c.dh,
                             probs.data(), out.data());
    return dot(out, r);
  };
  loss();
  std::vector<double> dq(size, 7.0), dk(size, 7.0), dv(size, 7.0);  // overwritten
  causal_attention_backward(r.data(), q.data(), k.data(), v.data(), probs.data(), c.length, c.first,
                            c.heads, c.dh, dq.data(), dk.data(), dv.data());
  EXPECT_TRUE(gradient_matches(q, dq, loss, "q"));
  EXPECT_TRUE(gradient_matches(k, dk, loss, "k"));
  EXPECT_TRUE(gradient_matches(v, dv, loss, "v"));
}

TEST(CausalAttention, GradientsMatchFiniteDifferences) {
  for (const AttentionCase c : {AttentionCase{5, 0, 1, 3}, AttentionCase{5, 2, 1, 3},
                                AttentionCase{6, 0, 2, 3}, AttentionCase{6, 2, 2, 3}}) {
    SCOPED_TRACE(::testing::Message() << "L " << c.length << " first " << c.first << " heads " << c.heads);
    check_attention_gradients(c);
  }
}

TEST(CausalAttention, UniformScoresAverageTheValidValues) {
  // q = 0: every valid key scores the same, so query t outputs the mean of v[first..t].
  const int64_t length = 5, first = 2, heads = 2, dh = 2, d = heads * dh;
  const std::vector<double> q(length * d, 0.0), k = random_vector(length * d, 21), v = random_vector(length * d, 22);
  std::vector<double> probs(heads * length * length), out(length * d);
  causal_attention_forward(q.data(), k.data(), v.data(), length, first, heads, dh, probs.data(), out.data());
  for (int64_t t = first; t < length; ++t)
    for (int64_t col = 0; col < d; ++col) {
      double mean = 0.0;
      for (int64_t j = first; j <= t; ++j) mean += v[j * d + col];
      EXPECT_NEAR(out[t * d + col], mean / double(t - first + 1), 1e-15) << t << "," << col;
    }
  EXPECT_DOUBLE_EQ(probs[(1 * length + 3) * length + 2], 0.5);  // head 1, query 3, key 2
  EXPECT_DOUBLE_EQ(probs[(1 * length + 3) * length + 4], 0.0);  // a future key
}

TEST(CausalAttention, PaddingRowsAreZeroAndTheFutureIsInvisible) {
  const int64_t length = 7, first = 3, heads = 2, dh = 4, d = heads * dh;
  std::vector<float> q(length * d), k(length * d), v(length * d);
  std::mt19937 rng(5);
  std::normal_distribution<float> dist;
  for (auto* m : {&q, &k, &v})
    for (float& value : *m) value = dist(rng);
  std::vector<float> probs(heads * length * length), before(length * d), after(length * d);
  causal_attention_forward(q.data(), k.data(), v.data(), length, first, heads, dh, probs.data(), before.data());
  for (int64_t t = 0; t < first; ++t)
    for (int64_t col = 0; col < d; ++col) EXPECT_EQ(before[t * d + col], 0.0f);
  for (int64_t col = 0; col < d; ++col) {  // change the last key and value, and a padding row
    k[(length - 1) * d + col] += 3.0f;
    v[(length - 1) * d + col] -= 2.0f;
    k[col] = v[col] = 100.0f;
  }
  causal_attention_forward(q.data(), k.data(), v.data(), length, first, heads, dh, probs.data(), after.data());
  for (int64_t i = 0; i < (length - 1) * d; ++i) EXPECT_EQ(before[i], after[i]) << i;
  bool last_changed = false;
  for (int64_t col = 0; col < d; ++col) last_changed |= before[(length - 1) * d + col] != after[(length - 1) * d + col];
  EXPECT_TRUE(last_changed);
}

// The newest position's attention alone is the last row of the whole causal attention.
TEST(CausalAttention, TheNewestQueryAloneIsTheLastRow) {
  const int64_t length = 9, heads = 2, dh = 3, d = heads * dh;
  const std::vector<double> q = random_vector(length * d, 31), k = random_vector(length * d, 32),
                            v = random_vector(length * d, 33);
  std::vector<double> probs(heads * length * length), all(length * d), newest(d);
  causal_attention_forward(q.data(), k.data(), v.data(), length, int64_t{0}, heads, dh, probs.data(), all.data());
  newest_query_attention(q.data() + (length - 1) * d, k.data(), v.data(), length, heads, dh, newest.data());
  for (int64_t col = 0; col < d; ++col) EXPECT_NEAR(newest[col], all[(length - 1) * d + col], 1e-14) << col;
}

TEST(SampledLoss, KnownAnswerAtZeroScores) {
  const int64_t n = 2, d = 3, slots = 4;
  const std::vector<double> h(n * d, 0.0), table = random_vector(5 * d, 31), weight = {1.0, 0.5};
  const std::vector<uint32_t> items = {0, 1, 2, 3, 4, 3, 2, 1};
  std::vector<double> coef(n * slots), dh(n * d);
  const double beta = 0.25;
  const double loss = sampled_loss_forward_backward(h.data(), n, d, table.data(), items.data(), slots,
                                                    weight.data(), beta, 1.0, coef.data(), dh.data());
  EXPECT_NEAR(loss, 1.5 * (beta + 3.0) * std::log(2.0), 1e-14);
  EXPECT_DOUBLE_EQ(coef[0], -0.5 * beta);
  EXPECT_DOUBLE_EQ(coef[slots + 1], 0.25);
}

TEST(SampledLoss, GradientsMatchFiniteDifferences) {
  const int64_t n = 4, d = 3, slots = 3, rows = 6;
  std::vector<double> h = random_vector(n * d, 41), table = random_vector(rows * d, 42);
  const std::vector<double> weight = {1.0, 0.0, 0.5, 2.0};  // position 1 is padding
  const std::vector<uint32_t> items = {0, 1, 2, 3, 4, 5, 1, 0, 5, 2, 1, 1};  // repeats collide
  const double beta = 0.7, scale = 0.25;
  std::vector<double> coef(n * slots), dh(n * d);
  auto loss = [&] {
    return scale * sampled_loss_forward_backward(h.data(), n, d, table.data(), items.data(), slots,
                                                 weight.data(), beta, scale, coef.data(), dh.data());
  };
  loss();
  const std::vector<double> analytic_h = dh;
  for (int64_t s = 0; s < slots; ++s) EXPECT_EQ(coef[1 * slots + s], 0.0);
  for (int64_t j = 0; j < d; ++j) EXPECT_EQ(dh[1 * d + j], 0.0);
  std::vector<double> grad_table(rows * d, 0.0);
  scatter_item_grads(coef.data(), h.data(), items.data(), n, slots, d, 2, grad_table.data());
  EXPECT_TRUE(gradient_matches(h, analytic_h, loss, "h"));
  EXPECT_TRUE(gradient_matches(table, grad_table, loss, "table"));
}

TEST(SampledLoss, ScatterIsBitIdenticalOverThreadCounts) {
  const int64_t n = 60, d = 8, slots = 5, rows = 7;
  std::mt19937 rng(51);
  std::normal_distribution<float> dist;
  std::vector<float> coef(n * slots), h(n * d);
  for (float& value : coef) value = dist(rng);
  for (float& value : h) value = dist(rng);
  std::vector<uint32_t> items(n * slots);
  for (uint32_t& item : items) item = rng() % rows;
  std::vector<float> reference(rows * d, 0.5f);
  scatter_item_grads(coef.data(), h.data(), items.data(), n, slots, d, 1, reference.data());
  for (int threads : {2, 3}) {
    std::vector<float> grad(rows * d, 0.5f);
    scatter_item_grads(coef.data(), h.data(), items.data(), n, slots, d, threads, grad.data());
    EXPECT_EQ(std::memcmp(grad.data(), reference.data(), grad.size() * sizeof(float)), 0) << threads;
  }
}

TEST(SequenceMath, DropoutKeepsAboutOneMinusRateDeterministically) {
  const float rate = 0.1f;
  const int64_t elements = 100000;
  int64_t kept = 0;
  for (int64_t e = 0; e < elements; ++e)
    kept += (tastebud::dropout_keep_bits(42, 3, e / 16, rate) >> (e % 16)) & 1u;
  EXPECT_NEAR(double(kept) / elements, 1.0 - rate, 0.01);
  EXPECT_EQ(tastebud::dropout_keep_bits(42, 3, 17, rate), tastebud::dropout_keep_bits(42, 3, 17, rate));
  bool epochs_differ = false;
  for (uint64_t block = 0; block < 8; ++block)
    epochs_differ |= tastebud::dropout_keep_bits(42, 3, block, rate) != tastebud::dropout_keep_bits(42, 4, block, rate);
  EXPECT_TRUE(epochs_differ);
  EXPECT_EQ(tastebud::dropout_keep_bits(42, 3, 5, 0.0f), 0xFFFFu);
  EXPECT_EQ(tastebud::dropout_keep_bits(42, 3, 5, 1.0f), 0u);
}

TEST(SequenceMath, GbceBeta) {
  for (float alpha : {0.001f, 0.25f, 1.0f}) EXPECT_EQ(tastebud::gbce_beta(alpha, 0.0f), 1.0f);
  for (float t : {0.0f, 0.5f, 0.75f, 1.0f}) EXPECT_EQ(tastebud::gbce_beta(1.0f, t), 1.0f);
  EXPECT_FLOAT_EQ(tastebud::gbce_beta(0.25f, 1.0f), 0.25f);
  EXPECT_FLOAT_EQ(tastebud::gbce_beta(0.25f, 0.5f), 0.625f);  // 0.25 (0.5 (1 - 4) + 4)
  EXPECT_EQ(tastebud::gbce_beta(2.0f, 0.5f), 1.0f);           // alpha clamped to 1
  EXPECT_EQ(tastebud::gbce_beta(-1.0f, 0.5f), 0.5f);          // alpha clamped to just above 0
  EXPECT_FLOAT_EQ(tastebud::gbce_positive_loss(0.3f, 1.0f), tastebud::bce_loss(0.3f, 1.0f));
  EXPECT_FLOAT_EQ(tastebud::gbce_positive_grad(0.3f, 0.5f), 0.5f * tastebud::bce_grad(0.3f, 1.0f));
}

}  // namespace
