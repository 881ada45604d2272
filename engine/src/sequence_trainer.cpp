#include "tastebud/engine/sequence_trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "cpu/aligned.h"
#include "cpu/sampler.h"
#include "cpu/sequence.h"
#include "sequence_pass.h"
#include "tastebud/engine/train_options.h"
#include "tastebud/error.h"
#include "tastebud/philox.h"
#include "tastebud/sampler_math.h"
#include "tastebud/sequence_math.h"

namespace tastebud {

void SequenceTrainOptions::check() const {
  TB_CHECK(batch_size >= 1 && batch_size <= kMaxBatchSize,
           fmt::format("`batch_size` must be in 1..{}, not {}", kMaxBatchSize, batch_size));
  TB_CHECK(negatives >= 1 && negatives <= kMaxNegatives,
           fmt::format("`negatives` must be in 1..{}, not {}", kMaxNegatives, negatives));
  TB_CHECK(gbce_t >= 0.0f && gbce_t <= 1.0f, fmt::format("`gbce_t` must be in [0, 1], not {}", gbce_t));
  TB_CHECK(std::isfinite(optimizer.lr) && optimizer.lr > 0, fmt::format("`lr` must be positive, not {}", optimizer.lr));
  TB_CHECK(optimizer.kind == OptimizerKind::kAdam, "`optimizer`: the sequence model trains with Adam");
  TB_CHECK(threads <= kMaxThreads, fmt::format("`threads` must be at most {}, not {}", kMaxThreads, threads));
}

namespace {

// A batch's unit of parallel work: consecutive sequences until they hold this many positions (or
// the batch ends). Cut from the batch alone, so that sums never depend on the thread count, and by
// positions, so that long and short sequences even out across threads.
constexpr uint64_t kChunkPositions = 1024;

struct Chunk {
  explicit Chunk(const SequenceConfig& c) : pass(c) {}
  PackedSequences seqs;
  SequencePass pass;
  std::vector<uint32_t> slot_items;  // rows x slots: the target, then the negatives
  cpu::AlignedVector<float> weight, coef, dh, d_input, grad, ones;
  std::vector<uint8_t> used;  // per item: a row this chunk scored or read
  double loss = 0;
};

}  // namespace

struct SequenceTrainer::Impl {
  Impl(const SequenceSet& data, const SequenceTrainOptions& options, SequenceState state)
      : data(data), options(options), state(std::move(state)), layout(this->state.params.config) {
    const SequenceConfig& c = this->state.params.config;
    c.check();
    options.check();
    TB_CHECK(c.num_items == data.num_items, "the sequence set and the model disagree on the item count");
    if (this->state.m.empty()) this->state.m.assign(layout.total, 0.0f), this->state.v.assign(layout.total, 0.0f);
    TB_CHECK(this->state.params.values.size() == layout.total && this->state.m.size() == layout.total &&
                 this->state.v.size() == layout.total,
             "the sequence model's state does not fit its shape");
    w.assign(this->state.params.values.begin(), this->state.params.values.end());
    m.assign(this->state.m.begin(), this->state.m.end());
    v.assign(this->state.v.begin(), this->state.v.end());
    threads = options.threads > 0 ? static_cast<int>(options.threads) : omp_get_max_threads();
    build_windows();
    build_known_items();
    if (options.sampler == SamplerKind::kPopularity) {
      std::vector<uint64_t> counts(c.num_items, 0);
      for (uint32_t i : data.items) ++counts[i];
      alias = cpu::AliasTable::popularity(counts, options.sampler_alpha);
    }
    const float alpha = std::min(1.0f, static_cast<float>(options.negatives) / std::max(1u, c.num_items - 1));
    beta = gbce_beta(alpha, options.gbce_t);
    item_grad.assign(layout.features, 0.0f);
    touched.assign(c.num_items, 0);
    if (c.has_features()) start_features();
  }

  // Item metadata: the batch's item rows (E plus features) are computed into `effective`; items
  // that no sequence holds keep E at zero (their gradient as sampled negatives reaches their
  // features only), so a cold item answers from its metadata alone, as the NeuMF family's do.
  void start_features() {
    const SequenceConfig& c = state.params.config;
    const FeatureView& f = data.item_features;
    TB_CHECK(f.numeric == c.numeric && (f.offsets != nullptr) == (c.feature_rows > 0),
             fmt::format("the item metadata ({} numeric fields) does not fit the model ({} feature rows, {} numeric)",
                         f.numeric, c.feature_rows, c.numeric));
    effective.resize(size_t{c.num_items} * c.hidden);
    feature_grad.assign(layout.positions - layout.features, 0.0f);
    feature_touched.assign(size_t{c.feature_rows} + c.numeric, 0);
    cold.assign(c.num_items, 1);
    for (uint32_t i : data.items) cold[i] = 0;
    for (uint32_t i = 0; i < c.num_items; ++i)
      if (cold[i]) std::fill_n(w.begin() + static_cast<int64_t>(layout.items + size_t{i} * c.hidden), c.hidden, 0.0f);
  }

  // The rows the input and the loss read: E, or E plus each item's features.
  const float* item_rows() const { return effective.empty() ? w.data() + layout.items : effective.data(); }

  // Each user's items sorted and distinct: the negatives the sampler rejects.
  void build_known_items() {
    known_offsets.assign(1, 0);
    for (uint32_t u = 0; u < data.num_users(); ++u) {
      const size_t from = known.size();
      known.insert(known.end(), data.items.begin() + static_cast<int64_t>(data.offsets[u]),
                   data.items.begin() + static_cast<int64_t>(data.offsets[u + 1]));
      std::sort(known.begin() + static_cast<int64_t>(from), known.end());
      known.erase(std::unique(known.begin() + static_cast<int64_t>(from), known.end()), known.end());
      known_offsets.push_back(known.size());
    }
  }

  // A user's history in windows of max_sequence positions from its newest item back, so that long
  // histories train whole: window w's targets are items (last - m, last], m of them.
  void build_windows() {
    const uint64_t L = state.params.config.max_sequence;
    for (uint32_t u = 0; u < data.num_users(); ++u) {
      for (uint64_t last = data.offsets[u + 1]; last >= data.offsets[u] + 2; last = last > L ? last - L : 0) {
        windows.push_back(Window{u, last - 1, std::min<uint64_t>(last - 1 - data.offsets[u], L)});
        if (last - 1 - data.offsets[u] <= L) break;
      }
    }
  }

  uint64_t positions_of(uint64_t w) const { return windows[w].positions; }

  EpochStats train_epoch(uint32_t epoch, const ProgressFn& progress);
  bool train_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, double& loss);
  void run_chunk(Chunk& chunk, uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end, float scale);
  void update(const std::vector<Chunk*>& used);
  void update_features(const OptimizerParams& o, float step, float eps);

  const SequenceSet& data;
  SequenceTrainOptions options;
  SequenceState state;
  SequenceLayout layout;
  int threads = 1;
  float beta = 1.0f;
  struct Window {
    uint32_t user;
    uint64_t last;       // its last target's index in data.items
    uint64_t positions;  // targets (and inputs): at most max_sequence
  };
  std::vector<Window> windows;
  std::vector<uint64_t> known_offsets;
  std::vector<uint32_t> known;
  cpu::AliasTable alias;
  std::vector<Chunk> chunks;
  // The parameters and Adam's moments as they train, 64-byte aligned so that Eigen's reductions
  // sum in the same order run after run (cpu/aligned.h); state() copies them out.
  cpu::AlignedVector<float> w, m, v;
  cpu::AlignedVector<float> item_grad;  // [num_items x d]
  std::vector<uint8_t> touched;         // per item: its row steps this batch
  // Item metadata (start_features): the items' rows with their features, the gradient of the F and
  // N rows (laid out as in w), which of those rows the batch reached, and the items no sequence holds.
  cpu::AlignedVector<float> effective;
  std::vector<float> feature_grad;
  std::vector<uint8_t> feature_touched, cold;
};

// Sequences order[first, end) of the epoch into one chunk: forward, sampled loss, backward.
void SequenceTrainer::Impl::run_chunk(Chunk& chunk, uint32_t epoch, std::span<const uint64_t> order, uint64_t first,
                                      uint64_t end, float scale) {
  const SequenceConfig& c = state.params.config;
  const uint32_t L = c.max_sequence, k = options.negatives, slots = k + 1;
  const int64_t d = c.hidden;
  chunk.seqs.clear();
  chunk.slot_items.clear();
  chunk.weight.clear();
  for (uint64_t g = first; g < end; ++g) {
    const Window& win = windows[order[g]];
    const uint32_t u = win.user;
    const uint64_t m = win.positions, start = win.last - m;  // inputs start .. start + m - 1, targets one later
    chunk.seqs.add(std::span(data.items).subspan(start, m), L, g);
    const uint32_t* pos = known.data() + known_offsets[u];
    const uint64_t count = known_offsets[u + 1] - known_offsets[u];
    for (uint64_t t = 0; t < m; ++t) {
      chunk.slot_items.push_back(data.items[start + t + 1]);
      chunk.weight.push_back(data.weights[start + t + 1]);
      const uint64_t at = (g * L + (L - m + t)) * k;
      for (uint32_t j = 0; j < k; ++j) {
        chunk.slot_items.push_back(draw_negative(options.seed, RandomStream::kNegatives, epoch, at + j, pos, count,
                                                 c.num_items, alias.probability.empty() ? nullptr : alias.probability.data(),
                                                 alias.alias.empty() ? nullptr : alias.alias.data()));
      }
    }
  }
  const DropoutKeys keys{options.seed, epoch, c.dropout};
  const DropoutKeys* dropout = c.dropout > 0 ? &keys : nullptr;
  chunk.pass.forward(w.data(), chunk.seqs, dropout, item_rows());
  const int64_t rows = chunk.seqs.rows();
  chunk.coef.resize(static_cast<size_t>(rows) * slots);
  chunk.dh.resize(static_cast<size_t>(rows * d));
  chunk.d_input.resize(static_cast<size_t>(rows * d));
  chunk.loss = cpu::sampled_loss_forward_backward(chunk.pass.hidden(), rows, d, item_rows(),
                                                  chunk.slot_items.data(), slots, chunk.weight.data(), beta, scale,
                                                  chunk.coef.data(), chunk.dh.data());
  chunk.grad.assign(layout.dense_size(), 0.0f);
  chunk.pass.backward(w.data(), chunk.seqs, dropout, chunk.dh.data(), chunk.grad.data(),
                      chunk.d_input.data());
  chunk.ones.assign(static_cast<size_t>(rows), 1.0f);
  chunk.used.assign(c.num_items, 0);
  for (uint32_t i : chunk.slot_items) chunk.used[i] = 1;
  for (uint32_t i : chunk.seqs.input) chunk.used[i] = 1;
}

// Adam: the dense tensors from the chunks' gradients summed in chunk order, then the item rows
// the batch touched, their gradients summed in (chunk, row, slot) order.
void SequenceTrainer::Impl::update(const std::vector<Chunk*>& used) {
  const OptimizerParams& o = options.optimizer;
  const uint64_t t = ++state.step;
  const float step = adam_step_size(o, t), eps = step_params(o, t).eps;
  float* w = this->w.data();
  float* m = this->m.data();
  float* v = this->v.data();
  const int64_t dense = static_cast<int64_t>(layout.dense_size()), base = static_cast<int64_t>(layout.dense_begin());
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < dense; ++i) {
    float g = 0.0f;
    for (const Chunk* c : used) g += c->grad[static_cast<size_t>(i)];
    apply_update(o.kind, step, o.beta1, o.beta2, eps, o.l2, w[base + i], m[base + i], v[base + i], g);
  }
  const int64_t d = state.params.config.hidden;
  const uint32_t slots = options.negatives + 1;
  for (Chunk* c : used) {
    const int64_t rows = c->seqs.rows();
    cpu::scatter_item_grads(c->coef.data(), c->pass.hidden(), c->slot_items.data(), rows, int64_t{slots}, d, threads,
                            item_grad.data());
    cpu::scatter_item_grads(c->ones.data(), c->d_input.data(), c->seqs.input.data(), rows, int64_t{1}, d, threads,
                            item_grad.data());
  }
  const int64_t items = state.params.config.num_items;
#pragma omp parallel for num_threads(threads) schedule(static, 256)
  for (int64_t i = 0; i < items; ++i) {
    bool hit = options.embedding_updates == EmbeddingUpdates::kDense;
    for (const Chunk* c : used) hit = hit || c->used[static_cast<size_t>(i)];
    touched[static_cast<size_t>(i)] = hit;
  }
  if (!effective.empty()) update_features(o, step, eps);
#pragma omp parallel for num_threads(threads) schedule(static, 256)
  for (int64_t i = 0; i < items; ++i) {
    if (!touched[static_cast<size_t>(i)]) continue;
    const size_t at = static_cast<size_t>(i) * d;
    if (cold.empty() || !cold[static_cast<size_t>(i)]) {
      for (int64_t j = 0; j < d; ++j) apply_update(o.kind, step, o.beta1, o.beta2, eps, o.l2, w[at + j], m[at + j], v[at + j], item_grad[at + j]);
    }
    std::fill_n(item_grad.begin() + static_cast<int64_t>(at), d, 0.0f);
  }
}

// Item metadata: each touched item's row gradient reaches its F rows (times their weights) and its
// N rows (times its numbers), summed in item order; then Adam on the rows reached (dense item
// updates: every row), N's always.
void SequenceTrainer::Impl::update_features(const OptimizerParams& o, float step, float eps) {
  const SequenceConfig& c = state.params.config;
  const FeatureView& f = data.item_features;
  const int64_t d = c.hidden;
  const size_t numeric_row = c.feature_rows;  // N's first row in feature_grad's rows
  for (uint32_t i = 0; i < c.num_items; ++i) {
    if (!touched[i]) continue;
    const float* g = item_grad.data() + size_t{i} * d;
    const uint64_t first = f.offsets != nullptr ? f.offsets[i] : 0, last = f.offsets != nullptr ? f.offsets[i + 1] : 0;
    for (uint64_t p = first; p < last; ++p) {
      float* out = feature_grad.data() + size_t{f.rows[p]} * d;
      for (int64_t j = 0; j < d; ++j) out[j] += f.weights[p] * g[j];
      feature_touched[f.rows[p]] = 1;
    }
    for (uint32_t n = 0; n < c.numeric; ++n) {
      const float x = f.values[size_t{i} * c.numeric + n];
      float* out = feature_grad.data() + (numeric_row + n) * d;
      for (int64_t j = 0; j < d; ++j) out[j] += x * g[j];
    }
  }
  const bool dense = options.embedding_updates == EmbeddingUpdates::kDense;
  const int64_t rows = static_cast<int64_t>(feature_touched.size());
#pragma omp parallel for num_threads(threads) schedule(static, 256)
  for (int64_t r = 0; r < rows; ++r) {
    if (!dense && !feature_touched[r] && r < static_cast<int64_t>(numeric_row)) continue;
    const size_t at = layout.features + static_cast<size_t>(r) * d;
    float* g = feature_grad.data() + static_cast<size_t>(r) * d;
    for (int64_t j = 0; j < d; ++j) {
      apply_update(o.kind, step, o.beta1, o.beta2, eps, o.l2, w[at + j], m[at + j], v[at + j], g[j]);
      g[j] = 0.0f;
    }
    feature_touched[r] = 0;
  }
}

// One batch: sequences order[first, first + batch_size). False when its loss is not finite (no update).
bool SequenceTrainer::Impl::train_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, double& loss) {
  const uint64_t end = std::min<uint64_t>(first + options.batch_size, order.size());
  uint64_t positions = 0;
  for (uint64_t g = first; g < end; ++g) positions += positions_of(order[g]);
  const float scale = 1.0f / static_cast<float>(positions);
  std::vector<uint64_t> cuts{first};
  for (uint64_t g = first, held = 0; g < end; ++g) {
    held += positions_of(order[g]);
    if (held >= kChunkPositions || g + 1 == end) cuts.push_back(g + 1), held = 0;
  }
  const int64_t used = static_cast<int64_t>(cuts.size() - 1);
  while (chunks.size() < cuts.size() - 1) chunks.emplace_back(state.params.config);
  if (!effective.empty()) item_representations(state.params, w.data(), data.item_features, effective.data());
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t c = 0; c < used; ++c) run_chunk(chunks[static_cast<size_t>(c)], epoch, order, cuts[c], cuts[c + 1], scale);
  std::vector<Chunk*> parts;
  double sum = 0;
  for (int64_t c = 0; c < used; ++c) parts.push_back(&chunks[static_cast<size_t>(c)]), sum += chunks[c].loss;
  if (!std::isfinite(sum)) return false;
  update(parts);
  loss += sum;
  return true;
}

EpochStats SequenceTrainer::Impl::train_epoch(uint32_t epoch, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<uint64_t> order(windows.size());
  cpu::shuffle_order(options.seed, epoch, order.size(), order);
  EpochStats stats;
  uint64_t total = 0;
  for (const Window& w : windows) total += w.positions;
  double loss = 0;
  uint64_t batch = 0;
  for (uint64_t first = 0; first < order.size(); first += options.batch_size, ++batch) {
    if (!train_batch(epoch, order, first, loss)) {
      stats.finite = false;
      break;
    }
    const uint64_t end = std::min<uint64_t>(first + options.batch_size, order.size());
    for (uint64_t g = first; g < end; ++g) stats.samples += positions_of(order[g]);
    if (progress && (batch % 16 == 15 || end == order.size()))
      progress(stats.samples, total, stats.samples > 0 ? loss / static_cast<double>(stats.samples) : 0.0);
  }
  stats.mean_loss = stats.samples > 0 ? loss / static_cast<double>(stats.samples) : 0.0;
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

SequenceTrainer::SequenceTrainer(const SequenceSet& data, const SequenceTrainOptions& options, SequenceState state)
    : impl_(std::make_unique<Impl>(data, options, std::move(state))) {}
SequenceTrainer::~SequenceTrainer() = default;

EpochStats SequenceTrainer::train_epoch(uint32_t epoch, const ProgressFn& progress) {
  return impl_->train_epoch(epoch, progress);
}

uint64_t SequenceTrainer::positions_per_epoch() const {
  uint64_t total = 0;
  for (const Impl::Window& w : impl_->windows) total += w.positions;
  return total;
}

const SequenceState& SequenceTrainer::state() const {
  SequenceState& s = impl_->state;
  s.params.values.assign(impl_->w.begin(), impl_->w.end());
  s.m.assign(impl_->m.begin(), impl_->m.end());
  s.v.assign(impl_->v.begin(), impl_->v.end());
  return s;
}

}  // namespace tastebud
