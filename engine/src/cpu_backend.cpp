// The CPU backend: the phases of one training step of NeuMF with negative sampling, which
// BackendBase (backend_base.h) runs batch by batch.
//
// Each batch is cut into chunks whose size depends on the batch size only. Chunks run in parallel
// and keep their own dense gradients, which are then summed in chunk order; embedding gradients
// are summed per table row in batch-row order. The result is bit-identical for any thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include <Eigen/Core>
#include <fmt/format.h>

#include "cpu/aligned.h"
#include "cpu/embedding.h"
#include "cpu/features.h"
#include "cpu/loss.h"
#include "cpu/neumf.h"
#include "cpu/optimizer.h"
#include "cpu/sampler.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/error.h"
#include "tastebud/batch_rows.h"
#include "backend_base.h"
#include "rank_step.h"

namespace tastebud {
namespace {

// A side the model does not use reads as empty whatever inputs came with it.
cpu::FeatureView view_of(const FeatureSpec& spec, const FeatureInputs& in) {
  return spec.enabled() ? in.view() : cpu::FeatureView{};
}

class CpuBackend final : public BackendBase {
 public:
  CpuBackend(const TrainingSet& data, const TrainOptions& options, TrainState state)
      : BackendBase(data, options, std::move(state)) {
    const ModelConfig& config = state_.params.config;
    Eigen::setNbThreads(1);  // parallelism comes from the chunks
    shape_ = config.neumf_shape();
    user_view_ = view_of(config.user_features, data.user_features);
    item_view_ = view_of(config.item_features, data.item_features);
    if (config.has_context()) context_view_ = view_of(config.context, data.context);
    if (options.sampler == SamplerKind::kPopularity) {
      alias_ = cpu::AliasTable::popularity(data.item_counts, options.sampler_alpha);
    }
    positives_view_ = data.view(options.impression_share);
    if (!alias_.probability.empty()) {
      positives_view_.alias_probability = alias_.probability.data();
      positives_view_.alias_index = alias_.alias.data();
    }
    check_masks(data);
    allocate();
    install_state();
  }

  std::string name() const override { return "cpu"; }

  uint64_t held_bytes() const override {
    uint64_t floats = 3 * dense_values_.size();
    for (size_t t = 0; t < layout_.sparse_count(); ++t) {
      floats += tensors_[t]->values.size() + state_.state0[t].values.size() + state_.state1[t].values.size();
    }
    return floats * sizeof(float) + (rank_step_ ? rank_step_->held_bytes() : 0);
  }

 private:
  void begin_epoch(uint32_t epoch) override {
    // OpenMP's thread count is the process's: set it for each epoch, so that two backends of one
    // process (a test's, a job's evaluation) each run theirs.
    if (options_.threads > 0) omp_set_num_threads(static_cast<int>(options_.threads));
    order_.resize(data_.size());
    cpu::shuffle_order(options_.seed, epoch, data_.size(), order_);
    batch_impressions_ = 0;
  }

  uint64_t epoch_impressions() override { return batch_impressions_; }

  // This rank's chunks of the batch (all of them in one process), filled in parallel; several
  // ranks: then the id-table rows they use, fetched from their owners.
  void fill_rows(const BatchStep& b) override {
#pragma omp parallel for schedule(static)
    for (int64_t c = b.chunk_begin; c < b.chunk_end; ++c) fill_chunk(b, c);
    if (!rank_step_) return;
    const size_t n = static_cast<size_t>(b.row_end - b.row_begin);
    rank_step_->fetch({users_.data() + b.row_begin, n}, {items_.data() + b.row_begin, n});
  }

  void gather(const BatchStep& b) override {
#pragma omp parallel for schedule(static)
    for (int64_t c = b.chunk_begin; c < b.chunk_end; ++c) gather_chunk(b, c);
  }

  std::optional<double> forward_backward(const BatchStep& b) override {
#pragma omp parallel for schedule(static)
    for (int64_t c = b.chunk_begin; c < b.chunk_end; ++c) pass_chunk(b, c);
    return batch_loss(b);
  }

  // In one process nothing crosses ranks between the three phases: each chunk runs all three in
  // one parallel loop (one fork and join a batch instead of three). Same chunks, same results.
  std::optional<double> rows_and_gradients(const BatchStep& b) override {
    if (rank_step_) return BackendBase::rows_and_gradients(b);
    const int64_t chunks = b.chunk_end - b.chunk_begin;
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (int64_t c = b.chunk_begin; c < b.chunk_end; ++c) fill_chunk(b, c);
      // Each side's rows gathered by the thread that updates that side's tables (update_embeddings'
      // static rounds): the tables' rows stay in one core's cache.
#pragma omp for schedule(static)
      for (int64_t task = 0; task < 2 * chunks; ++task) gather_side(b, b.chunk_begin + task % chunks, task >= chunks);
#pragma omp for schedule(static)
      for (int64_t c = b.chunk_begin; c < b.chunk_end; ++c) pass_chunk(b, c);
    }
    return batch_loss(b);
  }

  // Chunk c's rows [r0, r0 + n) of the batch.
  std::pair<int64_t, int64_t> chunk_span(const BatchStep& b, int64_t c) const {
    const int64_t r0 = c * chunk_rows_;
    return {r0, std::min<int64_t>(chunk_rows_, b.rows - r0)};
  }

  void fill_chunk(const BatchStep& b, int64_t c) {
    const auto [r0, n] = chunk_span(b, c);
    chunk_impressions_[c] = bpr() ? fill_samples(b.epoch, b.first, r0 / 2, (r0 + n) / 2)
                                  : fill_samples(b.epoch, b.first, r0, r0 + n);
  }

  void gather_chunk(const BatchStep& b, int64_t c) {
    gather_side(b, c, false);
    gather_side(b, c, true);
  }

  // One side (users or items) of chunk c: its id-table rows, plus (metadata) its entities' feature
  // rows and projected numbers and (the users' side, context) its positives' context rows. The
  // rows come from the tables, or (several ranks) from the rows fetched for the slice, indexed by
  // each row's slot.
  void gather_side(const BatchStep& b, int64_t c, bool items) {
    const ModelParams& params = state_.params;
    const auto [r0, n] = chunk_span(b, c);
    const int side = items ? 1 : 0;
    const int64_t f = shape_.factors;
    const int64_t e = params.config.mlp_embedding();
    const int64_t l0 = 2 * e;
    const float* gmf = rank_step_ ? rank_step_->gmf_rows(side).data() : (items ? params.item_gmf : params.user_gmf).values.data();
    const float* mlp = rank_step_ ? rank_step_->mlp_rows(side).data() : (items ? params.item_mlp : params.user_mlp).values.data();
    const std::vector<uint32_t>& ids = items ? items_ : users_;
    const std::span<const uint32_t> slots = rank_step_ ? std::span<const uint32_t>(rank_step_->slots(side).data() + (r0 - b.row_begin), n)
                                                    : std::span<const uint32_t>(ids.data() + r0, n);
    float* gmf_out = (items ? item_gmf_ : user_gmf_).data();
    float* mlp_out = acts_[0].data() + (items ? e : 0);
    if (f > 0) cpu::gather_rows(gmf, f, slots, gmf_out + r0 * f, f, 0);
    if (e > 0) cpu::gather_rows(mlp, e, slots, mlp_out + r0 * l0, l0, 0);
    // Metadata: the side's representation is its id row plus its feature sum.
    const cpu::FeatureView& view = items ? item_view_ : user_view_;
    const float* features = (items ? params.item_features : params.user_features).values.data();
    const float* numeric = items ? item_numeric_ : user_numeric_;
    for (int64_t r = r0; r < r0 + n && !view.empty(); ++r) {
      cpu::add_features<float>(view, ids[r], features, numeric, f, e, gmf_out + r * f, mlp_out + r * l0);
    }
    // Context: the interaction's situation joins the user's half of the MLP input.
    for (int64_t r = r0; r < r0 + n && !items && !context_view_.empty(); ++r) {
      cpu::add_features<float>(context_view_, positives_[r], params.context_features.values.data(),
                               nullptr, 0, e, nullptr, acts_[0].data() + r * l0);
    }
  }

  // Chunk c's forward pass, loss and backward pass into its own dense gradients.
  void pass_chunk(const BatchStep& b, int64_t c) {
    const auto [r0, n] = chunk_span(b, c);
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    const int64_t l0 = 2 * e;
    cpu::ChunkRows<float>& chunk = chunks_[c];
    chunk.rows = n;
    cpu::neumf_forward(shape_, dense_, chunk);
    chunk_loss_[c] = bpr() ? cpu::bpr_loss_and_grad(chunk.logits, weights_.data() + r0, n, b.scale,
                                                    dlogits_.data() + r0)
                           : cpu::bce_loss_and_grad(chunk.logits, labels_.data() + r0,
                                                    weights_.data() + r0, n, b.scale,
                                                    dlogits_.data() + r0);
    std::fill(chunk_grads_[c].begin(), chunk_grads_[c].end(), 0.0f);
    cpu::neumf_backward(shape_, dense_, chunk, chunk_grad_views_[c]);
    // The numeric projections are dense parameters: their gradient is summed per chunk, in row
    // order, like the layers'.
    float* d_user_numeric = numeric_projection(chunk_grads_[c], false);
    float* d_item_numeric = numeric_projection(chunk_grads_[c], true);
    for (int64_t r = r0; r < r0 + n; ++r) {
      if (d_user_numeric) {
        cpu::accumulate_numeric_gradient<float>(user_view_, users_[r], user_gmf_grad_.data() + r * f,
                                                act_grads_[0].data() + r * l0, f, e, d_user_numeric);
      }
      if (d_item_numeric) {
        cpu::accumulate_numeric_gradient<float>(item_view_, items_[r], item_gmf_grad_.data() + r * f,
                                                act_grads_[0].data() + r * l0 + e, f, e, d_item_numeric);
      }
    }
  }

  // The batch's loss: the chunks' summed in chunk order (several ranks: then over ranks).
  double batch_loss(const BatchStep& b) {
    double loss = 0.0;
    uint64_t impressions = 0;
    for (int64_t c = b.chunk_begin; c < b.chunk_end; ++c) {
      loss += chunk_loss_[c];
      impressions += chunk_impressions_[c];
    }
    if (ranks() > 1) {
      double sums[2] = {loss, static_cast<double>(impressions)};
      options_.comm->allreduce_sum(sums);
      loss = sums[0];
      impressions = static_cast<uint64_t>(sums[1]);
    }
    batch_impressions_ += impressions;
    return loss;
  }

  void update_dense(const BatchStep& b) override {
    sum_dense_gradients(b.chunk_begin, b.chunk_end);
    // MF's head stays at ones: no gradient, and dense parameters take no L2, so it never moves.
    if (state_.params.config.frozen_head()) {
      std::fill_n(dense_grad_.data() + layout_.dense_offset(TensorRole::kHeadWeight), state_.params.head_weight.values.size(), 0.0f);
      drop_constant_column(numeric_projection(dense_grad_, false), state_.params.user_numeric, false);
      drop_constant_column(numeric_projection(dense_grad_, true), state_.params.item_numeric, true);
    }
    if (!options_.freeze_dense) {
      cpu::dense_update(dense_params(b.optimizer), b.step_size, dense_values_.data(), dense_state0_.data(),
                        dense_state1_.data(), dense_grad_.data(), static_cast<int64_t>(dense_grad_.size()));
    }
  }

  void update_tables(const BatchStep& b) override {
    if (rank_step_) update_sharded(b);
    else update_embeddings(b, false);
  }

  // One process, and no gradient to drop (MF's frozen head): the dense update runs in two halves
  // beside the tables' row groups, in the tables' parallel region.
  void update(const BatchStep& b) override {
    if (rank_step_ || state_.params.config.frozen_head()) return BackendBase::update(b);
    update_embeddings(b, true);
  }

  // Half `half` (0 or 1) of the dense parameters: their gradients summed over the batch's chunks,
  // then their update.
  void update_dense_half(const BatchStep& b, int half) {
    const int64_t count = static_cast<int64_t>(dense_grad_.size());
    const int64_t middle = count / 2 / 16 * 16;  // each half starts on a 64-byte line
    const int64_t begin = half == 0 ? 0 : middle, end = half == 0 ? middle : count;
    sum_chunk_gradients(b.chunk_begin, b.chunk_end, begin, end);
    if (options_.freeze_dense) return;
    cpu::dense_update(dense_params(b.optimizer), b.step_size, dense_values_.data() + begin, dense_state0_.data() + begin,
                      dense_state1_.data() + begin, dense_grad_.data() + begin, end - begin);
  }

  void check_masks(const TrainingSet& data) const {
    TB_CHECK(options_.trainable_users.empty() || options_.trainable_users.size() == data.num_users,
             fmt::format("trainable_users has {} flags for {} users", options_.trainable_users.size(), data.num_users));
    TB_CHECK(options_.trainable_items.empty() || options_.trainable_items.size() == data.num_items,
             fmt::format("trainable_items has {} flags for {} items", options_.trainable_items.size(), data.num_items));
    TB_CHECK(ranks() == 1 || !options_.masked(),
             "update mode (frozen rows and dense layers) trains in one process only; run it without mpirun");
    TB_CHECK(ranks() == 1 || options_.embedding_updates == EmbeddingUpdates::kLazy,
             "dense embedding updates train in one process only; use lazy ones with several ranks");
  }

  // Update mode: the groups of table t without its frozen rows, their summed gradients moved down
  // to match; `groups` itself when every row of the table trains.
  const cpu::RowGroups& trainable_groups(size_t t, const cpu::RowGroups& groups, float* summed, int64_t width) {
    const std::vector<uint8_t>& trainable =
        layout_[t].item_id_table() ? options_.trainable_items : options_.trainable_users;
    if (trainable.empty()) return groups;
    cpu::RowGroups& kept = kept_groups_[t];
    kept.rows.clear();
    kept.starts.assign(1, 0);
    for (size_t k = 0; k < groups.size(); ++k) {
      if (!trainable[groups.rows[k]]) continue;
      if (kept.rows.size() != k) std::copy_n(summed + k * width, width, summed + kept.rows.size() * width);
      kept.rows.push_back(groups.rows[k]);
      kept.starts.push_back(kept.starts.back() + groups.starts[k + 1] - groups.starts[k]);
    }
    return kept;
  }

  void allocate() {
    const ModelConfig& config = state_.params.config;
    const size_t rows = static_cast<size_t>(max_rows_);
    const size_t f = static_cast<size_t>(shape_.factors);
    users_.resize(rows);
    items_.resize(rows);
    positives_.resize(rows);
    samples_.resize(rows);
    labels_.resize(rows);
    weights_.resize(rows);
    user_gmf_.resize(rows * f);
    item_gmf_.resize(rows * f);
    gmf_.resize(rows * f);
    user_gmf_grad_.resize(rows * f);
    item_gmf_grad_.resize(rows * f);
    logits_.resize(rows);
    dlogits_.resize(rows);
    const size_t widths = config.has_mlp() ? config.layers.size() : 1;
    acts_.assign(widths, {});
    act_grads_.assign(widths, {});
    for (size_t j = 0; j < widths && config.has_mlp(); ++j) {
      acts_[j].resize(rows * config.layers[j]);
      act_grads_[j].resize(rows * config.layers[j]);
    }
    // The dense gradients in the flat layout of the parameters (layout_).
    const size_t offset = layout_.dense_floats();
    const size_t chunks = (rows + chunk_rows_ - 1) / chunk_rows_;
    chunk_grads_.assign(chunks, cpu::AlignedVector<float>(offset));
    chunk_loss_.assign(chunks, 0.0);
    chunk_impressions_.assign(chunks, 0);
    dense_grad_.resize(offset);
    chunks_.assign(chunks, {});
    chunk_grad_views_.clear();
    for (size_t c = 0; c < chunks; ++c) {
      const size_t r0 = c * chunk_rows_;
      cpu::ChunkRows<float>& chunk = chunks_[c];
      chunk.user_gmf = user_gmf_.data() + r0 * f;
      chunk.item_gmf = item_gmf_.data() + r0 * f;
      chunk.gmf = gmf_.data() + r0 * f;
      chunk.user_gmf_grad = user_gmf_grad_.data() + r0 * f;
      chunk.item_gmf_grad = item_gmf_grad_.data() + r0 * f;
      for (size_t j = 0; j < widths; ++j) {
        const size_t width = config.has_mlp() ? config.layers[j] : 0;
        chunk.acts.push_back(acts_[j].data() + r0 * width);
        chunk.act_grads.push_back(act_grads_[j].data() + r0 * width);
      }
      chunk.logits = logits_.data() + r0;
      chunk.dlogits = dlogits_.data() + r0;
      chunk_grad_views_.push_back(dense_grads(chunk_grads_[c]));
    }
    const size_t widest = std::max<size_t>({f, static_cast<size_t>(config.mlp_embedding()), 1});
    for (auto& buffer : summed_) buffer.resize(rows * widest);
  }

  // Fills the rows of the batch's samples [begin, end) by the rule both backends share
  // (tastebud/batch_rows.h); sample s of the batch is epoch sample first + s. Returns how many of
  // the negatives came from impressions.
  // The epoch samples of the positions come first, eight at a time (cpu::sample_positions).
  uint64_t fill_samples(uint32_t epoch, uint64_t first, int64_t begin, int64_t end) {
    const SampleSpec spec{options_.seed, epoch, options_.negatives, bpr()};
    const BatchRowsOut out{users_.data(), items_.data(), labels_.data(), weights_.data(), positives_.data()};
    const std::span<uint64_t> samples(samples_.data() + begin, static_cast<size_t>(end - begin));
    cpu::sample_positions(options_.seed, epoch, samples_per_epoch(), first + begin, samples);
    uint64_t impressions_used = 0;
    for (int64_t s = begin; s < end; ++s) {
      impressions_used += fill_sample_of(spec, positives_view_, order_.data(), samples_[s], s, out);
    }
    return impressions_used;
  }

  // Copies the dense parameters and their state into the aligned arena and points dense_ at them;
  // again whenever state_ is replaced.
  void upload_state() override {
    tensors_ = state_.params.tensors();  // the update of every batch looks tables up here
    auto tensors = state_.params.tensors();
    const size_t total = layout_.dense_floats();
    dense_values_.assign(total, 0.0f);
    dense_state0_.assign(total, 0.0f);
    dense_state1_.assign(total, 0.0f);
    for (size_t t = layout_.sparse_count(); t < tensors.size(); ++t) {
      const size_t at = layout_[t].dense_offset;
      std::copy(tensors[t]->values.begin(), tensors[t]->values.end(), dense_values_.begin() + at);
      std::copy(state_.state0[t].values.begin(), state_.state0[t].values.end(), dense_state0_.begin() + at);
      std::copy(state_.state1[t].values.begin(), state_.state1[t].values.end(), dense_state1_.begin() + at);
    }
    cpu::DenseGrads<float> view = dense_grads(dense_values_);
    dense_ = {};
    for (size_t j = 0; j < view.weights.size(); ++j) {
      dense_.weights.push_back(view.weights[j]);
      dense_.biases.push_back(view.biases[j]);
    }
    dense_.head_weight = view.head_weight;
    dense_.head_bias = view.head_bias;
    user_numeric_ = numeric_projection(dense_values_, false);
    item_numeric_ = numeric_projection(dense_values_, true);
  }

  // Copies the arena back into state_.
  void download_state() override {
    auto tensors = state_.params.tensors();
    for (size_t t = layout_.sparse_count(); t < tensors.size(); ++t) {
      const size_t at = layout_[t].dense_offset;
      const size_t n = tensors[t]->values.size();
      std::copy_n(dense_values_.begin() + at, n, tensors[t]->values.begin());
      std::copy_n(dense_state0_.begin() + at, n, state_.state0[t].values.begin());
      std::copy_n(dense_state1_.begin() + at, n, state_.state1[t].values.begin());
    }
  }


  // The dense layers and the head in a flat buffer of the layout (parameters or gradients).
  cpu::DenseGrads<float> dense_grads(cpu::AlignedVector<float>& flat) const {
    cpu::DenseGrads<float> g;
    for (uint32_t j = 0; j < state_.params.weights.size(); ++j) {
      g.weights.push_back(flat.data() + layout_.dense_offset(TensorRole::kDenseWeight, j));
      g.biases.push_back(flat.data() + layout_.dense_offset(TensorRole::kDenseBias, j));
    }
    g.head_weight = flat.data() + layout_.dense_offset(TensorRole::kHeadWeight);
    g.head_bias = flat.data() + layout_.dense_offset(TensorRole::kHeadBias);
    return g;
  }

  // A side's numeric projection in a flat buffer of the layout (null when the model has none).
  float* numeric_projection(cpu::AlignedVector<float>& flat, bool items) const {
    const size_t t = layout_.find(items ? TensorRole::kItemNumeric : TensorRole::kUserNumeric);
    return t == ParamLayout::kNone ? nullptr : flat.data() + layout_[t].dense_offset;
  }

  // Several ranks: the id tables' gradients of this rank's rows go to their owners; the metadata
  // and context tables (replicated) are updated from the whole batch's rows, shared by every rank.
  void update_sharded(const BatchStep& b) {
    const int64_t rows = b.rows, row_begin = b.row_begin;
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    const float* d_x0 = e > 0 ? act_grads_[0].data() + row_begin * 2 * e : nullptr;
    const bool item_metadata = state_.params.config.item_features.enabled();
    rank_step_->update(user_gmf_grad_.data() + row_begin * f, item_gmf_grad_.data() + row_begin * f, d_x0, e,
                  b.optimizer, b.step_size, b.scale, item_metadata ? &data_.item_counts : nullptr);
    if (user_view_.empty() && item_view_.empty() && context_view_.empty()) return;
    share_slices(rows);
    update_features(TensorRole::kUserFeatures, user_view_, users_, user_gmf_grad_.data(), f, 0, rows, b);
    update_features(TensorRole::kItemFeatures, item_view_, items_, item_gmf_grad_.data(), f, e, rows, b);
    update_features(TensorRole::kContext, context_view_, positives_, user_gmf_grad_.data(), 0, 0, rows, b);
  }

  // dense_grad_: this rank's chunks summed in chunk order, then (several ranks) summed over ranks.
  void sum_dense_gradients(int64_t chunk_begin, int64_t chunk_end) {
    const int64_t count = static_cast<int64_t>(dense_grad_.size());
    if (count * (chunk_end - chunk_begin) > (1 << 16)) {
#pragma omp parallel for schedule(static)
      for (int64_t block = 0; block < count; block += 1024) {
        sum_chunk_gradients(chunk_begin, chunk_end, block, std::min<int64_t>(block + 1024, count));
      }
    } else {
      sum_chunk_gradients(chunk_begin, chunk_end, 0, count);
    }
    if (ranks() == 1) return;
    options_.comm->allreduce_sum(std::span<float>(dense_grad_.data(), dense_grad_.size()));
    exchanged_bytes_ += dense_grad_.size() * sizeof(float);
  }

  // dense_grad_[begin, end): the chunks' gradients summed in chunk order (zero where this rank
  // has no chunk of the batch).
  void sum_chunk_gradients(int64_t chunk_begin, int64_t chunk_end, int64_t begin, int64_t end) {
    float* out = dense_grad_.data();
    if (chunk_begin == chunk_end) {
      std::fill(out + begin, out + end, 0.0f);
      return;
    }
    std::copy(chunk_grads_[chunk_begin].data() + begin, chunk_grads_[chunk_begin].data() + end, out + begin);
    for (int64_t c = chunk_begin + 1; c < chunk_end; ++c) {
      const float* in = chunk_grads_[c].data();
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) out[i] += in[i];
    }
  }

  // Several ranks with metadata or context: each rank's slice of the batch rows (ids, their
  // positive, and the gradients of their GMF rows and MLP input) goes to every rank, so that every
  // rank applies the whole batch's update to its replica of the feature and context tables.
  void share_slices(int64_t rows) {
    const int64_t f = shape_.factors;
    const int64_t l0 = 2 * static_cast<int64_t>(state_.params.config.mlp_embedding());
    const auto share = [&](void* data, int64_t width, size_t element) {
      exchanged_bytes_ += rank_step_->share_rows(data, rows, width, element, chunk_rows_);
    };
    share(users_.data(), 1, sizeof(uint32_t));
    share(items_.data(), 1, sizeof(uint32_t));
    if (!context_view_.empty()) share(positives_.data(), 1, sizeof(uint32_t));
    share(user_gmf_grad_.data(), f, sizeof(float));
    share(item_gmf_grad_.data(), f, sizeof(float));
    if (!act_grads_.empty() && !act_grads_[0].empty()) share(act_grads_[0].data(), l0, sizeof(float));
  }

  // MF: a numeric projection's gradient (grad: null when the side has none) loses its constant
  // column, which starts at zero and so stays there (dense layers take no L2).
  void drop_constant_column(float* grad, const Tensor& projection, bool items) const {
    if (grad == nullptr || projection.values.empty()) return;
    const int64_t width = static_cast<int64_t>(projection.cols()), column = state_.params.config.constant_column(items);
    const int64_t rows = static_cast<int64_t>(projection.values.size()) / width;
    for (int64_t n = 0; n < rows; ++n) grad[n * width + column] = 0.0f;
  }

  // The column of id table t that stays at one (MF), or -1.
  int64_t constant_column(size_t t) const {
    const TensorRole role = layout_[t].role;
    if (role != TensorRole::kUserGmf && role != TensorRole::kItemGmf) return -1;
    return state_.params.config.constant_column(role == TensorRole::kItemGmf);
  }

  // Table t's touched rows, updated with gradient columns [offset, offset + width) of grads.
  // With item metadata, the id rows of items without positives stay where zero_untrained_rows put
  // them (their gradient as sampled negatives is dropped): a cold item's score is its metadata's.
  void update_table(size_t t, const cpu::RowGroups& groups, const float* grads, int64_t stride,
                    int64_t offset, int64_t width, const BatchStep& b) {
    if (width == 0) return;
    Tensor& table = *tensors_[t];
    float* summed = summed_[t].data();
    cpu::sum_row_gradients(groups, grads, stride, offset, width, summed);
    if (layout_[t].item_id_table() && state_.params.config.item_features.enabled()) {
      for (size_t k = 0; k < groups.size(); ++k) {
        if (data_.item_counts[groups.rows[k]] == 0) std::fill_n(summed + k * width, width, 0.0f);
      }
    }
    const cpu::RowGroups& training = trainable_groups(t, groups, summed, width);
    cpu::sparse_update(b.optimizer, b.step_size, table.values.data(),
                       state_.state0[t].values.data(), state_.state1[t].values.data(), width,
                       training.rows, summed, RowL2{training.starts.data(), b.scale});
    if (options_.embedding_updates == EmbeddingUpdates::kDense) update_untouched(t, training.rows, width, b);
    const int64_t constant = constant_column(t);
    if (constant >= 0) cpu::set_column(table.values.data(), width, training.rows, constant, 1.0f);
  }

  // Dense embedding updates: the rows of id table t the step did not use take a zero-gradient step.
  void update_untouched(size_t t, std::span<const uint32_t> rows, int64_t width, const BatchStep& b) {
    Tensor& table = *tensors_[t];
    std::vector<uint8_t>& touched = touched_[t];
    touched.resize(table.rows(), 0);
    for (uint32_t r : rows) touched[r] = 1;
    cpu::untouched_update(b.optimizer, b.step_size, table.values.data(), state_.state0[t].values.data(),
                          state_.state1[t].values.data(), width, static_cast<int64_t>(table.rows()), touched.data(),
                          constant_column(t));
    for (uint32_t r : rows) touched[r] = 0;
  }

  // The id tables' updates (with_dense: and the dense update's two halves, beside the row groups).
  void update_embeddings(const BatchStep& b, bool with_dense) {
    const int64_t rows = b.rows;
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    // The four id tables are independent: one thread each, so small batches scale too. Each
    // table's rows are still summed in batch-row order, so the result does not depend on threads.
    // One parallel region: the two sides' row groups, then the four tables. Static rounds keep a
    // side's groups and tables on the same thread batch after batch (with two threads, users on
    // one and items on the other), so their rows stay in that core's cache.
    const float* d_x0 = act_grads_[0].data();
#pragma omp parallel
    {
#pragma omp for schedule(static, 1)
      for (int task = 0; task < 4; ++task) {
        if (task == 0) user_groups_.build({users_.data(), static_cast<size_t>(rows)});
        else if (task == 1) item_groups_.build({items_.data(), static_cast<size_t>(rows)});
        else if (with_dense) update_dense_half(b, task - 2);
      }
#pragma omp for schedule(static, 1)
      for (int t = 0; t < 4; ++t) {
        switch (t) {
          case 0: update_table(0, user_groups_, user_gmf_grad_.data(), f, 0, f, b); break;
          case 1: update_table(1, item_groups_, item_gmf_grad_.data(), f, 0, f, b); break;
          case 2: update_table(2, user_groups_, d_x0, 2 * e, 0, e, b); break;
          case 3: update_table(3, item_groups_, d_x0, 2 * e, e, e, b); break;
        }
      }
    }
    update_features(TensorRole::kUserFeatures, user_view_, users_, user_gmf_grad_.data(), f, 0, rows, b);
    update_features(TensorRole::kItemFeatures, item_view_, items_, item_gmf_grad_.data(), f, e, rows, b);
    update_features(TensorRole::kContext, context_view_, positives_, user_gmf_grad_.data(), 0, 0, rows, b);
  }

  // Feature table t: each batch row's representation gradient reaches every feature row of its
  // entity, scaled by the row's weight, summed per table row in batch-row order. f: the GMF columns
  // of a row (0 for the context table, which feeds the MLP only); mlp_offset: which half of the MLP
  // input the table feeds.
  void update_features(TensorRole role, const cpu::FeatureView& view, const std::vector<uint32_t>& ids,
                       const float* d_gmf, int64_t f, int64_t mlp_offset, int64_t rows, const BatchStep& b) {
    const size_t t = layout_.find(role);
    if (t == ParamLayout::kNone || options_.freeze_dense) return;  // update mode: frozen
    const int64_t e = state_.params.config.mlp_embedding();
    feature_groups_.build(view, {ids.data(), static_cast<size_t>(rows)});
    feature_summed_.resize(feature_groups_.size() * (f + e));
    cpu::sum_feature_gradients<float>(feature_groups_, d_gmf, shape_.factors, act_grads_[0].data(), 2 * e,
                                      mlp_offset, f, e, feature_summed_.data());
    // MF: the rows' constant column has no gradient and so stays at zero (its L2 pull is zero too).
    const int64_t constant = role == TensorRole::kContext ? -1 : state_.params.config.constant_column(role == TensorRole::kItemFeatures);
    for (size_t k = 0; constant >= 0 && k < feature_groups_.size(); ++k) feature_summed_[k * (f + e) + constant] = 0.0f;
    Tensor& table = *tensors_[t];
    cpu::sparse_update(b.optimizer, b.step_size, table.values.data(),
                       state_.state0[t].values.data(), state_.state1[t].values.data(), f + e,
                       feature_groups_.rows, feature_summed_.data(), RowL2{feature_groups_.starts.data(), b.scale});
  }

  cpu::NeuMFShape shape_;
  cpu::AliasTable alias_;
  PositivesView positives_view_;  // data_ and alias_ as the row-fill rule reads them
  std::vector<uint64_t> order_;
  std::vector<uint32_t> users_, items_;
  std::vector<uint32_t> positives_;  // the positive each batch row was made from (its context)
  std::vector<uint64_t> samples_;    // the epoch sample of each of the batch's samples
  cpu::AlignedVector<float> labels_, weights_;
  cpu::AlignedVector<float> user_gmf_, item_gmf_, gmf_, user_gmf_grad_, item_gmf_grad_, logits_, dlogits_;
  std::vector<cpu::AlignedVector<float>> acts_, act_grads_;
  std::vector<cpu::AlignedVector<float>> chunk_grads_;
  std::vector<double> chunk_loss_;
  std::vector<uint64_t> chunk_impressions_;
  uint64_t batch_impressions_ = 0;  // impression negatives drawn in the current epoch
  std::vector<uint8_t> touched_[4];  // dense embedding updates: each id table's rows of the step
  cpu::AlignedVector<float> dense_grad_;
  cpu::AlignedVector<float> summed_[ModelParams::kEmbeddingTables];  // per id table
  // The dense parameters and their optimizer state live here while training (aligned, see
  // cpu/aligned.h) and are copied into state_ when it is read.
  cpu::AlignedVector<float> dense_values_, dense_state0_, dense_state1_;
  std::vector<cpu::ChunkRows<float>> chunks_;
  std::vector<cpu::DenseGrads<float>> chunk_grad_views_;
  cpu::DenseParams<float> dense_;
  std::vector<Tensor*> tensors_;  // state_.params.tensors(), refreshed by bind_params()
  cpu::RowGroups user_groups_, item_groups_;
  cpu::RowGroups kept_groups_[ModelParams::kEmbeddingTables];  // update mode: the rows that train
  cpu::FeatureView user_view_, item_view_, context_view_;
  const float* user_numeric_ = nullptr;  // the projections in dense_values_, bound with the rest
  const float* item_numeric_ = nullptr;
  cpu::FeatureGroups feature_groups_;
  cpu::AlignedVector<float> feature_summed_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const TrainingSet& data, const TrainOptions& options,
                                          TrainState state) {
  return std::make_unique<CpuBackend>(data, options, std::move(state));
}

}  // namespace tastebud
