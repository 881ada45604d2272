// The CUDA backend: a whole training epoch on the device, the twin of cpu_backend.cpp; like it,
// the phases of one step that BackendBase (backend_base.h) runs batch by batch.
//
// Mapping to the CPU reference, step by step: the positives are uploaded once; per epoch the
// shuffle sorts positives by (Philox shuffle key, index) exactly as cpu::shuffle_order; each
// batch covers the same samples [first, first + batch_size), maps sample -> (positive, k) the same
// way and draws negative j of positive p as draw p * negatives + j through draw_training_negative
// (a share from the user's ignored impressions with --impression-negatives); with metadata, each
// gathered id row gets its entity's feature rows and projected numbers added in the CPU's order;
// with context, each row's user MLP half then gets the context rows of the positive it came from;
// the loss is scaled by 1 / samples; the dense gradients of the whole batch (layers, head, numeric
// projections) are formed before the fused dense update; the embedding and feature-table
// gradients are grouped by table row (stable radix sort of the row ids) and summed in batch-row
// order, then a lazy update touches those rows only, with the bias correction of the global step.
// What differs is only the float summation order inside GEMMs and column sums, so results match
// the CPU within rounding, not bit for bit.
//
// Fused step kernels (TrainOptions::cuda_kernels, cuda::StepKernels): the same phases with fewer
// passes over memory: the dense layers' bias and ReLU as cuBLASLt epilogues, the ReLU backward
// inside the bias gradient's column sums, the GMF product formed inside the head's two kernels,
// and each id table's touched rows summed and stepped by one grouped_update (dense embedding
// updates: one dense_grouped_update over the whole table).
//
// On several ranks each rank computes its rows of every global batch, the CPU's
// rank slice (rank_rows). With --rank-exchange host the exchange is host-staged through RankStep
// (rank_step.h), the calls the CPU backend makes: the slice's user and item ids come to the host,
// their id-table rows are fetched from the owners (ShardedIdTables, host memory) and uploaded, and
// gathered on the device by slot; forward and backward run on the slice; the dense gradients are
// summed by a DeviceCommunicator (NCCL, or host-staged where ranks share a GPU), so every rank
// applies the same dense update; the slice rows' GMF and MLP-input gradients go back to the host
// and to the owners, which apply the lazy update there. With --rank-exchange device the shards
// live on the GPUs (DeviceIdShards, device_shards.h): only the slice's ids come to the host, and
// rows and gradients move GPU to GPU through the same DeviceCommunicator. With metadata or
// context, the feature and context tables are replicated on the devices: each rank adds its rows'
// features, and then every rank's ids and row gradients are shared (RankStep::share_rows) so that
// every rank applies the whole batch's update to its replica, as the CPU backend does. The batch
// loss is summed over ranks every step.
//
// With cuda_graph (one process), the second full batch after a state is uploaded is captured into a
// CUDA graph (cuda::StepGraph) instead of run, and it and every later full batch are one replay of
// it: the phases below, captured with step_ pointing at the device's StepScalars, read the batch's
// first sample, epoch, step size, epsilon and stamp there; the graph's first node writes them.
//
// No host round trip per batch: the loss is reduced and accumulated on the device, a non-finite
// batch loss sets a device flag that turns the remaining updates of the epoch into no-ops (the
// CPU stops there), and the host reads the totals (and the impression count) once at the end of
// the epoch.
#include <algorithm>
#include <optional>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cpu/sampler.h"
#include "cuda/common.h"
#include "cuda/dense.h"
#include "cuda/embedding.h"
#include "cuda/features.h"
#include "cuda/graph.h"
#include "cuda/loss.h"
#include "cuda/neumf.h"
#include "cuda/optimizer.h"
#include "cuda/sampler.h"
#include "backend_base.h"
#include "device_shards.h"
#include "rank_step.h"
#include "tastebud/engine/backends.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

constexpr size_t kNone = ParamLayout::kNone;

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

// The most feature-table rows one entity lists: the bound each batch's feature groups are sized by.
uint32_t most_rows_per_entity(const FeatureInputs& in) {
  uint64_t most = 0;
  for (size_t x = 0; x + 1 < in.offsets.size(); ++x) most = std::max(most, in.offsets[x + 1] - in.offsets[x]);
  TB_CHECK(most < (1ull << 32), "metadata: an entity lists more than 2^32 feature rows");
  return static_cast<uint32_t>(most);
}

// One side's metadata (users or items), or the context (entities: the positives), on the device:
// its inputs, uploaded once, and where its parameters sit among the model's tensors.
struct FeatureSide {
  cuda::DeviceBuffer<uint64_t> offsets;
  cuda::DeviceBuffer<uint32_t> rows;
  cuda::DeviceBuffer<float> weights, values;
  cuda::FeatureView view;        // empty: this side has no metadata
  size_t table = kNone;          // the feature table's index in ModelParams::tensors()
  size_t projection = kNone;     // the numeric projection's index in ModelParams::tensors()
  uint64_t table_rows = 0;
  uint32_t max_per_entity = 0;
  int64_t constant = -1;         // MF: the column its rows hold at zero (ModelConfig::constant_column)
  std::unique_ptr<cuda::FeatureGroups> groups;
};

cuda::GemmPrecision gemm_precision(Precision p) {
  return p == Precision::kTf32 ? cuda::GemmPrecision::kTf32
         : p == Precision::kBf16 ? cuda::GemmPrecision::kBf16
                                 : cuda::GemmPrecision::kFp32;
}

class CudaBackend final : public BackendBase {
 public:
  CudaBackend(const TrainingSet& data, const TrainOptions& options, TrainState state,
              std::unique_ptr<DeviceCommunicator> dense_comm)
      : BackendBase(data, options, std::move(state)),
        blas_(stream_.get(), gemm_precision(options.precision),
              options.cuda_kernels == CudaKernels::kFused ? cuda::StepKernels::kFused : cuda::StepKernels::kSeparate),
        dense_comm_(std::move(dense_comm)) {
    const ModelConfig& config = state_.params.config;
    TB_CHECK(!sharded() || (dense_comm_ && !options.masked()),
             "the CUDA backend trains on several ranks without update mode, with a device communicator");
    TB_CHECK(data.size() < (1ull << 31), "the CUDA backend trains on at most 2^31 - 1 positives");
    shape_ = config.neumf_shape();
    TB_CHECK(max_rows_ < (1ll << 31), "`batch_size` is too large for the CUDA backend");
    locate_features();
    check_fits();
    upload_data();
    allocate();
    load_state(state_);
  }

  std::string name() const override { return "cuda"; }

  uint64_t held_bytes() const override {
    uint64_t floats = d_dense_.size() + d_dense_state0_.size() + d_dense_state1_.size();
    for (size_t t = 0; t < d_tables_.size(); ++t) {
      floats += d_tables_[t].size() + d_table_state0_[t].size() + d_table_state1_[t].size();
    }
    // Device shards: the rows on the device (the host's copies are only the last download's).
    const uint64_t shards = device_shards_ ? device_shards_->held_bytes() : rank_step_ ? rank_step_->held_bytes() : 0;
    return floats * sizeof(float) + shards;
  }

 private:
  void begin_epoch(uint32_t epoch) override {
    cuda::StreamHandle stream = stream_.get();
    loss_->reset(stream);
    if (uses_impressions()) d_impression_negatives_.zero(stream);
    shuffler_->run(options_.seed, epoch, d_order_.data(), stream);
  }

  // cuda_graph: a full batch in one process is one replay of the captured step (captured at the
  // second full batch after the state was uploaded: the first sizes what is allocated lazily).
  std::optional<double> rows_and_gradients(const BatchStep& b) override {
    graph_step_ = false;
    if (graph_eligible(b)) {
      if (!graph_.ready()) capture_step(b);
      if (graph_.ready()) {
        graph_.launch(step_scalars(b), stream_.get());
        graph_step_ = true;
        ++graph_steps_;
        return std::nullopt;
      }
    }
    warmed_ = warmed_ || full_one_process_batch(b);
    return BackendBase::rows_and_gradients(b);
  }

  void update(const BatchStep& b) override {
    if (!graph_step_) BackendBase::update(b);
  }

  uint64_t take_graph_steps() override { return std::exchange(graph_steps_, 0); }

  bool full_one_process_batch(const BatchStep& b) const { return !rank_step_ && b.samples == options_.batch_size; }
  bool graph_eligible(const BatchStep& b) const {
    return options_.cuda_graph && warmed_ && full_one_process_batch(b) && !cuda::debug_sync();
  }

  cuda::StepScalars step_scalars(const BatchStep& b) const {
    cuda::StepScalars s;
    s.first = b.first;
    s.epoch = b.epoch;
    s.stamp = static_cast<uint32_t>(b.step);
    s.step_size = b.step_size;
    s.eps = b.optimizer.eps;
    return s;
  }

  // Records the step's phases into graph_ (nothing runs yet). A step that cannot be captured stops
  // the run with the reason: the stream stays usable, and the job runs without cuda_graph.
  void capture_step(const BatchStep& b) {
    cuda::StreamHandle stream = stream_.get();
    if (d_step_.empty()) d_step_.resize(1);
    std::string reason;
    try {
      graph_.begin(stream, d_step_.data(), step_scalars(b));
      step_ = d_step_.data();
      BackendBase::rows_and_gradients(b);
      BackendBase::update(b);
      step_ = nullptr;
      if (graph_.end(stream, &reason)) return;
    } catch (const std::exception& e) {
      step_ = nullptr;
      graph_.abandon(stream);
      reason = e.what();
    }
    throw Error("`cuda_graph`: the training step could not be captured into a CUDA graph (" + reason +
                "); train without `cuda_graph`");
  }

  // One process: the epoch's totals, accumulated on the device, read once.
  LossTotals read_loss_totals() override {
    const cuda::EpochTotals totals = loss_->read(stream_.get());
    return {totals.loss, totals.samples, totals.batches, totals.halted == 0};
  }

  // Counted on the device; several ranks: summed over ranks.
  uint64_t epoch_impressions() override {
    if (!uses_impressions()) return 0;
    unsigned long long impressions = 0;
    cuda::copy_to_host(&impressions, d_impression_negatives_.data(), sizeof(impressions), stream_.get());
    uint64_t summed = impressions;
    if (rank_step_) rank_step_->sum_loss(0.0, &summed);
    return summed;
  }

  // The device takes state_ (several ranks: the id tables stay on the hosts, this rank's rows
  // only, and the device holds none).
  void upload_state() override {
    for (auto& stamps : d_row_stamps_) stamps.resize(0);  // stamps of steps this state may take again
    auto tensors = state_.params.tensors();
    cuda::StreamHandle stream = stream_.get();
    const size_t sparse = layout_.sparse_count();
    for (size_t t = 0; t < sparse; ++t) {
      d_tables_[t].upload(tensors[t]->values, stream);
      d_table_state0_[t].upload(state_.state0[t].values, stream);
      d_table_state1_[t].upload(state_.state1[t].values, stream);
    }
    std::vector<float> dense(layout_.dense_floats(), 0.0f), dense0(dense.size(), 0.0f), dense1(dense.size(), 0.0f);
    for (size_t t = sparse; t < tensors.size(); ++t) {
      const size_t offset = layout_[t].dense_offset;
      std::copy(tensors[t]->values.begin(), tensors[t]->values.end(), dense.begin() + offset);
      std::copy(state_.state0[t].values.begin(), state_.state0[t].values.end(), dense0.begin() + offset);
      std::copy(state_.state1[t].values.begin(), state_.state1[t].values.end(), dense1.begin() + offset);
    }
    d_dense_.upload(dense, stream);
    d_dense_state0_.upload(dense0, stream);
    d_dense_state1_.upload(dense1, stream);
    bind_dense();
    refresh_bf16_weights();
    graph_.reset();  // the state may differ: the next full batch runs and sizes lazy buffers before a capture
    warmed_ = false;
    device_shards_.reset();
    if (device_exchange()) {
      device_shards_ = std::make_unique<DeviceIdShards>(*options_.comm, *dense_comm_, state_.params.config, max_rows_,
                                                        stream);
      const bool item_metadata = state_.params.config.item_features.enabled();
      device_shards_->upload(rank_step_->shards(), item_metadata ? &data_.item_counts : nullptr);
    }
  }

  // state_ gets the device's current values (the id tables only in one process; device shards:
  // rank_step_'s host rows).
  void download_state() override {
    if (device_shards_) device_shards_->download(rank_step_->shards());
    auto tensors = state_.params.tensors();
    const size_t sparse = layout_.sparse_count();
    for (size_t t = 0; t < sparse; ++t) {
      download(d_tables_[t], tensors[t]->values);
      download(d_table_state0_[t], state_.state0[t].values);
      download(d_table_state1_[t], state_.state1[t].values);
    }
    const std::vector<float> dense = d_dense_.download(stream_.get());
    const std::vector<float> dense0 = d_dense_state0_.download(stream_.get());
    const std::vector<float> dense1 = d_dense_state1_.download(stream_.get());
    for (size_t t = sparse; t < tensors.size(); ++t) {
      const size_t offset = layout_[t].dense_offset;
      auto copy = [&](const std::vector<float>& from, std::vector<float>& to) {
        std::copy(from.begin() + offset, from.begin() + offset + to.size(), to.begin());
      };
      copy(dense, tensors[t]->values);
      copy(dense0, state_.state0[t].values);
      copy(dense1, state_.state1[t].values);
    }
  }

  bool sharded() const { return ranks() > 1; }
  // Several ranks with the id-table shards on the GPUs (--rank-exchange device).
  bool device_exchange() const { return sharded() && options_.rank_exchange == RankExchange::kDevice; }
  bool shares_features() const {
    return user_side_.table != kNone || item_side_.table != kNone || context_side_.table != kNone;
  }
  bool uses_impressions() const {
    return options_.impression_share > 0.0f && !data_.impression_offsets.empty() && !data_.impression_items.empty();
  }
  int64_t feature_width() const { return state_.params.config.feature_width(); }

  // Where each side's feature table and numeric projection sit among the tensors (layout_).
  void locate_features() {
    auto locate = [&](FeatureSide& side, TensorRole table, TensorRole projection, const FeatureInputs& in) {
      side.table = layout_.find(table);
      if (side.table != kNone) {
        side.table_rows = layout_[side.table].shape[0];
        side.max_per_entity = most_rows_per_entity(in);
      }
      const size_t t = layout_.find(projection);
      if (t != kNone) side.projection = t;
    };
    locate(user_side_, TensorRole::kUserFeatures, TensorRole::kUserNumeric, data_.user_features);
    locate(item_side_, TensorRole::kItemFeatures, TensorRole::kItemNumeric, data_.item_features);
    user_side_.constant = state_.params.config.constant_column(false);
    item_side_.constant = state_.params.config.constant_column(true);
    // The context table has no numbers (ModelConfig::validate).
    locate(context_side_, TensorRole::kContext, TensorRole::kContext, data_.context);
    context_side_.projection = kNone;
  }

  void download(const cuda::DeviceBuffer<float>& from, std::vector<float>& to) {
    TB_CHECK(from.size() == to.size(), "device and host tensors differ in size");
    cuda::copy_to_host(to.data(), from.data(), from.bytes(), stream_.get());
  }

  int64_t widest_table() const {
    return std::max<int64_t>({shape_.factors, static_cast<int64_t>(state_.params.config.mlp_embedding()), 1});
  }

  // Device bytes this job needs, counted from the buffers allocate() and upload_data() make, plus
  // cub's scratch and cuBLAS's workspace as a margin.
  double bytes_needed() const {
    const double p = static_cast<double>(data_.size()), rows = static_cast<double>(max_rows_);
    double params = static_cast<double>(layout_.dense_floats());
    for (size_t t = 0; t < layout_.sparse_count(); ++t) {
      if (!sharded() || t >= ModelParams::kEmbeddingTables) params += static_cast<double>(layout_[t].size());
    }
    double bytes = 4.0 * params * 4.0;                                // values, two states, gradients
    bytes += p * (4 + 4 + 4 + 4) + 8.0 * (data_.num_users + 1.0);     // positives and the order
    bytes += p * (8 + 8 + 4) * 1.25;                                  // shuffle keys, index, sort scratch
    if (options_.sampler == SamplerKind::kPopularity) bytes += 8.0 * data_.num_items;
    double width = 5.0 * shape_.factors;                               // user, item, gmf, their grads
    for (int64_t w : shape_.layers) width += 2.0 * w;                  // activations and their grads
    bytes += rows * (4 * 4 + 4 * 2 + 8 + 4 * width);                    // ids, labels, weights, logits, loss
    bytes += 2.0 * rows * 4 * 7 * 1.25;                                // two RowGroups with sort scratch
    bytes += rows * 4.0 * widest_table();                               // summed row gradients
    const double id_width = shape_.factors + state_.params.config.mlp_embedding();
    if (sharded()) bytes += 2.0 * rows * 4 * (1 + id_width);  // fetched rows
    if (device_exchange()) {  // this rank's shards with their state, and the exchange's buffers
      bytes += 3.0 * 4 * id_width * static_cast<double>(data_.num_users + data_.num_items) / ranks();
      bytes += rows * 4 * (2 * 3 + 1 + 3 * id_width);
    }
    bytes += 4.0 * cuda::neumf_partials(shape_, max_rows_);
    if (uses_impressions()) {
      bytes += 8.0 * (data_.num_users + 1.0) + 4.0 * static_cast<double>(data_.impression_items.size()) + 8;
    }
    if (state_.params.config.item_features.enabled()) bytes += data_.num_items;  // the trained-item mask
    if (state_.params.config.has_context()) bytes += rows * 4.0;                 // each row's positive
    const int64_t w = feature_width();
    double feature_sums = 0, numeric_partials = 0;
    for (const auto* side : {&user_side_, &item_side_, &context_side_}) {
      const FeatureInputs& in = side == &user_side_   ? data_.user_features
                                : side == &item_side_ ? data_.item_features
                                                      : data_.context;
      if (side->table != kNone) {
        bytes += 8.0 * static_cast<double>(in.offsets.size()) + 8.0 * static_cast<double>(in.rows.size());
        bytes += cuda::FeatureGroups::bytes_for(max_rows_, side->max_per_entity);
        feature_sums = std::max(feature_sums, static_cast<double>(cuda::FeatureGroups::max_groups_for(
                                                  max_rows_, side->table_rows, side->max_per_entity)));
      }
      if (side->projection != kNone) {
        bytes += 4.0 * static_cast<double>(in.values.size());
        numeric_partials = std::max(
            numeric_partials, static_cast<double>(cuda::numeric_gradient_partials(max_rows_, in.numeric, w)));
      }
    }
    bytes += 4.0 * (feature_sums * static_cast<double>(w) + numeric_partials);
    return bytes + 512.0 * 1024 * 1024;                                 // cuBLAS workspace, context
  }

  void check_fits() const {
    cuda::DeviceInfo info;
    std::string reason;
    if (!cuda::probe(&reason, &info)) throw Error("`device=cuda`: " + reason);
    const double needed = bytes_needed();
    if (needed > static_cast<double>(info.free_bytes)) {
      throw Error(fmt::format(
          "`device=cuda`: the model, the training data and a batch of {} need about {:.2f} GiB of "
          "device memory, but only {:.2f} GiB of {:.2f} GiB are free on {}; lower `batch_size`, "
          "shrink the model or use `device=cpu`",
          options_.batch_size, gib(needed), gib(static_cast<double>(info.free_bytes)),
          gib(static_cast<double>(info.total_bytes)), info.name));
    }
  }

  void upload_data() {
    cuda::StreamHandle stream = stream_.get();
    d_user_.upload(data_.user, stream);
    d_item_.upload(data_.item, stream);
    d_weight_.upload(data_.weight, stream);
    d_user_offsets_.upload(data_.user_offsets, stream);
    positives_.user = d_user_.data();
    positives_.item = d_item_.data();
    positives_.weight = d_weight_.data();
    positives_.user_offsets = d_user_offsets_.data();
    positives_.num_items = data_.num_items;
    positives_.count = data_.size();
    if (options_.sampler == SamplerKind::kPopularity) {
      const cpu::AliasTable alias = cpu::AliasTable::popularity(data_.item_counts, options_.sampler_alpha);
      d_alias_probability_.upload(alias.probability, stream);
      d_alias_index_.upload(alias.alias, stream);
      positives_.alias_probability = d_alias_probability_.data();
      positives_.alias_index = d_alias_index_.data();
    }
    if (uses_impressions()) {
      d_impression_offsets_.upload(data_.impression_offsets, stream);
      d_impression_items_.upload(data_.impression_items, stream);
      positives_.impression_offsets = d_impression_offsets_.data();
      positives_.impression_items = d_impression_items_.data();
      positives_.impression_share = options_.impression_share;
    }
    d_order_.resize(data_.size());
    shuffler_ = std::make_unique<cuda::Shuffler>(data_.size());
    upload_features(user_side_, state_.params.config.user_features, data_.user_features);
    upload_features(item_side_, state_.params.config.item_features, data_.item_features);
    upload_features(context_side_, state_.params.config.context, data_.context);
    if (state_.params.config.item_features.enabled()) {
      std::vector<unsigned char> trained(data_.num_items);
      for (uint32_t i = 0; i < data_.num_items; ++i) trained[i] = data_.item_counts[i] > 0 ? 1 : 0;
      d_trained_items_.upload(trained, stream);
    }
    // Update mode: which users' and items' rows train (empty: every row).
    if (!options_.trainable_users.empty()) d_trainable_[0].upload(options_.trainable_users, stream);
    if (!options_.trainable_items.empty()) d_trainable_[1].upload(options_.trainable_items, stream);
  }

  void upload_features(FeatureSide& side, const FeatureSpec& spec, const FeatureInputs& in) {
    if (!spec.enabled()) return;
    cuda::StreamHandle stream = stream_.get();
    if (side.table != kNone) {
      side.offsets.upload(in.offsets, stream);
      side.rows.upload(in.rows, stream);
      side.weights.upload(in.weights, stream);
      side.view.offsets = side.offsets.data();
      side.view.rows = side.rows.data();
      side.view.weights = side.weights.data();
    }
    if (side.projection != kNone) {
      side.values.upload(in.values, stream);
      side.view.numeric = in.numeric;
      side.view.values = side.values.data();
    }
  }

  void allocate() {
    const ModelConfig& config = state_.params.config;
    const size_t rows = static_cast<size_t>(max_rows_);
    const size_t f = static_cast<size_t>(shape_.factors);
    d_users_.resize(rows);
    d_items_.resize(rows);
    d_labels_.resize(rows);
    d_weights_.resize(rows);
    d_logits_.resize(rows);
    d_dlogits_.resize(rows);
    d_row_loss_.resize(rows);
    d_user_gmf_.resize(rows * f);
    d_item_gmf_.resize(rows * f);
    d_gmf_.resize(rows * f);
    d_user_gmf_grad_.resize(rows * f);
    d_item_gmf_grad_.resize(rows * f);
    const size_t widths = config.has_mlp() ? config.layers.size() : 0;
    d_acts_.clear();
    d_act_grads_.clear();
    d_acts16_.clear();
    d_act_grads16_.clear();
    // bf16 activations: the hidden layers' outputs and gradients in bf16 only (their fp32 buffers
    // stay empty), the MLP input in both.
    for (size_t j = 0; j < widths; ++j) {
      const size_t fp32 = j > 0 && bf16_activations() ? 0 : rows * config.layers[j];
      d_acts_.emplace_back(fp32);
      d_act_grads_.emplace_back(fp32);
      const size_t bf16 = bf16_activations() ? rows * config.layers[j] : 0;
      d_acts16_.emplace_back(bf16);
      d_act_grads16_.emplace_back(j > 0 ? bf16 : 0);
    }
    d_partial_.resize(static_cast<size_t>(cuda::neumf_partials(shape_, max_rows_)));
    d_summed_.resize(rows * static_cast<size_t>(widest_table()));
    user_groups_ = std::make_unique<cuda::RowGroups>(max_rows_, data_.num_users);
    item_groups_ = std::make_unique<cuda::RowGroups>(max_rows_, data_.num_items);
    loss_ = std::make_unique<cuda::LossAccumulator>(max_rows_);
    if (uses_impressions()) d_impression_negatives_.resize(1);
    if (sharded()) {
      const int64_t e = config.mlp_embedding();
      d_step_loss_.resize(1);
      for (int side = 0; side < 2 && !device_exchange(); ++side) {  // host shards: the fetched rows
        d_slots_[side].resize(rows);
        d_fetched_gmf_[side].resize(rows * f);
        d_fetched_mlp_[side].resize(rows * static_cast<size_t>(e));
      }
    }
    if (config.has_context()) d_positives_.resize(rows);

    // One buffer of summed feature-row gradients serves every table in turn: rows of the widest
    // (feature_width(); the context table's e columns fit in it).
    const int64_t w = feature_width();
    size_t feature_sums = 0, numeric_partials = 0;
    for (FeatureSide* side : {&user_side_, &item_side_, &context_side_}) {
      if (side->table != kNone) {
        side->groups = std::make_unique<cuda::FeatureGroups>(max_rows_, side->table_rows, side->max_per_entity);
        feature_sums = std::max(feature_sums, static_cast<size_t>(cuda::FeatureGroups::max_groups_for(
                                                  max_rows_, side->table_rows, side->max_per_entity)));
      }
      if (side->projection != kNone) {
        numeric_partials = std::max(
            numeric_partials, static_cast<size_t>(cuda::numeric_gradient_partials(max_rows_, side->view.numeric, w)));
      }
    }
    d_feature_summed_.resize(feature_sums * static_cast<size_t>(w));
    d_numeric_partial_.resize(numeric_partials);

    const size_t sparse = layout_.sparse_count();
    d_tables_ = std::vector<cuda::DeviceBuffer<float>>(sparse);
    d_table_state0_ = std::vector<cuda::DeviceBuffer<float>>(sparse);
    d_table_state1_ = std::vector<cuda::DeviceBuffer<float>>(sparse);
    d_dense_grad_.resize(layout_.dense_floats());
    d_dense_grad_.zero(stream_.get());  // the alignment gaps stay zero, so their updates are no-ops

    batch_.user_gmf = d_user_gmf_.data();
    batch_.item_gmf = d_item_gmf_.data();
    batch_.gmf = d_gmf_.data();
    batch_.user_gmf_grad = d_user_gmf_grad_.data();
    batch_.item_gmf_grad = d_item_gmf_grad_.data();
    batch_.logits = d_logits_.data();
    batch_.dlogits = d_dlogits_.data();
    batch_.partial = d_partial_.data();
    batch_.acts.clear();
    batch_.act_grads.clear();
    batch_.acts16.clear();
    batch_.act_grads16.clear();
    for (size_t j = 0; j < widths; ++j) {
      batch_.acts.push_back(d_acts_[j].data());
      batch_.act_grads.push_back(d_act_grads_[j].data());
      batch_.acts16.push_back(j > 0 ? d_acts16_[j].data() : nullptr);
      batch_.act_grads16.push_back(j > 0 ? d_act_grads16_[j].data() : nullptr);
    }
    batch_.x0_16 = bf16_activations() ? d_acts16_[0].data() : nullptr;
    if (bf16_activations()) d_dense16_.resize(layout_.dense_floats());
  }

  // --precision bf16 with fused kernels, on a model with dense layers (cuda::Blas::bf16_activations).
  bool bf16_activations() const { return blas_.bf16_activations() && shape_.dense_layers() > 0; }

  // bf16 activations: the dense weights' bf16 copy, refreshed whenever the fp32 ones change.
  void refresh_bf16_weights() {
    if (bf16_activations()) cuda::to_bf16(d_dense_.data(), d_dense16_.data(), d_dense_.size(), stream_.get());
  }

  // Points dense_ and grads_ into the flat dense buffers; again whenever they are reallocated.
  void bind_dense() {
    dense_ = {};
    grads_ = {};
    for (uint32_t j = 0; j < state_.params.weights.size(); ++j) {
      const uint64_t weight = layout_.dense_offset(TensorRole::kDenseWeight, j);
      const uint64_t bias = layout_.dense_offset(TensorRole::kDenseBias, j);
      if (bf16_activations()) dense_.weights16.push_back(d_dense16_.data() + weight);
      dense_.weights.push_back(d_dense_.data() + weight);
      grads_.weights.push_back(d_dense_grad_.data() + weight);
      dense_.biases.push_back(d_dense_.data() + bias);
      grads_.biases.push_back(d_dense_grad_.data() + bias);
    }
    const uint64_t head_weight = layout_.dense_offset(TensorRole::kHeadWeight);
    const uint64_t head_bias = layout_.dense_offset(TensorRole::kHeadBias);
    dense_.head_weight = d_dense_.data() + head_weight;
    grads_.head_weight = d_dense_grad_.data() + head_weight;
    dense_.head_bias = d_dense_.data() + head_bias;
    grads_.head_bias = d_dense_grad_.data() + head_bias;
  }

  const float* projection(const FeatureSide& side) const {
    return side.projection == kNone ? nullptr : d_dense_.data() + layout_[side.projection].dense_offset;
  }
  float* projection_grad(const FeatureSide& side) {
    return side.projection == kNone ? nullptr : d_dense_grad_.data() + layout_[side.projection].dense_offset;
  }
  const float* feature_table(const FeatureSide& side) const {
    return side.table == kNone ? nullptr : d_tables_[side.table].data();
  }
  // d_acts_[0] (and d_act_grads_[0]) hold the MLP halves: user at column 0, item at column e, stride 2e.
  float* mlp_rows(std::vector<cuda::DeviceBuffer<float>>& acts) { return acts.empty() ? nullptr : acts[0].data(); }

  // Adds each batch row's feature sum to its gathered id rows (gmf: [rows x f], null when f is 0).
  // f: the GMF columns of the side's rows (0 for the context table, which feeds the MLP only);
  // mlp_offset: which half of the MLP input the side feeds.
  void add_features(const FeatureSide& side, const cuda::DeviceBuffer<uint32_t>& ids, int64_t rows, float* gmf,
                    int64_t f, int64_t mlp_offset) {
    if (side.view.empty()) return;
    const int64_t e = state_.params.config.mlp_embedding();
    cuda::add_features(side.view, ids.data(), rows, feature_table(side), projection(side), f, e, gmf, f,
                       mlp_rows(d_acts_), 2 * e, mlp_offset, stream_.get());
  }

  // The projection's gradient into its slot of the flat dense gradient (overwritten each batch,
  // like the layers' gradients from neumf_backward).
  void numeric_gradient(const FeatureSide& side, const cuda::DeviceBuffer<uint32_t>& ids, int64_t rows,
                        const cuda::DeviceBuffer<float>& d_gmf, int64_t mlp_offset) {
    if (side.projection == kNone) return;
    const int64_t f = shape_.factors, e = state_.params.config.mlp_embedding();
    cuda::numeric_gradient(side.view, ids.data(), rows, d_gmf.data(), f, mlp_rows(d_act_grads_), 2 * e, mlp_offset, f, e,
                           d_numeric_partial_.data(), projection_grad(side), stream_.get());
  }

  // The feature table's touched rows: each batch row's representation gradient reaches every
  // feature row of its entity, scaled by the row's weight, summed per table row in batch-row order.
  // f and mlp_offset as for add_features (d_gmf: [rows x f], null when f is 0).
  void update_features(FeatureSide& side, const cuda::DeviceBuffer<uint32_t>& ids, int64_t rows,
                       const float* d_gmf, int64_t f, int64_t mlp_offset, const BatchStep& b) {
    if (side.table == kNone || options_.freeze_dense) return;  // update mode: frozen
    cuda::StreamHandle stream = stream_.get();
    const int64_t e = state_.params.config.mlp_embedding();
    side.groups->build(side.view, ids.data(), rows, stream);
    cuda::sum_feature_gradients(*side.groups, d_gmf, f, mlp_rows(d_act_grads_), 2 * e, mlp_offset, f, e,
                                d_feature_summed_.data(), stream);
    // MF: the rows' constant column has no gradient and so stays at zero (its L2 pull is zero too).
    // Rows past the batch's groups are workspace: zeroing their column too costs nothing.
    cuda::zero_column(d_feature_summed_.data(), side.groups->max_groups(), f + e, side.constant, stream);
    const size_t t = side.table;
    cuda::sparse_update(b.optimizer, b.step_size, d_tables_[t].data(), d_table_state0_[t].data(),
                        d_table_state1_[t].data(), f + e, side.groups->rows(), side.groups->num_groups(),
                        side.groups->max_groups(), d_feature_summed_.data(), RowL2{side.groups->starts(), b.scale},
                        loss_->halted(), stream, nullptr, step_);
  }

  cuda::SampleSpec sample_spec(uint32_t epoch) const {
    cuda::SampleSpec spec;
    spec.seed = options_.seed;
    spec.epoch = epoch;
    spec.negatives = options_.negatives;
    spec.bpr = bpr();
    return spec;
  }

  // The gathered rows' forward pass, loss (into the epoch totals, and the batch's sum into
  // d_batch_losses[batch] when given) and backward pass: the dense gradients and the rows'.
  void forward_and_backward(int64_t rows, uint32_t samples, uint64_t batch, double* d_batch_losses,
                            uint64_t batch_losses_size, float scale) {
    cuda::StreamHandle stream = stream_.get();
    batch_.rows = rows;
    cuda::neumf_forward(blas_, shape_, dense_, batch_, stream);
    if (bpr()) {
      cuda::bpr_loss_and_grad(d_logits_.data(), d_weights_.data(), rows, scale, d_dlogits_.data(),
                              d_row_loss_.data(), stream);
    } else {
      cuda::bce_loss_and_grad(d_logits_.data(), d_labels_.data(), d_weights_.data(), rows, scale,
                              d_dlogits_.data(), d_row_loss_.data(), stream);
    }
    loss_->add_batch(d_row_loss_.data(), bpr() ? rows / 2 : rows, samples, batch, d_batch_losses, batch_losses_size,
                     stream);
    cuda::neumf_backward(blas_, shape_, dense_, batch_, grads_, stream);
  }

  // One process: the batch's rows, filled on the device. Several ranks: this rank's rows (the
  // CPU's rank slice), their ids copied to the host, their id-table rows fetched from the owners
  // and uploaded.
  void fill_rows(const BatchStep& b) override {
    if (rank_step_) {
      fetch_slice(b.epoch, b.first, b.row_begin, b.row_end - b.row_begin);
      return;
    }
    cuda::fill_rows(sample_spec(b.epoch), positives_, d_order_.data(), b.first, b.samples, d_users_.data(),
                    d_items_.data(), d_labels_.data(), d_weights_.data(),
                    d_positives_.empty() ? nullptr : d_positives_.data(),
                    uses_impressions() ? d_impression_negatives_.data() : nullptr, loss_->halted(), stream_.get(),
                    step_);
  }

  // Each row's id-table rows (several ranks: this rank's rows, from the fetched rows by slot), plus
  // its metadata and context rows.
  void gather(const BatchStep& b) override {
    const int64_t rows = rank_step_ ? b.row_end - b.row_begin : b.rows;
    if (rows == 0) return;
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    if (device_shards_) {
      gather_fetched(rows);
    } else if (rank_step_) {
      gather_ids(d_fetched_gmf_[0].data(), d_fetched_gmf_[1].data(), d_fetched_mlp_[0].data(), d_fetched_mlp_[1].data(),
                 d_slots_[0], d_slots_[1], rows);
    } else {
      gather_ids(d_tables_[0].data(), d_tables_[1].data(), e > 0 ? d_tables_[2].data() : nullptr,
                 e > 0 ? d_tables_[3].data() : nullptr, d_users_, d_items_, rows);
    }
    add_features(user_side_, d_users_, rows, d_user_gmf_.data(), f, 0);
    add_features(item_side_, d_items_, rows, d_item_gmf_.data(), f, e);
    // Context: the interaction's situation joins the user's half of the MLP input, after the user's
    // metadata, as on the CPU.
    add_features(context_side_, d_positives_, rows, nullptr, 0, 0);
  }

  // The rows' GMF factors and MLP halves from the users' and items' tables (or fetched rows), by
  // the users' and items' row indices.
  void gather_ids(const float* user_gmf, const float* item_gmf, const float* user_mlp, const float* item_mlp,
                  const cuda::DeviceBuffer<uint32_t>& users, const cuda::DeviceBuffer<uint32_t>& items, int64_t rows) {
    cuda::StreamHandle stream = stream_.get();
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    if (f > 0) {
      cuda::gather_rows(user_gmf, f, users.data(), rows, d_user_gmf_.data(), f, 0, stream);
      cuda::gather_rows(item_gmf, f, items.data(), rows, d_item_gmf_.data(), f, 0, stream);
    }
    if (e > 0) {
      cuda::gather_rows(user_mlp, e, users.data(), rows, d_acts_[0].data(), 2 * e, 0, stream);
      cuda::gather_rows(item_mlp, e, items.data(), rows, d_acts_[0].data(), 2 * e, e, stream);
    }
  }

  // Device shards: the rows' GMF factors and MLP halves from the rows fetched onto the device, [ids
  // x (f + e)], by slot.
  void gather_fetched(int64_t rows) {
    cuda::StreamHandle stream = stream_.get();
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    const int64_t w = device_shards_->width();
    float* gmf[2] = {d_user_gmf_.data(), d_item_gmf_.data()};
    for (int side = 0; side < 2; ++side) {
      const float* fetched = device_shards_->rows(side);
      const uint32_t* slots = device_shards_->slots(side);
      if (f > 0) cuda::gather_columns(fetched, w, 0, f, slots, rows, gmf[side], f, 0, stream);
      if (e > 0) cuda::gather_columns(fetched, w, f, e, slots, rows, d_acts_[0].data(), 2 * e, side * e, stream);
    }
  }

  // One process: the loss stays on the device (nullopt). Several ranks: the slice's loss and its
  // rows' gradients come to the host, for the sum over ranks and the owners.
  std::optional<double> forward_backward(const BatchStep& b) override {
    if (rank_step_) return slice_forward_backward(b);
    forward_and_backward(b.rows, b.samples, b.index, nullptr, 0, b.scale);
    numeric_gradients(b.rows);
    return std::nullopt;
  }

  // The numeric projections' gradients of the rows' metadata (into the flat dense gradient).
  void numeric_gradients(int64_t rows) {
    numeric_gradient(user_side_, d_users_, rows, d_user_gmf_grad_, 0);
    numeric_gradient(item_side_, d_items_, rows, d_item_gmf_grad_, state_.params.config.mlp_embedding());
  }

  // Several ranks: this rank's rows' forward and backward pass; returns the batch's loss summed
  // over ranks.
  double slice_forward_backward(const BatchStep& b) {
    cuda::StreamHandle stream = stream_.get();
    const int64_t n = b.row_end - b.row_begin;
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    double loss = 0.0;
    if (n > 0) {
      forward_and_backward(n, static_cast<uint32_t>(bpr() ? n / 2 : n), 0, d_step_loss_.data(), 1, b.scale);
      numeric_gradients(n);
      cuda::copy_to_host(&loss, d_step_loss_.data(), sizeof(double), stream);
    } else {
      d_dense_grad_.zero(stream);  // no rows: this rank adds nothing to the sum
    }
    // The slice rows' gradients to the host, for their owners (device shards: for the shared
    // feature tables only): GMF rows, the MLP input.
    if (device_shards_ && !shares_features()) return rank_step_->sum_loss(loss);
    h_grads_[0].resize(n * f);
    h_grads_[1].resize(n * f);
    h_grads_[2].resize(n * 2 * e);
    cuda::copy_to_host(h_grads_[0].data(), d_user_gmf_grad_.data(), h_grads_[0].size() * sizeof(float), stream);
    cuda::copy_to_host(h_grads_[1].data(), d_item_gmf_grad_.data(), h_grads_[1].size() * sizeof(float), stream);
    if (e > 0) cuda::copy_to_host(h_grads_[2].data(), d_act_grads_[0].data(), h_grads_[2].size() * sizeof(float), stream);
    return rank_step_->sum_loss(loss);
  }

  // The dense update of the step (several ranks: of the gradients summed over ranks first).
  void update_dense(const BatchStep& b) override {
    cuda::StreamHandle stream = stream_.get();
    // MF's head stays at ones: no gradient, and dense parameters take no L2, so it never moves.
    if (state_.params.config.frozen_head()) {
      cuda::fill_zero(grads_.head_weight, state_.params.head_weight.values.size() * sizeof(float), stream);
      // The numeric projections' constant columns start at zero and so stay there.
      for (const FeatureSide* side : {&user_side_, &item_side_}) {
        if (side->projection != kNone)
          cuda::zero_column(projection_grad(*side), side->view.numeric, feature_width(), side->constant, stream);
      }
    }
    if (dense_comm_) {
      dense_comm_->allreduce_sum(d_dense_grad_.data(), d_dense_grad_.size(), stream);
      exchanged_bytes_ += d_dense_grad_.bytes();
    }
    if (options_.freeze_dense) return;  // update mode: the dense layers, head and projections keep theirs
    cuda::dense_update(dense_params(b.optimizer), b.step_size, d_dense_.data(), d_dense_state0_.data(),
                       d_dense_state1_.data(), d_dense_grad_.data(), static_cast<int64_t>(d_dense_.size()),
                       loss_->halted(), stream, step_);
    refresh_bf16_weights();
  }

  // The touched rows of every table (several ranks: the id tables' at their owners, on the hosts).
  void update_tables(const BatchStep& b) override {
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    if (device_shards_) {
      const float* mlp = e > 0 ? d_act_grads_[0].data() : nullptr;
      device_shards_->update(0, d_user_gmf_grad_.data(), mlp, 2 * e, 0, b.optimizer, b.step_size, b.scale);
      device_shards_->update(1, d_item_gmf_grad_.data(), mlp, 2 * e, e, b.optimizer, b.step_size, b.scale);
      exchanged_bytes_ += std::exchange(device_shards_->exchanged_bytes, 0);
      update_shared_features(b);
      return;
    }
    if (rank_step_) {
      const bool item_metadata = state_.params.config.item_features.enabled();
      rank_step_->update(h_grads_[0].data(), h_grads_[1].data(), e > 0 ? h_grads_[2].data() : nullptr, e,
                         b.optimizer, b.step_size, b.scale, item_metadata ? &data_.item_counts : nullptr);
      update_shared_features(b);
      return;
    }
    cuda::StreamHandle stream = stream_.get();
    const int64_t rows = b.rows;
    user_groups_->build(d_users_.data(), rows, stream);
    item_groups_->build(d_items_.data(), rows, stream);
    update_table(0, *user_groups_, d_user_gmf_grad_.data(), f, 0, f, b);
    update_table(1, *item_groups_, d_item_gmf_grad_.data(), f, 0, f, b);
    if (e > 0) {
      update_table(2, *user_groups_, d_act_grads_[0].data(), 2 * e, 0, e, b);
      update_table(3, *item_groups_, d_act_grads_[0].data(), 2 * e, e, e, b);
    }
    update_features(user_side_, d_users_, rows, d_user_gmf_grad_.data(), f, 0, b);
    update_features(item_side_, d_items_, rows, d_item_gmf_grad_.data(), f, e, b);
    // The context table's gradient is the user half's MLP input gradient of the rows it fed.
    update_features(context_side_, d_positives_, rows, nullptr, 0, 0, b);
  }

  // Id table t's touched rows. With item metadata, the id rows of items without positives stay
  // where zero_untrained_rows put them (their gradient as sampled negatives is dropped): a cold
  // item's score is its metadata's, as on the CPU. MF: the constant column stays at one. Fused
  // kernels: all of it in one grouped_update (dense updates: one dense_grouped_update).
  void update_table(size_t t, const cuda::RowGroups& groups, const float* grads, int64_t stride,
                    int64_t offset, int64_t width, const BatchStep& b) {
    if (width == 0) return;
    cuda::StreamHandle stream = stream_.get();
    const bool items = layout_[t].item_id_table();
    const TensorRole role = layout_[t].role;
    const cuda::DeviceBuffer<uint8_t>& trainable = d_trainable_[items ? 1 : 0];
    cuda::RowStepMasks masks;
    masks.trainable = trainable.empty() ? nullptr : trainable.data();
    masks.trained = items && !d_trained_items_.empty() ? d_trained_items_.data() : nullptr;
    masks.constant_column = role == TensorRole::kUserGmf || role == TensorRole::kItemGmf
                                ? state_.params.config.constant_column(role == TensorRole::kItemGmf)
                                : -1;
    const bool dense = options_.embedding_updates == EmbeddingUpdates::kDense;
    if (blas_.fused() && dense) {  // the touched rows' step and every other row's in one pass
      const int64_t table_rows = static_cast<int64_t>(layout_[t].shape[0]);
      if (d_row_groups_[t].size() != static_cast<size_t>(table_rows)) d_row_groups_[t].resize(table_rows);
      cuda::dense_grouped_update(b.optimizer, b.step_size, d_tables_[t].data(), d_table_state0_[t].data(),
                                 d_table_state1_[t].data(), table_rows, groups, grads, stride, offset, width, b.scale,
                                 masks, row_stamps(t), static_cast<uint32_t>(b.step), d_row_groups_[t].data(),
                                 loss_->halted(), stream, step_);
      return;
    }
    if (blas_.fused()) {
      cuda::grouped_update(b.optimizer, b.step_size, d_tables_[t].data(), d_table_state0_[t].data(),
                           d_table_state1_[t].data(), groups, grads, stride, offset, width, b.scale, masks,
                           loss_->halted(), stream, step_);
    } else {
      cuda::sum_row_gradients(groups, grads, stride, offset, width, d_summed_.data(), stream);
      if (masks.trained != nullptr) {
        cuda::drop_untrained_gradients(groups.rows(), groups.num_groups(), groups.max_groups(), masks.trained, width,
                                       d_summed_.data(), stream);
      }
      cuda::sparse_update(b.optimizer, b.step_size, d_tables_[t].data(), d_table_state0_[t].data(),
                          d_table_state1_[t].data(), width, groups.rows(), groups.num_groups(), groups.max_groups(),
                          d_summed_.data(), RowL2{groups.starts(), b.scale}, loss_->halted(), stream, masks.trainable,
                          step_);
    }
    if (dense) update_untouched(t, groups, width, masks.constant_column, b);
    if (masks.constant_column >= 0 && !blas_.fused()) {
      cuda::set_column(d_tables_[t].data(), width, groups.rows(), groups.num_groups(), groups.max_groups(),
                       masks.constant_column, 1.0f, stream);
    }
  }

  // Several ranks with metadata or context: every rank's slice of the batch rows (ids, positives,
  // the gradients of the GMF rows and the MLP input) is shared through the hosts
  // (RankStep::share_rows) and uploaded, and every rank updates its replica of the feature and
  // context tables from the whole batch, as the CPU backend does.
  void update_shared_features(const BatchStep& b) {
    if (!shares_features()) return;
    const int64_t f = shape_.factors;
    const int64_t e = state_.params.config.mlp_embedding();
    const int64_t n = b.row_end - b.row_begin;
    if (!context_side_.view.empty()) {
      h_positives_.resize(n);
      cuda::copy_to_host(h_positives_.data(), d_positives_.data(), n * sizeof(uint32_t), stream_.get());
    }
    share_rows(h_ids_[0].data(), 1, b, h_shared_ids_[0], d_users_.data());
    share_rows(h_ids_[1].data(), 1, b, h_shared_ids_[1], d_items_.data());
    if (!context_side_.view.empty()) share_rows(h_positives_.data(), 1, b, h_shared_ids_[2], d_positives_.data());
    share_rows(h_grads_[0].data(), f, b, h_shared_grads_[0], d_user_gmf_grad_.data());
    share_rows(h_grads_[1].data(), f, b, h_shared_grads_[1], d_item_gmf_grad_.data());
    if (e > 0) share_rows(h_grads_[2].data(), 2 * e, b, h_shared_grads_[2], d_act_grads_[0].data());
    const int64_t rows = b.rows;
    update_features(user_side_, d_users_, rows, d_user_gmf_grad_.data(), f, 0, b);
    update_features(item_side_, d_items_, rows, d_item_gmf_grad_.data(), f, e, b);
    update_features(context_side_, d_positives_, rows, nullptr, 0, 0, b);
  }

  // This rank's rows of a batch ([n x width], on the host) placed among the whole batch's
  // (`whole`), every other rank's filled in by the exchange, and the whole uploaded to `to`.
  template <class T>
  void share_rows(const T* slice, int64_t width, const BatchStep& b, std::vector<T>& whole, T* to) {
    if (width == 0) return;
    const int64_t n = b.row_end - b.row_begin;
    whole.resize(static_cast<size_t>(b.rows * width));
    std::copy(slice, slice + n * width, whole.begin() + b.row_begin * width);
    exchanged_bytes_ += rank_step_->share_rows(whole.data(), b.rows, width, sizeof(T), chunk_rows_);
    cuda::copy_to_device(to, whole.data(), whole.size() * sizeof(T), stream_.get());
  }

  // Several ranks: this rank's rows [begin, begin + n) of the batch, filled on the device, their
  // ids copied to the host, their id-table rows fetched from the owners and uploaded.
  void fetch_slice(uint32_t epoch, uint64_t first, int64_t begin, int64_t n) {
    cuda::StreamHandle stream = stream_.get();
    if (n > 0) {
      const uint64_t s0 = bpr() ? begin / 2 : begin;
      const uint32_t samples = static_cast<uint32_t>(bpr() ? n / 2 : n);
      cuda::fill_rows(sample_spec(epoch), positives_, d_order_.data(), first + s0, samples, d_users_.data(),
                      d_items_.data(), d_labels_.data(), d_weights_.data(),
                      d_positives_.empty() ? nullptr : d_positives_.data(),
                      uses_impressions() ? d_impression_negatives_.data() : nullptr, loss_->halted(), stream);
    }
    h_ids_[0].resize(n);
    h_ids_[1].resize(n);
    cuda::copy_to_host(h_ids_[0].data(), d_users_.data(), n * sizeof(uint32_t), stream);
    cuda::copy_to_host(h_ids_[1].data(), d_items_.data(), n * sizeof(uint32_t), stream);
    if (device_shards_) {
      device_shards_->fetch(h_ids_[0], h_ids_[1]);
      return;
    }
    rank_step_->fetch(h_ids_[0], h_ids_[1]);
    for (int side = 0; side < 2; ++side) {
      const std::vector<float>& gmf = rank_step_->gmf_rows(side);
      const std::vector<float>& mlp = rank_step_->mlp_rows(side);
      cuda::copy_to_device(d_slots_[side].data(), rank_step_->slots(side).data(), n * sizeof(uint32_t), stream);
      cuda::copy_to_device(d_fetched_gmf_[side].data(), gmf.data(), gmf.size() * sizeof(float), stream);
      cuda::copy_to_device(d_fetched_mlp_[side].data(), mlp.data(), mlp.size() * sizeof(float), stream);
    }
  }

  // Dense embedding updates: id table t's stamps (the step that last used each row), zeroed when
  // first needed after a state is uploaded.
  uint32_t* row_stamps(size_t t) {
    const int64_t table_rows = static_cast<int64_t>(layout_[t].shape[0]);
    if (d_row_stamps_[t].size() != static_cast<size_t>(table_rows)) {
      d_row_stamps_[t].resize(table_rows);
      cuda::fill_zero(d_row_stamps_[t].data(), table_rows * sizeof(uint32_t), stream_.get());
    }
    return d_row_stamps_[t].data();
  }

  // Dense embedding updates: the rows of id table t the step did not use take a zero-gradient step.
  void update_untouched(size_t t, const cuda::RowGroups& groups, int64_t width, int64_t constant, const BatchStep& b) {
    const int64_t table_rows = static_cast<int64_t>(layout_[t].shape[0]);
    cuda::untouched_update(b.optimizer, b.step_size, d_tables_[t].data(), d_table_state0_[t].data(),
                           d_table_state1_[t].data(), width, table_rows, groups.rows(), groups.num_groups(),
                           groups.max_groups(), row_stamps(t), static_cast<uint32_t>(b.step), constant,
                           loss_->halted(), stream_.get(), step_);
  }

  cuda::Stream stream_;
  cuda::Blas blas_;
  cuda::NeuMFShape shape_;
  cuda::DeviceBuffer<uint32_t> d_row_stamps_[4];  // dense embedding updates: the step that last used each row
  cuda::DeviceBuffer<uint32_t> d_row_groups_[4];  // and (fused kernels) each stamped row's group

  cuda::DeviceBuffer<uint32_t> d_user_, d_item_, d_order_;
  cuda::DeviceBuffer<float> d_weight_;
  cuda::DeviceBuffer<uint64_t> d_user_offsets_;
  cuda::DeviceBuffer<float> d_alias_probability_;
  cuda::DeviceBuffer<uint32_t> d_alias_index_;
  cuda::DeviceBuffer<uint64_t> d_impression_offsets_;
  cuda::DeviceBuffer<uint32_t> d_impression_items_;
  cuda::DeviceBuffer<unsigned long long> d_impression_negatives_;  // this epoch's, counted on the device
  cuda::PositivesView positives_;
  std::unique_ptr<cuda::Shuffler> shuffler_;

  cuda::DeviceBuffer<uint32_t> d_users_, d_items_;
  cuda::DeviceBuffer<float> d_labels_, d_weights_, d_logits_, d_dlogits_;
  cuda::DeviceBuffer<double> d_row_loss_;
  cuda::DeviceBuffer<float> d_user_gmf_, d_item_gmf_, d_gmf_, d_user_gmf_grad_, d_item_gmf_grad_;
  std::vector<cuda::DeviceBuffer<float>> d_acts_, d_act_grads_;
  std::vector<cuda::DeviceBuffer<cuda::Bf16>> d_acts16_, d_act_grads16_;  // bf16 activations (d_acts16_[0]: x0's copy)
  cuda::DeviceBuffer<float> d_partial_, d_summed_;
  cuda::BatchRows batch_;

  // The sparse tensors: the four id tables, the feature tables, then the context table.
  std::vector<cuda::DeviceBuffer<float>> d_tables_, d_table_state0_, d_table_state1_;
  cuda::DeviceBuffer<float> d_dense_, d_dense_state0_, d_dense_state1_, d_dense_grad_;
  cuda::DeviceBuffer<cuda::Bf16> d_dense16_;  // bf16 activations: the dense parameters' bf16 copy
  cuda::DenseParams dense_;
  cuda::DenseGrads grads_;

  std::unique_ptr<cuda::RowGroups> user_groups_, item_groups_;
  std::unique_ptr<cuda::LossAccumulator> loss_;

  FeatureSide user_side_, item_side_;
  FeatureSide context_side_;                // entities: the positives; the ids: d_positives_
  cuda::DeviceBuffer<uint32_t> d_positives_;  // with context: the positive each batch row came from
  cuda::DeviceBuffer<unsigned char> d_trained_items_;  // item metadata: 1 where the item has positives
  cuda::DeviceBuffer<uint8_t> d_trainable_[2];          // update mode: the users', the items' flags
  cuda::DeviceBuffer<float> d_feature_summed_, d_numeric_partial_;

  // Several ranks (sharded()): what sums the dense gradients, and the host staging of the rank
  // step's exchange (rank_step_).
  std::unique_ptr<DeviceCommunicator> dense_comm_;
  std::vector<uint32_t> h_ids_[2];                         // the slice's users, items
  std::vector<float> h_grads_[3];                          // their GMF rows' gradients, the MLP input's
  std::vector<uint32_t> h_positives_;                      // context: the slice rows' positives
  std::vector<uint32_t> h_shared_ids_[3];                  // metadata, context: the whole batch's users, items, positives
  std::vector<float> h_shared_grads_[3];                   // and its rows' gradients (as h_grads_)
  cuda::DeviceBuffer<uint32_t> d_slots_[2];                // per slice row: its fetched row
  cuda::DeviceBuffer<float> d_fetched_gmf_[2], d_fetched_mlp_[2];
  cuda::DeviceBuffer<double> d_step_loss_;                 // the slice's loss of the current step
  std::unique_ptr<DeviceIdShards> device_shards_;           // --rank-exchange device: the id rows on this GPU

  // cuda_graph (one process): the captured step and the scalars its first node writes.
  cuda::StepGraph graph_;
  cuda::DeviceBuffer<cuda::StepScalars> d_step_;
  const cuda::StepScalars* step_ = nullptr;  // while capturing: where the phases' kernels read their scalars
  bool graph_step_ = false;                  // this batch was a replay: update() has nothing left to do
  bool warmed_ = false;                      // a full batch ran since the state was uploaded
  uint64_t graph_steps_ = 0;                 // replays since take_graph_steps
};

}  // namespace

bool cuda_probe(std::string* reason) {
  try {
    return cuda::probe(reason);
  } catch (const std::exception& e) {
    if (reason) *reason = e.what();
    return false;
  }
}

std::unique_ptr<Backend> make_cuda_backend(const TrainingSet& data, const TrainOptions& options,
                                           TrainState state, std::unique_ptr<DeviceCommunicator> dense_comm) {
  return std::make_unique<CudaBackend>(data, options, std::move(state), std::move(dense_comm));
}

}  // namespace tastebud
