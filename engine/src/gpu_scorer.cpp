// The GPU scorer (see gpu_scorer.h and kernels/cuda/scoring.h for the kernels).
//
// Per chunk of users, on one stream: their ids (and contexts) go up; their MLP rows are gathered
// and turned into the user half of the first layer, their GMF rows folded into the head; every
// (user, item) logit of the chunk is written to a [users x items] matrix (fused tower, or the
// layered cuBLAS path for shapes no fused kernel fits); excluded items are set to NaN; the
// selection kernel keeps each row's best k; only those come down. The logit matrix costs 8 bytes
// per pair of memory traffic against ~700 FMAs of compute for the paper's model, so keeping
// scoring and selection apart costs little and lets each be simple.
//
// Memory budget: the model goes up first (user and item tables, the item half of the first layer
// [items x width], the dense weights) and must fit in 90% of the free device memory. Of what is
// then free, half and at most 2 GiB is the working set: the layered path takes a quarter of it
// for two activation buffers [rows x widest layer]; the rest bounds the users per chunk at
// working / (4 * items + the user's own inputs and outputs), at most 4096 users (enough to fill
// the device many times over). A working set smaller than one user's row is an error that names
// both sizes.
#include "tastebud/engine/gpu_scorer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <vector>

#include "cuda/common.h"
#include "cuda/dense.h"
#include "cuda/scoring.h"
#include "cuda/topk.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

constexpr int64_t kMaxChunkUsers = 4096;
constexpr size_t kMaxWorkingBytes = size_t{2} << 30;
constexpr int64_t kMaxActivationRows = int64_t{1} << 22;

double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

// Grows only: a smaller request keeps the buffer, so no cudaFree (which waits for the device)
// happens between chunks.
template <class T>
T* reserve(cuda::DeviceBuffer<T>& buffer, size_t size) {
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

template <class T>
void upload(cuda::DeviceBuffer<T>& buffer, std::span<const T> host, cuda::StreamHandle stream) {
  reserve(buffer, host.size());
  cuda::copy_to_device(buffer.data(), host.data(), host.size_bytes(), stream);
}

}  // namespace

bool gpu_scorer_available(std::string* reason) { return cuda::probe(reason); }

struct GpuScorer::Impl {
  ModelConfig config;
  cuda::DeviceInfo device;
  cuda::Stream stream;
  std::unique_ptr<cuda::Blas> blas;  // the layered path only
  int64_t items = 0, e = 0, f = 0, first_width = 0;
  std::vector<int64_t> hidden;  // layers[1..]: the model's widths after the embedding
  bool fused = true;
  float head_bias = 0.0f;
  cuda::CatalogModel catalog;

  cuda::DeviceBuffer<float> user_mlp, user_gmf, item_gmf, item_part, head_weight, first_weight,
      first_bias, tower;
  std::vector<cuda::DeviceBuffer<float>> weights, biases;  // layered path: dense layers 1..

  int64_t chunk_users = 0, activation_rows = 0;
  cuda::DeviceBuffer<uint32_t> d_users, d_exclude_items, d_top_items;
  cuda::DeviceBuffer<uint64_t> d_exclude_offsets;
  cuda::DeviceBuffer<uint8_t> d_allowed;
  cuda::DeviceBuffer<float> d_contexts, user_rows, user_head, user_part, scores, act_a, act_b,
      d_top_scores;

  explicit Impl(const ModelParams& params);
  void check_inputs(std::span<const uint32_t> users, std::span<const float> contexts) const;
  void prepare_users(std::span<const uint32_t> users, std::span<const float> contexts);
  void score_chunk(int64_t count);
};

GpuScorer::Impl::Impl(const ModelParams& params) : config(params.config) {
  TB_CHECK(
      !config.has_metadata(),
      "GPU scorer: this model uses metadata; fold the users' and items' features into it first");
  std::string reason;
  if (!cuda::probe(&reason, &device)) throw Error("GPU scorer: no usable GPU: " + reason);
  items = config.num_items;
  e = config.mlp_embedding();
  f = config.has_gmf() ? config.factors : 0;
  head_bias = params.head_bias.values.at(0);
  if (config.has_mlp()) hidden.assign(config.layers.begin() + 1, config.layers.end());
  std::vector<int64_t> padded = cuda::fused_tower_widths(hidden);
  fused = hidden.empty() || !padded.empty();
  catalog.widths = fused ? padded : hidden;
  first_width = catalog.widths.empty() ? 0 : catalog.widths[0];

  // The tables, the item half of the first layer (item_mlp's upload is freed after it is formed),
  // and the dense parameters twice (as stored and packed or padded).
  double dense = static_cast<double>(params.head_weight.values.size());
  for (size_t j = 0; j < params.weights.size(); ++j)
    dense += static_cast<double>(params.weights[j].values.size() + params.biases[j].values.size());
  const double model_bytes =
      4.0 * (static_cast<double>(config.num_users) * (e + f) +
             static_cast<double>(items) * (e + f + first_width) + 2.0 * dense);
  if (model_bytes > 0.9 * static_cast<double>(device.free_bytes)) {
    throw Error(fmt::format(
        "GPU scorer: the model needs {:.0f} MiB of device memory; {:.0f} MiB of {:.0f} are free on "
        "{}",
        mib(model_bytes), mib(device.free_bytes), mib(device.total_bytes), device.name));
  }

  cuda::StreamHandle s = stream.get();
  upload(user_gmf, std::span<const float>(params.user_gmf.values), s);
  upload(item_gmf, std::span<const float>(params.item_gmf.values), s);
  upload(head_weight, std::span<const float>(params.head_weight.values), s);
  if (config.has_mlp()) {
    const int64_t l1 = hidden[0];
    upload(user_mlp, std::span<const float>(params.user_mlp.values), s);
    upload(first_weight, std::span<const float>(params.weights[0].values), s);
    upload(first_bias, std::span<const float>(params.biases[0].values), s);
    // The item half of the first layer, once for the catalog: item_mlp * W0[E.., :], no bias (the
    // user half carries it), zero-padded to the fused width.
    cuda::DeviceBuffer<float> item_mlp = cuda::to_device(params.item_mlp.values, s);
    reserve(item_part, static_cast<size_t>(items) * first_width);
    cuda::first_layer_half(item_mlp.data(), items, e, first_weight.data() + e * l1, nullptr, l1,
                           first_width, item_part.data(), s);
    if (fused) {
      std::vector<const float*> w, b;
      for (size_t j = 0; j < hidden.size(); ++j) {
        w.push_back(params.weights[j].values.data());
        b.push_back(params.biases[j].values.data());
      }
      const std::vector<float> packed =
          cuda::pack_tower(hidden, catalog.widths, w, b, params.head_weight.values.data() + f);
      upload(tower, std::span<const float>(packed), s);
      catalog.tower = tower.data();
      catalog.tower_floats = static_cast<int64_t>(packed.size());
    } else {
      weights.resize(hidden.size());
      biases.resize(hidden.size());
      for (size_t j = 1; j < hidden.size(); ++j) {
        upload(weights[j], std::span<const float>(params.weights[j].values), s);
        upload(biases[j], std::span<const float>(params.biases[j].values), s);
      }
      blas = std::make_unique<cuda::Blas>(s, cuda::GemmPrecision::kFp32);
    }
    stream.synchronize();  // item_mlp goes away here
  }
  catalog.items = items;
  catalog.factors = f;
  catalog.item_gmf = item_gmf.data();
  catalog.item_part = item_part.data();
  catalog.head_bias = head_bias;

  cuda::DeviceInfo now;
  if (!cuda::probe(&reason, &now)) throw Error("GPU scorer: the GPU stopped answering: " + reason);
  double working =
      std::min(0.5 * static_cast<double>(now.free_bytes), static_cast<double>(kMaxWorkingBytes));
  if (!fused) {
    const int64_t widest = *std::max_element(hidden.begin(), hidden.end());
    activation_rows = std::clamp<int64_t>(static_cast<int64_t>(working / 4 / (8.0 * widest)), 1,
                                          kMaxActivationRows);
    working -= 8.0 * activation_rows * widest;
  }
  const double per_user =
      4.0 * (static_cast<double>(items) + 1 + 2 * e + f + first_width) + 8.0 * cuda::kMaxSelectK;
  chunk_users = std::min<int64_t>(kMaxChunkUsers, static_cast<int64_t>(working / per_user));
  if (chunk_users < 1) {
    throw Error(
        fmt::format("GPU scorer: one user's scores over {} items need {:.1f} MiB of device memory; "
                    "{:.1f} MiB are left after the model on {}",
                    items, mib(per_user), mib(working), device.name));
  }
}

void GpuScorer::Impl::check_inputs(std::span<const uint32_t> users,
                                   std::span<const float> contexts) const {
  for (uint32_t u : users) {
    TB_CHECK(u < config.num_users,
             fmt::format("GPU scorer: user index {} is outside the model's {} users", u,
                         config.num_users));
  }
  if (!contexts.empty()) {
    TB_CHECK(e > 0,
             "GPU scorer: contexts were given, but the model has no MLP branch to add them to");
    TB_CHECK(contexts.size() == users.size() * static_cast<size_t>(e),
             fmt::format("GPU scorer: {} context floats for {} users of width {}", contexts.size(),
                         users.size(), e));
  }
}

void GpuScorer::Impl::prepare_users(std::span<const uint32_t> users,
                                    std::span<const float> contexts) {
  cuda::StreamHandle s = stream.get();
  const int64_t count = static_cast<int64_t>(users.size());
  upload(d_users, users, s);
  const float* context_rows = nullptr;
  if (!contexts.empty()) {
    upload(d_contexts, contexts, s);
    context_rows = d_contexts.data();
  }
  float* mlp_rows = e > 0 ? reserve(user_rows, count * e) : nullptr;
  float* head_rows = f > 0 ? reserve(user_head, count * f) : nullptr;
  cuda::gather_user_inputs(user_mlp.data(), e, user_gmf.data(), f, head_weight.data(),
                           d_users.data(), count, context_rows, mlp_rows, head_rows, s);
  if (first_width > 0) {
    cuda::first_layer_half(mlp_rows, count, e, first_weight.data(), first_bias.data(), hidden[0],
                           first_width, reserve(user_part, count * first_width), s);
  }
}

void GpuScorer::Impl::score_chunk(int64_t count) {
  cuda::StreamHandle s = stream.get();
  float* out = reserve(scores, static_cast<size_t>(count) * items);
  const float* head_rows = f > 0 ? user_head.data() : nullptr;
  if (fused) {
    cuda::score_catalog_fused(catalog, first_width > 0 ? user_part.data() : nullptr, head_rows,
                              count, out, items, s);
    return;
  }
  // Layered: blocks of `group` users x `tile` items, activation_rows pairs at a time.
  const int64_t l1 = hidden[0], h = hidden.back();
  const int64_t widest = *std::max_element(hidden.begin(), hidden.end());
  float* a = reserve(act_a, activation_rows * widest);
  float* b = reserve(act_b, activation_rows * widest);
  const int64_t tile = std::min(items, activation_rows);
  const int64_t group_cap = std::max<int64_t>(1, activation_rows / tile);
  for (int64_t u0 = 0; u0 < count; u0 += group_cap) {
    const int64_t group = std::min(group_cap, count - u0);
    for (int64_t i0 = 0; i0 < items; i0 += tile) {
      const int64_t n = std::min(tile, items - i0), rows = group * n;
      cuda::pair_first_layer(user_part.data() + u0 * l1, group, item_part.data(), i0, n, l1, a, s);
      float* in = a;
      float* next = b;
      for (size_t j = 1; j < hidden.size(); ++j) {
        cuda::dense_forward(*blas, in, rows, hidden[j - 1], weights[j].data(), biases[j].data(),
                            hidden[j], true, next);
        std::swap(in, next);
      }
      cuda::pair_head(in, h, head_weight.data() + f, head_rows ? head_rows + u0 * f : nullptr,
                      item_gmf.data(), f, head_bias, group, i0, n, out + u0 * items, items, s);
    }
  }
}

GpuScorer::GpuScorer(const ModelParams& params) : impl_(std::make_unique<Impl>(params)) {}
GpuScorer::~GpuScorer() = default;

uint32_t GpuScorer::num_items() const { return impl_->config.num_items; }
uint32_t GpuScorer::num_users() const { return impl_->config.num_users; }
uint32_t GpuScorer::users_per_chunk() const { return static_cast<uint32_t>(impl_->chunk_users); }
uint32_t GpuScorer::max_k() { return cuda::kMaxSelectK; }

std::string GpuScorer::describe() const {
  const Impl& m = *impl_;
  std::string path;
  if (m.hidden.empty()) {
    path = "GMF kernel";
  } else if (m.fused) {
    path = fmt::format("fused tower {}", fmt::join(m.catalog.widths, ","));
  } else {
    path = "layered tower (cuBLAS)";
  }
  return fmt::format("{}, {}, {} users per chunk", m.device.name, path, m.chunk_users);
}

void GpuScorer::top_k(std::span<const uint32_t> users, std::span<const float> contexts,
                      std::span<const uint64_t> exclude_offsets,
                      std::span<const uint32_t> exclude_items, std::span<const uint8_t> allowed,
                      uint32_t k, std::span<uint32_t> items, std::span<float> scores) {
  Impl& m = *impl_;
  const size_t count = users.size();
  TB_CHECK(items.size() == count * k && scores.size() == count * k,
           fmt::format("GPU scorer: top_k needs {} x {} outputs", count, k));
  if (count == 0 || k == 0) return;
  TB_CHECK(k <= max_k(),
           fmt::format("GPU scorer: k = {} is above the GPU top-k's limit of {}", k, max_k()));
  m.check_inputs(users, contexts);
  TB_CHECK(allowed.empty() || allowed.size() == m.config.num_items,
           fmt::format("GPU scorer: the allowed mask has {} entries for {} items", allowed.size(),
                       m.config.num_items));
  const bool excluding = !exclude_offsets.empty();
  if (excluding) {
    TB_CHECK(exclude_offsets.size() == count + 1,
             "GPU scorer: exclude_offsets needs users + 1 entries");
    TB_CHECK(std::is_sorted(exclude_offsets.begin(), exclude_offsets.end()) &&
                 exclude_offsets.back() <= exclude_items.size(),
             "GPU scorer: exclude_offsets must be non-decreasing and within exclude_items");
    for (uint64_t j = exclude_offsets.front(); j < exclude_offsets.back(); ++j) {
      TB_CHECK(exclude_items[j] < m.config.num_items,
               fmt::format("GPU scorer: excluded item {} is outside the model's {} items",
                           exclude_items[j], m.config.num_items));
    }
  }

  cuda::StreamHandle s = m.stream.get();
  const uint8_t* allowed_rows = nullptr;
  if (!allowed.empty()) {
    upload(m.d_allowed, allowed, s);
    allowed_rows = m.d_allowed.data();
  }
  const int64_t e = m.e;
  std::vector<uint64_t> offsets;
  for (size_t first = 0; first < count; first += m.chunk_users) {
    const size_t n = std::min<size_t>(m.chunk_users, count - first);
    m.prepare_users(users.subspan(first, n),
                    contexts.empty() ? contexts : contexts.subspan(first * e, n * e));
    m.score_chunk(static_cast<int64_t>(n));
    if (excluding && exclude_offsets[first + n] > exclude_offsets[first]) {
      offsets.resize(n + 1);
      for (size_t u = 0; u <= n; ++u)
        offsets[u] = exclude_offsets[first + u] - exclude_offsets[first];
      upload(m.d_exclude_offsets, std::span<const uint64_t>(offsets), s);
      upload(m.d_exclude_items,
             exclude_items.subspan(exclude_offsets[first],
                                   exclude_offsets[first + n] - exclude_offsets[first]),
             s);
      cuda::exclude_items(m.scores.data(), static_cast<int64_t>(n), m.items,
                          m.d_exclude_offsets.data(), m.d_exclude_items.data(), s);
    }
    uint32_t* top_items = reserve(m.d_top_items, n * k);
    float* top_scores = reserve(m.d_top_scores, n * k);
    cuda::select_top_k(m.scores.data(), static_cast<int64_t>(n), m.items, m.items, allowed_rows,
                       static_cast<int>(k), top_items, top_scores, s);
    cuda::copy_to_host(items.data() + first * k, top_items, n * k * sizeof(uint32_t), s);
    cuda::copy_to_host(scores.data() + first * k, top_scores, n * k * sizeof(float), s);
  }
}

void GpuScorer::score_users(std::span<const uint32_t> users, std::span<const float> contexts,
                            std::span<float> out) {
  Impl& m = *impl_;
  const size_t count = users.size();
  TB_CHECK(out.size() == count * m.config.num_items,
           fmt::format("GPU scorer: score_users needs {} x {} outputs", count, m.config.num_items));
  m.check_inputs(users, contexts);
  const int64_t e = m.e;
  for (size_t first = 0; first < count; first += m.chunk_users) {
    const size_t n = std::min<size_t>(m.chunk_users, count - first);
    m.prepare_users(users.subspan(first, n),
                    contexts.empty() ? contexts : contexts.subspan(first * e, n * e));
    m.score_chunk(static_cast<int64_t>(n));
    cuda::copy_to_host(out.data() + first * m.items, m.scores.data(), n * m.items * sizeof(float),
                       m.stream.get());
  }
}

}  // namespace tastebud
