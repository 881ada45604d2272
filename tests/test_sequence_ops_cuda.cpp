// The SASRec ops on the GPU (kernels/cuda/sequence.h) against their CPU twins (kernels/cpu/sequence.h)
// on random inputs, packed batches of sequences of varied lengths included, and the deterministic
// reductions run twice for the same bits. The dropout mask and the input rows are checked against
// the formula SequencePass applies on the CPU. Without a usable GPU every test skips with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cpu/sequence.h"
#include "cuda/common.h"
#include "cuda/embedding.h"
#include "cuda/sequence.h"
#include "tastebud/sequence_math.h"

namespace tastebud {
namespace {

std::vector<float> random_floats(size_t size, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> out(size);
  for (float& value : out) value = dist(rng);
  return out;
}

std::vector<uint32_t> random_ids(size_t size, uint32_t bound, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> dist(0, bound - 1);
  std::vector<uint32_t> out(size);
  for (uint32_t& value : out) value = dist(rng);
  return out;
}

::testing::AssertionResult near_all(const std::vector<float>& got, const std::vector<float>& ref, double rtol,
                                    double atol, const char* what) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << ", expected " << ref.size();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double tolerance = atol + rtol * std::abs(static_cast<double>(ref[i]));
    if (!(std::abs(static_cast<double>(got[i]) - ref[i]) <= tolerance))
      return ::testing::AssertionFailure() << what << "[" << i << "] of " << ref.size() << ": got " << got[i]
                                           << ", expected " << ref[i];
  }
  return ::testing::AssertionSuccess();
}

constexpr double kRtol = 1e-4, kAtol = 1e-5;

class SequenceOpsCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    if (!cuda::probe(&reason)) GTEST_SKIP() << "CUDA backend unavailable (no usable GPU device): " << reason;
  }
};

// A packed batch: sequence b owns rows starts[b] .. starts[b+1], its probs at prob_offsets[b].
struct Packed {
  std::vector<int64_t> starts{0}, prob_offsets{0};
  int64_t rows() const { return starts.back(); }
  int64_t count() const { return static_cast<int64_t>(starts.size()) - 1; }
};

Packed pack(const std::vector<int64_t>& lengths, int64_t heads) {
  Packed p;
  for (const int64_t n : lengths) {
    p.starts.push_back(p.starts.back() + n);
    p.prob_offsets.push_back(p.prob_offsets.back() + heads * n * n);
  }
  return p;
}

const std::vector<int64_t> kLengths = {1, 7, 0, 33, 2, 64, 150, 5};

TEST_F(SequenceOpsCuda, LayerNormMatchesCpu) {
  for (const int64_t d : {16, 48, 100}) {
    const int64_t n = 211;
    const auto x = random_floats(n * d, 1, 2.0f), gamma = random_floats(d, 2), beta = random_floats(d, 3);
    const auto dy = random_floats(n * d, 4);
    std::vector<float> y(n * d), mean(n), rstd(n), dx(n * d), dgamma = random_floats(d, 5),
                                                        dbeta = random_floats(d, 6);
    const auto dgamma0 = dgamma, dbeta0 = dbeta;
    cpu::layer_norm_forward(x.data(), gamma.data(), beta.data(), n, d, 1e-5f, y.data(), mean.data(), rstd.data());
    cpu::layer_norm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), n, d, dx.data(),
                             dgamma.data(), dbeta.data());

    auto gx = cuda::to_device(x), ggamma = cuda::to_device(gamma), gbeta = cuda::to_device(beta);
    auto gdy = cuda::to_device(dy);
    cuda::DeviceBuffer<float> gy(n * d), gmean(n), grstd(n), gdx(n * d);
    cuda::DeviceBuffer<float> partial(cuda::layer_norm_partials(n, d));
    cuda::layer_norm_forward(gx.data(), ggamma.data(), gbeta.data(), n, d, 1e-5f, gy.data(), gmean.data(),
                             grstd.data(), nullptr);
    EXPECT_TRUE(near_all(gy.download(), y, kRtol, kAtol, "y"));
    EXPECT_TRUE(near_all(gmean.download(), mean, kRtol, kAtol, "mean"));
    EXPECT_TRUE(near_all(grstd.download(), rstd, kRtol, kAtol, "rstd"));
    std::vector<float> first_dgamma;
    for (int run = 0; run < 2; ++run) {
      auto gdgamma = cuda::to_device(dgamma0), gdbeta = cuda::to_device(dbeta0);
      cuda::layer_norm_backward(gdy.data(), gx.data(), ggamma.data(), gmean.data(), grstd.data(), n, d, gdx.data(),
                                gdgamma.data(), gdbeta.data(), partial.data(), nullptr);
      const auto got_dgamma = gdgamma.download();
      EXPECT_TRUE(near_all(gdx.download(), dx, kRtol, 1e-4, "dx"));
      EXPECT_TRUE(near_all(got_dgamma, dgamma, kRtol, 1e-4, "dgamma"));
      EXPECT_TRUE(near_all(gdbeta.download(), dbeta, kRtol, 1e-4, "dbeta"));
      if (run == 0) first_dgamma = got_dgamma;
      else EXPECT_EQ(got_dgamma, first_dgamma) << "dgamma differs between two runs";
    }
  }
}

// The CPU reference over a packed batch: each sequence on its own, as SequencePass::attention.
struct AttentionCase {
  int64_t heads, dh;
  Packed packed;
  std::vector<float> q, k, v, dout;
  AttentionCase(int64_t heads_, int64_t dh_) : heads(heads_), dh(dh_), packed(pack(kLengths, heads_)) {
    const size_t size = static_cast<size_t>(packed.rows() * heads * dh);
    q = random_floats(size, 11);
    k = random_floats(size, 12);
    v = random_floats(size, 13);
    dout = random_floats(size, 14);
  }
  int64_t d() const { return heads * dh; }
};

TEST_F(SequenceOpsCuda, CausalAttentionMatchesCpu) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{2, 8}, {3, 20}, {1, 64}};  // heads, dh
  for (const auto& [heads, dh] : shapes) {
    AttentionCase c(heads, dh);
    const int64_t d = c.d(), rows = c.packed.rows();
    std::vector<float> probs(c.packed.prob_offsets.back()), out(rows * d), dq(rows * d), dk(rows * d), dv(rows * d);
    for (int64_t b = 0; b < c.packed.count(); ++b) {
      const int64_t r0 = c.packed.starts[b], n = c.packed.starts[b + 1] - r0, o = r0 * d;
      float* p = probs.data() + c.packed.prob_offsets[b];
      cpu::causal_attention_forward(c.q.data() + o, c.k.data() + o, c.v.data() + o, n, int64_t{0}, heads, dh, p,
                                    out.data() + o);
      cpu::causal_attention_backward(c.dout.data() + o, c.q.data() + o, c.k.data() + o, c.v.data() + o, p, n,
                                     int64_t{0}, heads, dh, dq.data() + o, dk.data() + o, dv.data() + o);
    }
    auto gq = cuda::to_device(c.q), gk = cuda::to_device(c.k), gv = cuda::to_device(c.v);
    auto gdout = cuda::to_device(c.dout);
    auto gstarts = cuda::to_device(c.packed.starts), goffsets = cuda::to_device(c.packed.prob_offsets);
    cuda::DeviceBuffer<float> gprobs(probs.size()), gout(rows * d), gdq(rows * d), gdk(rows * d), gdv(rows * d);
    cuda::DeviceBuffer<float> gds(probs.size());
    std::vector<float> first_dk;
    for (int run = 0; run < 2; ++run) {
      cuda::causal_attention_forward(gq.data(), gk.data(), gv.data(), gstarts.data(), goffsets.data(),
                                     c.packed.count(), rows, heads, dh, gprobs.data(), gout.data(), nullptr);
      cuda::causal_attention_backward(gdout.data(), gq.data(), gk.data(), gv.data(), gprobs.data(), gstarts.data(),
                                      goffsets.data(), c.packed.count(), rows, heads, dh, gdq.data(), gdk.data(),
                                      gdv.data(), gds.data(), nullptr);
      EXPECT_TRUE(near_all(gprobs.download(), probs, kRtol, kAtol, "probs"));
      EXPECT_TRUE(near_all(gout.download(), out, kRtol, kAtol, "out"));
      EXPECT_TRUE(near_all(gdq.download(), dq, kRtol, kAtol, "dq"));
      EXPECT_TRUE(near_all(gdv.download(), dv, kRtol, kAtol, "dv"));
      const auto got_dk = gdk.download();
      EXPECT_TRUE(near_all(got_dk, dk, kRtol, kAtol, "dk"));
      if (run == 0) first_dk = got_dk;
      else EXPECT_EQ(got_dk, first_dk) << "dk differs between two runs";
    }
  }
}

TEST_F(SequenceOpsCuda, SampledLossMatchesCpu) {
  const int64_t n = 300, d = 40, slots = 6, table_rows = 17;
  const auto h = random_floats(n * d, 21, 0.5f), table = random_floats(table_rows * d, 22, 0.5f);
  const auto items = random_ids(n * slots, table_rows, 23);
  std::vector<float> weight(n, 1.0f);
  for (int64_t p = 0; p < n; p += 7) weight[p] = 0.0f;  // skipped positions
  for (int64_t p = 3; p < n; p += 11) weight[p] = 0.5f;
  const float beta = gbce_beta(5.0f / 16.0f, 0.75f), scale = 1.0f / static_cast<float>(n);
  std::vector<float> coef(n * slots), dh(n * d);
  const double loss = cpu::sampled_loss_forward_backward(h.data(), n, d, table.data(), items.data(), slots,
                                                         weight.data(), beta, scale, coef.data(), dh.data());

  auto gh = cuda::to_device(h), gtable = cuda::to_device(table), gweight = cuda::to_device(weight);
  auto gitems = cuda::to_device(items);
  cuda::DeviceBuffer<float> gcoef(n * slots), gdh(n * d);
  cuda::DeviceBuffer<double> gloss(n);
  cuda::sampled_loss_forward_backward(gh.data(), n, d, gtable.data(), gitems.data(), slots, gweight.data(), beta,
                                      scale, gcoef.data(), gdh.data(), gloss.data(), nullptr);
  const auto got_coef = gcoef.download();
  EXPECT_TRUE(near_all(got_coef, coef, kRtol, 1e-7, "coef"));
  EXPECT_TRUE(near_all(gdh.download(), dh, kRtol, 1e-7, "dh"));
  double got_loss = 0.0;
  for (const double value : gloss.download()) got_loss += value;
  EXPECT_NEAR(got_loss, loss, 1e-4 * std::abs(loss));
  for (int64_t p = 0; p < n; p += 7)
    for (int64_t s = 0; s < slots; ++s) EXPECT_EQ(got_coef[p * slots + s], 0.0f);

  // The scatter of the same coefficients (the CPU's), twice: the same bits each time.
  const auto grad0 = random_floats(table_rows * d, 24);
  std::vector<float> grad = grad0;
  cpu::scatter_item_grads(coef.data(), h.data(), items.data(), n, slots, d, 3, grad.data());
  auto gcoef_cpu = cuda::to_device(coef);
  cuda::RowGroups groups(n * slots, static_cast<uint32_t>(table_rows));
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    auto ggrad = cuda::to_device(grad0);
    cuda::scatter_item_grads(gcoef_cpu.data(), gh.data(), gitems.data(), n, slots, d, groups, ggrad.data(), nullptr);
    const auto got = ggrad.download();
    EXPECT_TRUE(near_all(got, grad, kRtol, kAtol, "grad_table"));
    if (run == 0) first = got;
    else EXPECT_EQ(got, first) << "the item scatter differs between two runs";
  }
}

TEST_F(SequenceOpsCuda, InputRowsMatchTheCpuPass) {
  const int64_t rows = 257, d = 24, items_rows = 31, max_sequence = 12;
  const auto items_table = random_floats(items_rows * d, 31), positions_table = random_floats(max_sequence * d, 32);
  const auto input = random_ids(rows, items_rows, 33), position = random_ids(rows, max_sequence, 34);
  const auto dx = random_floats(rows * d, 35), grad_pos0 = random_floats(max_sequence * d, 36);
  // SequencePass::forward and ::backward's loops.
  const float scale = std::sqrt(static_cast<float>(d));
  std::vector<float> x(rows * d), d_input(rows * d), grad_pos = grad_pos0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < d; ++c) {
      x[r * d + c] = items_table[input[r] * d + c] * scale + positions_table[position[r] * d + c];
      grad_pos[position[r] * d + c] += dx[r * d + c];
      d_input[r * d + c] = dx[r * d + c] * scale;
    }
  }
  auto gitems = cuda::to_device(items_table), gpositions = cuda::to_device(positions_table);
  auto ginput = cuda::to_device(input), gposition = cuda::to_device(position);
  auto gdx = cuda::to_device(dx);
  cuda::DeviceBuffer<float> gx(rows * d), gd_input(rows * d);
  cuda::input_rows_forward(gitems.data(), gpositions.data(), ginput.data(), gposition.data(), rows, d, gx.data(),
                           nullptr);
  EXPECT_TRUE(near_all(gx.download(), x, 1e-6, 1e-6, "x"));
  cuda::RowGroups groups(rows, static_cast<uint32_t>(max_sequence));
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    auto ggrad = cuda::to_device(grad_pos0);
    cuda::input_rows_backward(gdx.data(), gposition.data(), rows, d, groups, ggrad.data(), gd_input.data(), nullptr);
    const auto got = ggrad.download();
    // Rows added in ascending order, as the CPU adds them: the same bits.
    EXPECT_EQ(got, grad_pos) << "the positions' gradient";
    EXPECT_EQ(gd_input.download(), d_input) << "the input rows' gradient";
    if (run == 0) first = got;
    else EXPECT_EQ(got, first);
  }
}

TEST_F(SequenceOpsCuda, DropoutMatchesTheCpuMask) {
  const std::vector<int64_t> lengths = {3, 1, 12, 0, 9};
  const Packed packed = pack(lengths, 1);
  const int64_t rows = packed.rows(), max_sequence = 12;
  const std::vector<uint64_t> dropout_id = {5, 0, 77, 3, 1234567};
  std::vector<uint32_t> position;
  for (const int64_t n : lengths)
    for (int64_t t = 0; t < n; ++t) position.push_back(static_cast<uint32_t>(max_sequence - n + t));
  cuda::DropoutSite site;
  site.seed = 42;
  site.epoch = 3;
  site.rate = 0.3f;
  site.sites = 5;
  site.site = 2;
  site.max_sequence = static_cast<uint32_t>(max_sequence);
  for (const int64_t d : {16, 40}) {
    const auto x0 = random_floats(rows * d, 41), dy0 = random_floats(rows * d, 42);
    // SequencePass::apply_dropout and dropout_backward.
    const uint64_t dpad = (static_cast<uint64_t>(d) + 15) / 16 * 16;
    const float keep_scale = 1.0f / (1.0f - site.rate);
    std::vector<float> x = x0, dy = dy0;
    std::vector<uint8_t> mask(rows * d);
    for (int64_t b = 0; b < packed.count(); ++b) {
      for (int64_t r = packed.starts[b]; r < packed.starts[b + 1]; ++r) {
        const uint64_t base = ((dropout_id[b] * site.sites + site.site) * site.max_sequence + position[r]) * dpad;
        for (int64_t c = 0; c < d; ++c) {
          const uint32_t bits = dropout_keep_bits(site.seed, site.epoch, (base + c / 16 * 16) / 16, site.rate);
          mask[r * d + c] = static_cast<uint8_t>((bits >> (c % 16)) & 1u);
          x[r * d + c] = mask[r * d + c] ? x[r * d + c] * keep_scale : 0.0f;
          dy[r * d + c] = mask[r * d + c] ? dy[r * d + c] * keep_scale : 0.0f;
        }
      }
    }
    auto gx = cuda::to_device(x0), gdy = cuda::to_device(dy0);
    auto gstarts = cuda::to_device(packed.starts);
    auto gids = cuda::to_device(dropout_id);
    auto gposition = cuda::to_device(position);
    cuda::DeviceBuffer<uint8_t> gmask(rows * d);
    cuda::dropout_forward(gx.data(), gmask.data(), gstarts.data(), gids.data(), gposition.data(), packed.count(),
                          rows, d, site, nullptr);
    cuda::dropout_backward(gdy.data(), gmask.data(), rows * d, site.rate, nullptr);
    EXPECT_EQ(gmask.download(), mask);
    EXPECT_EQ(gx.download(), x);
    EXPECT_EQ(gdy.download(), dy);
  }
}

}  // namespace
}  // namespace tastebud
