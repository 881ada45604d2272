// The sequence model's CPU trainer: batches cut into chunks of a fixed number of positions, each
// chunk's pass run in parallel with its own gradients, summed in chunk order.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "cpu/aligned.h"
#include "cpu/sequence.h"
#include "sequence_pass.h"
#include "sequence_trainer_base.h"
#include "tastebud/sequence_math.h"

namespace tastebud {

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
  std::vector<float> weight;
  cpu::AlignedVector<float> coef, dh, d_input, grad, ones;
  std::vector<uint8_t> used;  // per item: a row this chunk scored or read
  double loss = 0;
};

class CpuSequenceTrainer final : public SequenceTrainerBase {
 public:
  CpuSequenceTrainer(const SequenceSet& data, const SequenceTrainOptions& options, SequenceState state)
      : SequenceTrainerBase(data, options, std::move(state)) {
    w.assign(state_.params.values.begin(), state_.params.values.end());
    m.assign(state_.m.begin(), state_.m.end());
    v.assign(state_.v.begin(), state_.v.end());
    threads = options.threads > 0 ? static_cast<int>(options.threads) : omp_get_max_threads();
    item_grad.assign(layout_.features, 0.0f);
    touched.assign(config().num_items, 0);
    if (config().has_features()) {
      effective.resize(size_t{config().num_items} * config().hidden);
      feature_grad.assign(layout_.positions - layout_.features, 0.0f);
      feature_touched.assign(size_t{config().feature_rows} + config().numeric, 0);
    }
  }

  const SequenceState& state() override {
    state_.params.values.assign(w.begin(), w.end());
    state_.m.assign(m.begin(), m.end());
    state_.v.assign(v.begin(), v.end());
    return state_;
  }

 private:
  bool train_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end,
                   double& loss) override;
  void run_chunk(Chunk& chunk, uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end, float scale);
  void update(const std::vector<Chunk*>& used);
  void update_features(const OptimizerParams& o, float step, float eps);
  // The rows the input and the loss read: E, or E plus each item's features.
  const float* item_rows() const { return effective.empty() ? w.data() + layout_.items : effective.data(); }

  int threads = 1;
  std::vector<Chunk> chunks;
  // The parameters and Adam's moments as they train, 64-byte aligned so that Eigen's reductions
  // sum in the same order run after run (cpu/aligned.h); state() copies them out.
  cpu::AlignedVector<float> w, m, v;
  cpu::AlignedVector<float> item_grad;  // [num_items x d]
  std::vector<uint8_t> touched;         // per item: its row steps this batch
  // Item metadata: the items' rows with their features (computed each batch), the gradient of the
  // F and N rows (laid out as in w), and which of those rows the batch reached.
  cpu::AlignedVector<float> effective;
  std::vector<float> feature_grad;
  std::vector<uint8_t> feature_touched;
};

// Sequences order[first, end) of the epoch into one chunk: forward, sampled loss, backward.
void CpuSequenceTrainer::run_chunk(Chunk& chunk, uint32_t epoch, std::span<const uint64_t> order, uint64_t first,
                                      uint64_t end, float scale) {
  const SequenceConfig& c = config();
  const uint32_t slots = options_.negatives + 1;
  const int64_t d = c.hidden;
  chunk.seqs.clear();
  chunk.slot_items.clear();
  chunk.weight.clear();
  fill(epoch, order, first, end, chunk.seqs, chunk.slot_items, chunk.weight);
  const DropoutKeys keys{options_.seed, epoch, c.dropout};
  const DropoutKeys* dropout = c.dropout > 0 ? &keys : nullptr;
  chunk.pass.forward(w.data(), chunk.seqs, dropout, item_rows());
  const int64_t rows = chunk.seqs.rows();
  chunk.coef.resize(static_cast<size_t>(rows) * slots);
  chunk.dh.resize(static_cast<size_t>(rows * d));
  chunk.d_input.resize(static_cast<size_t>(rows * d));
  chunk.loss = cpu::sampled_loss_forward_backward(chunk.pass.hidden(), rows, d, item_rows(),
                                                  chunk.slot_items.data(), slots, chunk.weight.data(), beta_, scale,
                                                  chunk.coef.data(), chunk.dh.data());
  chunk.grad.assign(layout_.dense_size(), 0.0f);
  chunk.pass.backward(w.data(), chunk.seqs, dropout, chunk.dh.data(), chunk.grad.data(),
                      chunk.d_input.data());
  chunk.ones.assign(static_cast<size_t>(rows), 1.0f);
  chunk.used.assign(c.num_items, 0);
  for (uint32_t i : chunk.slot_items) chunk.used[i] = 1;
  for (uint32_t i : chunk.seqs.input) chunk.used[i] = 1;
}

// Adam: the dense tensors from the chunks' gradients summed in chunk order (unless frozen), then
// the item rows the batch touched and frozen_ leaves, their gradients summed in (chunk, row, slot)
// order.
void CpuSequenceTrainer::update(const std::vector<Chunk*>& used) {
  const OptimizerParams& o = options_.optimizer;
  const uint64_t t = ++state_.step;
  const float step = adam_step_size(o, t), eps = step_params(o, t).eps;
  float* w = this->w.data();
  float* m = this->m.data();
  float* v = this->v.data();
  const int64_t dense = static_cast<int64_t>(layout_.dense_size()), base = static_cast<int64_t>(layout_.dense_begin());
  if (!options_.freeze_dense) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < dense; ++i) {
      float g = 0.0f;
      for (const Chunk* c : used) g += c->grad[static_cast<size_t>(i)];
      apply_update(o.kind, step, o.beta1, o.beta2, eps, o.l2, w[base + i], m[base + i], v[base + i], g);
    }
  }
  const int64_t d = config().hidden;
  const uint32_t slots = options_.negatives + 1;
  for (Chunk* c : used) {
    const int64_t rows = c->seqs.rows();
    cpu::scatter_item_grads(c->coef.data(), c->pass.hidden(), c->slot_items.data(), rows, int64_t{slots}, d, threads,
                            item_grad.data());
    cpu::scatter_item_grads(c->ones.data(), c->d_input.data(), c->seqs.input.data(), rows, int64_t{1}, d, threads,
                            item_grad.data());
  }
  const int64_t items = config().num_items;
#pragma omp parallel for num_threads(threads) schedule(static, 256)
  for (int64_t i = 0; i < items; ++i) {
    bool hit = options_.embedding_updates == EmbeddingUpdates::kDense;
    for (const Chunk* c : used) hit = hit || c->used[static_cast<size_t>(i)];
    touched[static_cast<size_t>(i)] = hit;
  }
  if (!effective.empty()) update_features(o, step, eps);
#pragma omp parallel for num_threads(threads) schedule(static, 256)
  for (int64_t i = 0; i < items; ++i) {
    if (!touched[static_cast<size_t>(i)]) continue;
    const size_t at = static_cast<size_t>(i) * d;
    const bool frozen = !frozen_.empty() && frozen_[static_cast<size_t>(i)];
    for (int64_t j = 0; j < d; ++j)
      step_and_clear(o.kind, step, o.beta1, o.beta2, eps, o.l2, frozen, w[at + j], m[at + j], v[at + j], item_grad[at + j]);
  }
}

// Item metadata: each touched item's row gradient reaches its F rows (times their weights) and its
// N rows (times its numbers), summed in item order; then Adam on the rows reached (dense item
// updates: every row), N's always.
void CpuSequenceTrainer::update_features(const OptimizerParams& o, float step, float eps) {
  const SequenceConfig& c = config();
  const FeatureView& f = data_.item_features;
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
  const bool dense = options_.embedding_updates == EmbeddingUpdates::kDense;
  const int64_t rows = static_cast<int64_t>(feature_touched.size());
#pragma omp parallel for num_threads(threads) schedule(static, 256)
  for (int64_t r = 0; r < rows; ++r) {
    if (!dense && !feature_touched[r] && r < static_cast<int64_t>(numeric_row)) continue;
    const size_t at = layout_.features + static_cast<size_t>(r) * d;
    float* g = feature_grad.data() + static_cast<size_t>(r) * d;
    for (int64_t j = 0; j < d; ++j) step_and_clear(o.kind, step, o.beta1, o.beta2, eps, o.l2, false, w[at + j], m[at + j], v[at + j], g[j]);
    feature_touched[r] = 0;
  }
}

// One batch: sequences order[first, end). False when its loss is not finite (no update).
bool CpuSequenceTrainer::train_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end,
                                     double& loss) {
  const float scale = 1.0f / static_cast<float>(positions_in(order, first, end));
  std::vector<uint64_t> cuts{first};
  for (uint64_t g = first, held = 0; g < end; ++g) {
    held += positions_of(order[g]);
    if (held >= kChunkPositions || g + 1 == end) cuts.push_back(g + 1), held = 0;
  }
  const int64_t used = static_cast<int64_t>(cuts.size() - 1);
  while (chunks.size() < cuts.size() - 1) chunks.emplace_back(config());
  if (!effective.empty()) item_representations(state_.params, w.data(), data_.item_features, effective.data());
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

}  // namespace

std::unique_ptr<SequenceTrainerBase> make_cpu_sequence_trainer(const SequenceSet& data,
                                                               const SequenceTrainOptions& options,
                                                               SequenceState state) {
  return std::make_unique<CpuSequenceTrainer>(data, options, std::move(state));
}

}  // namespace tastebud
