#include "tastebud/engine/scorer.h"

#include <algorithm>
#include <cstring>

#include "tastebud/error.h"

namespace tastebud {
namespace {

// Items per block: the activations of a block stay in L1 for widths up to 64.
constexpr int64_t kBlock = 64;
// Eight floats: GCC and Clang lower this to one AVX register (or two SSE ones), and, unlike a plain
// loop, the compiler cannot turn the accumulation inside out (it vectorized the input loop with
// shuffles instead and ran 7x slower than Eigen).
using Float8 = float __attribute__((vector_size(32)));

inline Float8 load8(const float* p) {
  Float8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, Float8 v) { std::memcpy(p, &v, sizeof(v)); }

// The lanes of eight accumulators summed, one item's each: lane r of the result is
// ((a_r0 + a_r4) + (a_r1 + a_r5)) + ((a_r2 + a_r6) + (a_r3 + a_r7)), the order of one vector's
// horizontal sum, for eight items in three rounds of shuffles and adds.
inline Float8 sum_lanes8(const Float8 (&a)[8]) {
  auto fold = [](Float8 x, Float8 y) {  // each one's high half onto its low half
    return Float8(__builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11)) + Float8(__builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15));
  };
  auto pairs = [](Float8 x, Float8 y) {  // neighbouring lanes
    return Float8(__builtin_shufflevector(x, y, 0, 2, 8, 10, 4, 6, 12, 14)) + Float8(__builtin_shufflevector(x, y, 1, 3, 9, 11, 5, 7, 13, 15));
  };
  const Float8 d0 = pairs(fold(a[0], a[1]), fold(a[2], a[3]));  // items 0, 2, 1, 3 as two halves each
  const Float8 d1 = pairs(fold(a[4], a[5]), fold(a[6], a[7]));
  return Float8(__builtin_shufflevector(d0, d1, 0, 4, 2, 6, 8, 12, 10, 14)) + Float8(__builtin_shufflevector(d0, d1, 1, 5, 3, 7, 9, 13, 11, 15));
}

// out = relu(in * w + b) with the output width (a multiple of 8) fixed at compile time. Several
// rows go together so that they share every load of a weight row; the accumulators of a group fit
// in the 16 AVX registers.
template <int kOut>
void dense_relu_fixed(const float* in, int64_t n, int64_t in_width, const float* w, const float* b,
                      float* out) {
  constexpr int kVectors = kOut / 8;
  constexpr int64_t kRows = kVectors <= 2 ? 4 : kVectors == 4 ? 2 : 1;
  const Float8 zero = {};
  Float8 bias[kVectors];
  for (int v = 0; v < kVectors; ++v) bias[v] = load8(b + 8 * v);
  auto group = [&]<int64_t kGroup>(int64_t k) {
    Float8 acc[kGroup][kVectors];
    for (int64_t r = 0; r < kGroup; ++r)
      for (int v = 0; v < kVectors; ++v) acc[r][v] = bias[v];
    for (int64_t j = 0; j < in_width; ++j) {
      Float8 wr[kVectors];
      for (int v = 0; v < kVectors; ++v) wr[v] = load8(w + j * kOut + 8 * v);
      for (int64_t r = 0; r < kGroup; ++r) {
        const float x = in[(k + r) * in_width + j];
        for (int v = 0; v < kVectors; ++v) acc[r][v] += x * wr[v];
      }
    }
    for (int64_t r = 0; r < kGroup; ++r)
      for (int v = 0; v < kVectors; ++v) {
        const Float8 a = acc[r][v];
        store8(out + (k + r) * kOut + 8 * v, a > zero ? a : zero);
      }
  };
  int64_t k = 0;
  for (; k + kRows <= n; k += kRows) group.template operator()<kRows>(k);
  for (; k < n; ++k) group.template operator()<1>(k);
}

void dense_relu_any(const float* in, int64_t n, int64_t in_width, const float* w, const float* b,
                    int64_t out_width, float* out) {
  for (int64_t k = 0; k < n; ++k) {
    float* y = out + k * out_width;
    for (int64_t o = 0; o < out_width; ++o) y[o] = b[o];
    for (int64_t j = 0; j < in_width; ++j) {
      const float x = in[k * in_width + j];
      const float* wr = w + j * out_width;
      for (int64_t o = 0; o < out_width; ++o) y[o] += x * wr[o];
    }
    for (int64_t o = 0; o < out_width; ++o) y[o] = std::max(y[o], 0.0f);
  }
}

void dense_relu(const float* in, int64_t n, int64_t in_width, const float* w, const float* b,
                int64_t out_width, float* out) {
  switch (out_width) {
    case 8: return dense_relu_fixed<8>(in, n, in_width, w, b, out);
    case 16: return dense_relu_fixed<16>(in, n, in_width, w, b, out);
    case 32: return dense_relu_fixed<32>(in, n, in_width, w, b, out);
    case 64: return dense_relu_fixed<64>(in, n, in_width, w, b, out);
    default: return dense_relu_any(in, n, in_width, w, b, out_width, out);
  }
}

}  // namespace

Scorer::Scorer(const ModelParams& params) : params_(params) {
  TB_CHECK(!params.config.has_metadata(),
           "scorer: this model uses metadata; score it with the users' and items' feature inputs");
  precompute();
}

Scorer::Scorer(const ModelParams& params, const FeatureInputs& users, const FeatureInputs& items)
    : folded_(std::make_unique<const ModelParams>(fold_features(params, users, items))), params_(*folded_) {
  precompute();
}

void Scorer::precompute() {
  const ModelConfig& c = params_.config;
  TB_CHECK(!c.has_gmf() || c.factors <= 1024, "scorer: more than 1024 factors");
  if (!c.has_mlp() || c.num_dense_layers() == 0) return;
  const int64_t e = c.mlp_embedding(), l1 = c.layers[1];
  item_first_layer_.resize(static_cast<size_t>(c.num_items) * l1);
  const float* w_item = params_.weights[0].values.data() + e * l1;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(c.num_items); ++i) {
    const float* v = params_.item_mlp.values.data() + i * e;
    float* q = item_first_layer_.data() + i * l1;
    std::fill(q, q + l1, 0.0f);
    for (int64_t j = 0; j < e; ++j)
      for (int64_t o = 0; o < l1; ++o) q[o] += v[j] * w_item[j * l1 + o];
  }
}

size_t Scorer::scratch_floats() const {
  const ModelConfig& c = params_.config;
  size_t widest = 1;
  if (c.has_mlp())
    for (uint32_t w : c.layers) widest = std::max<size_t>(widest, w);
  // user_part, user_head, two activation blocks.
  return (c.has_mlp() ? c.layers[1] : 0) + (c.has_gmf() ? c.factors : 0) + 2 * kBlock * widest;
}

void Scorer::prepare_user(uint32_t user, const float* context, float* user_part, float* user_head) const {
  const ModelConfig& c = params_.config;
  TB_CHECK(user < c.num_users, "scorer: user index out of range");
  prepare_rows(c.has_gmf() ? params_.user_gmf.values.data() + static_cast<int64_t>(user) * c.factors : nullptr,
               c.has_mlp() ? params_.user_mlp.values.data() + static_cast<int64_t>(user) * c.mlp_embedding() : nullptr,
               context, user_part, user_head);
}

void Scorer::prepare_rows(const float* user_gmf, const float* user_mlp, const float* context, float* user_part,
                          float* user_head) const {
  const ModelConfig& c = params_.config;
  const float* head = params_.head_weight.values.data();
  if (c.has_gmf()) {
    // (user ⊙ item) · w = item · (user ⊙ w).
    const float* u = user_gmf;
    for (uint32_t j = 0; j < c.factors; ++j) user_head[j] = u[j] * head[j];
  }
  if (c.has_mlp() && c.num_dense_layers() > 0) {
    const int64_t e = c.mlp_embedding(), l1 = c.layers[1];
    const float* u = user_mlp;
    const float* w_user = params_.weights[0].values.data();
    const float* bias = params_.biases[0].values.data();
    for (int64_t o = 0; o < l1; ++o) user_part[o] = bias[o];
    for (int64_t j = 0; j < e; ++j) {
      // The context joins the user's half of the input, as in training.
      const float x = context ? u[j] + context[j] : u[j];
      for (int64_t o = 0; o < l1; ++o) user_part[o] += x * w_user[j * l1 + o];
    }
  }
}

void Scorer::score_block(const float* user_part, const float* user_head,
                                const uint32_t* items, uint32_t first_item, int64_t count,
                                float* out, float* scratch) const {
  const ModelConfig& c = params_.config;
  auto item_at = [&](int64_t k) -> int64_t { return items ? items[k] : first_item + k; };
  const float* head = params_.head_weight.values.data();
  const float bias = params_.head_bias.values[0];
  const int64_t f = c.has_gmf() ? c.factors : 0;
  const int64_t h = c.mlp_output();
  const float* last = nullptr;
  if (c.has_mlp()) {
    const int64_t layers = static_cast<int64_t>(c.num_dense_layers());
    const int64_t l1 = c.layers[1];
    size_t widest = 1;
    for (uint32_t w : c.layers) widest = std::max<size_t>(widest, w);
    float* a = scratch;
    float* b = scratch + kBlock * widest;
    const Float8 zero = {};
    for (int64_t k = 0; k < count; ++k) {
      const float* q = item_first_layer_.data() + item_at(k) * l1;
      float* y = a + k * l1;
      int64_t o = 0;
      for (; o + 8 <= l1; o += 8) {
        const Float8 x = load8(q + o) + load8(user_part + o);
        store8(y + o, x > zero ? x : zero);
      }
      for (; o < l1; ++o) y[o] = std::max(q[o] + user_part[o], 0.0f);
    }
    for (int64_t j = 1; j < layers; ++j) {
      dense_relu(a, count, c.layers[j], params_.weights[j].values.data(),
                 params_.biases[j].values.data(), c.layers[j + 1], b);
      std::swap(a, b);
    }
    last = a;
  }
  // The head: GMF factors times (user ⊙ w) plus the last MLP layer times its weights, eight items
  // at a time. Each item's largest multiples of 8 of both widths go into one vector, the eight
  // vectors' lanes are summed together (sum_lanes8), then the rest of the widths (MF's two bias
  // columns) in order. Every item, a short group's too, goes through the same code: it scores the
  // same alone or in a block. (One item at a time, the horizontal sum and the tail cost more than
  // MF's 66-wide product: this is 2.7x faster there.)
  const float* head_mlp = head + f;
  const float* gmf = params_.item_gmf.values.data();
  const int64_t f8 = f - f % 8, h8 = h - h % 8;
  for (int64_t k = 0; k < count; k += 8) {
    const int64_t n = std::min<int64_t>(8, count - k);
    const float* v[8];
    const float* y[8];
    for (int64_t r = 0; r < 8; ++r) {
      const int64_t item = k + std::min(r, n - 1);  // a short group repeats its last item
      v[r] = gmf + item_at(item) * f;
      y[r] = h > 0 ? last + item * h : nullptr;  // MF and GMF have no MLP rows
    }
    Float8 acc[8] = {};
    for (int64_t j = 0; j < f8; j += 8) {
      const Float8 u = load8(user_head + j);
      for (int r = 0; r < 8; ++r) acc[r] += load8(v[r] + j) * u;
    }
    for (int64_t j = 0; j < h8; j += 8) {
      const Float8 w = load8(head_mlp + j);
      for (int r = 0; r < 8; ++r) acc[r] += load8(y[r] + j) * w;
    }
    Float8 z = bias + sum_lanes8(acc);
    for (int64_t j = f8; j < f; ++j) z += Float8{v[0][j], v[1][j], v[2][j], v[3][j], v[4][j], v[5][j], v[6][j], v[7][j]} * user_head[j];
    for (int64_t j = h8; j < h; ++j) z += Float8{y[0][j], y[1][j], y[2][j], y[3][j], y[4][j], y[5][j], y[6][j], y[7][j]} * head_mlp[j];
    for (int64_t r = 0; r < n; ++r) out[k + r] = z[r];
  }
}

namespace {
const float* context_at(std::span<const float> contexts, size_t k, const ModelConfig& c) {
  if (contexts.empty()) return nullptr;
  TB_CHECK(c.has_context(), "scorer: a context was given but the model was trained without one");
  return contexts.data() + k * c.mlp_embedding();
}
}  // namespace

void Scorer::score_all(uint32_t user, std::span<float> out, std::span<const float> context) const {
  score_users(std::span<const uint32_t>(&user, 1), out, context);
}

void Scorer::score_users(std::span<const uint32_t> users, std::span<float> out,
                         std::span<const float> contexts) const {
  TB_CHECK(out.size() == users.size() * static_cast<size_t>(num_items()),
           "scorer: output size differs from users x catalog size");
  TB_CHECK(contexts.empty() || contexts.size() == users.size() * params_.config.mlp_embedding(),
           "scorer: one context vector per user is needed");
  const ModelConfig& c = params_.config;
  const size_t per_user = (c.has_mlp() ? c.layers[1] : 0) + (c.has_gmf() ? c.factors : 0);
  thread_local std::vector<float> scratch;
  scratch.resize(scratch_floats() + users.size() * per_user);
  float* blocks = scratch.data();
  float* prepared = blocks + scratch_floats();
  for (size_t u = 0; u < users.size(); ++u) {
    float* user_part = prepared + u * per_user;
    prepare_user(users[u], context_at(contexts, u, c), user_part, user_part + (c.has_mlp() ? c.layers[1] : 0));
  }
  // Item blocks outside, users inside: a block's first-layer rows and factors are read from memory
  // once for the whole group of users instead of once per user (the catalog's first layer, 3.2 MB
  // for 25K items, does not stay in L2 between users).
  for (uint32_t first = 0; first < num_items(); first += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, num_items() - first);
    for (size_t u = 0; u < users.size(); ++u) {
      const float* user_part = prepared + u * per_user;
      score_block(user_part, user_part + (c.has_mlp() ? c.layers[1] : 0), nullptr, first, n,
                  out.data() + u * num_items() + first, blocks);
    }
  }
}

void Scorer::score_rows(std::span<const float> user_gmf, std::span<const float> user_mlp, std::span<float> out,
                        std::span<const float> context) const {
  const ModelConfig& c = params_.config;
  TB_CHECK(out.size() == num_items(), "scorer: output size differs from the catalog size");
  TB_CHECK(user_gmf.size() == (c.has_gmf() ? c.factors : 0) && user_mlp.size() == (c.has_mlp() ? c.mlp_embedding() : 0),
           "scorer: the user's rows have the wrong width");
  TB_CHECK(context.empty() || context.size() == c.mlp_embedding(), "scorer: the context vector has the wrong width");
  thread_local std::vector<float> scratch;
  scratch.resize(scratch_floats());
  float* user_part = scratch.data();
  float* user_head = user_part + (c.has_mlp() ? c.layers[1] : 0);
  float* blocks = user_head + (c.has_gmf() ? c.factors : 0);
  prepare_rows(user_gmf.data(), user_mlp.data(), context_at(context, 0, c), user_part, user_head);
  for (uint32_t first = 0; first < num_items(); first += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, num_items() - first);
    score_block(user_part, user_head, nullptr, first, n, out.data() + first, blocks);
  }
}

void Scorer::score(uint32_t user, std::span<const uint32_t> items, std::span<float> out,
                   std::span<const float> context) const {
  TB_CHECK(out.size() == items.size(), "scorer: output size differs from the item count");
  TB_CHECK(context.empty() || context.size() == params_.config.mlp_embedding(),
           "scorer: the context vector has the wrong width");
  thread_local std::vector<float> scratch;
  scratch.resize(scratch_floats());
  const ModelConfig& c = params_.config;
  float* user_part = scratch.data();
  float* user_head = user_part + (c.has_mlp() ? c.layers[1] : 0);
  float* blocks = user_head + (c.has_gmf() ? c.factors : 0);
  prepare_user(user, context_at(context, 0, c), user_part, user_head);
  for (uint32_t item : items) TB_CHECK(item < num_items(), "scorer: item index out of range");
  for (size_t k = 0; k < items.size(); k += kBlock) {
    const int64_t n = std::min<int64_t>(kBlock, items.size() - k);
    score_block(user_part, user_head, items.data() + k, 0, n, out.data() + k, blocks);
  }
}

void Scorer::gmf_scores(uint32_t user, std::span<float> out) const {
  const ModelConfig& c = params_.config;
  TB_CHECK(c.has_gmf(), "two-stage retrieval needs a model with a GMF branch (neumf or gmf)");
  TB_CHECK(out.size() == num_items(), "scorer: output size differs from the catalog size");
  TB_CHECK(user < c.num_users, "scorer: user index out of range");
  const int64_t f = c.factors;
  const float* u = params_.user_gmf.values.data() + static_cast<int64_t>(user) * f;
  const float* head = params_.head_weight.values.data();
  float user_head[1024];
  for (int64_t j = 0; j < f; ++j) user_head[j] = u[j] * head[j];
  const float* items = params_.item_gmf.values.data();
  if (f == 8) {
    // The paper's width: one vector product and one horizontal sum per item.
    const Float8 uh = load8(user_head);
    for (int64_t i = 0; i < static_cast<int64_t>(num_items()); ++i) {
      const Float8 p = load8(items + i * 8) * uh;
      out[i] = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
    }
    return;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(num_items()); ++i) {
    float z = 0.0f;
    for (int64_t j = 0; j < f; ++j) z += items[i * f + j] * user_head[j];
    out[i] = z;
  }
}

}  // namespace tastebud
