// The CUDA backend: a whole training epoch on the device, the twin of cpu_backend.cpp.
//
// Mapping to the CPU reference, step by step: the positives are uploaded once; per epoch the
// shuffle sorts positives by (Philox shuffle key, index) exactly as cpu::shuffle_order; each
// batch covers the same samples [first, first + batch_size), maps sample -> (positive, k) the same
// way and draws negative j of positive p as draw p * negatives + j through draw_negative; the loss
// is scaled by 1 / samples; the dense gradients of the whole batch are formed before the fused
// dense update; the embedding gradients are grouped by table row (stable radix sort of the row
// ids) and summed in batch-row order, then a lazy update touches those rows only, with the bias
// correction of the global step. What differs is only the float summation order inside GEMMs and
// column sums, so results match the CPU within rounding, not bit for bit.
//
// No host round trip per batch: the loss is reduced and accumulated on the device, a non-finite
// batch loss sets a device flag that turns the remaining updates of the epoch into no-ops (the
// CPU stops there), and the host reads the totals once at the end of the epoch.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cpu/sampler.h"
#include "cuda/common.h"
#include "cuda/embedding.h"
#include "cuda/loss.h"
#include "cuda/neumf.h"
#include "cuda/optimizer.h"
#include "cuda/sampler.h"
#include "tastebud/engine/backends.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

constexpr size_t kDenseAlign = 32;  // floats: keeps every dense tensor 128-byte aligned for cuBLAS
constexpr size_t kTables = ModelParams::kEmbeddingTables;

size_t align_up(size_t n) { return (n + kDenseAlign - 1) / kDenseAlign * kDenseAlign; }

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

class CudaBackend final : public Backend {
 public:
  CudaBackend(const TrainingSet& data, const TrainOptions& options, TrainState state)
      : data_(data), options_(options), host_(std::move(state)), blas_(stream_.get(), options.tf32) {
    const ModelConfig& config = host_.params.config;
    TB_CHECK(config.num_users == data.num_users && config.num_items == data.num_items,
             "the model's user and item counts do not match the training data");
    TB_CHECK(data.size() > 0, "the training set has no positives");
    TB_CHECK(!config.has_metadata(), "the CUDA backend does not train metadata features yet");
    TB_CHECK(data.size() < (1ull << 31), "the CUDA backend trains on at most 2^31 - 1 positives");
    TB_CHECK(options.batch_size > 0, "--batch-size must be positive");
    TB_CHECK(options.negatives > 0 || options.loss == LossKind::kBce,
             "BPR needs at least one negative per positive");
    shape_ = config.neumf_shape();
    max_rows_ = bpr() ? 2 * static_cast<int64_t>(options.batch_size) : options.batch_size;
    TB_CHECK(max_rows_ < (1ll << 31), "--batch-size is too large for the CUDA backend");
    check_fits();
    upload_data();
    allocate();
    load_state(host_);
  }

  std::string name() const override { return "cuda"; }

  uint64_t samples_per_epoch() const override {
    const uint64_t p = data_.size();
    return bpr() ? p * options_.negatives : p * (1 + options_.negatives);
  }

  EpochStats train_epoch(uint32_t epoch, const ProgressFn& progress) override {
    const auto start_time = std::chrono::steady_clock::now();
    cuda::StreamHandle stream = stream_.get();
    loss_->reset(stream);
    shuffler_->run(options_.seed, epoch, d_order_.data(), stream);
    const uint64_t total = samples_per_epoch();
    const uint64_t step0 = host_.step;
    uint64_t batch = 0;
    for (uint64_t first = 0; first < total; first += options_.batch_size, ++batch) {
      const uint32_t samples = static_cast<uint32_t>(std::min<uint64_t>(options_.batch_size, total - first));
      train_batch(epoch, first, samples, batch, step0 + batch + 1);
    }
    const cuda::EpochTotals totals = loss_->read(stream);
    host_.step = step0 + totals.batches;
    EpochStats stats;
    stats.samples = totals.samples;
    stats.finite = totals.halted == 0;
    stats.mean_loss = stats.samples > 0 ? totals.loss / static_cast<double>(stats.samples) : 0.0;
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
    if (progress) progress(stats.samples, total, stats.mean_loss);
    return stats;
  }

  TrainState state() override {
    auto tensors = host_.params.tensors();
    for (size_t t = 0; t < kTables; ++t) {
      download(d_tables_[t], tensors[t]->values);
      download(d_table_state0_[t], host_.state0[t].values);
      download(d_table_state1_[t], host_.state1[t].values);
    }
    const std::vector<float> dense = d_dense_.download(stream_.get());
    const std::vector<float> dense0 = d_dense_state0_.download(stream_.get());
    const std::vector<float> dense1 = d_dense_state1_.download(stream_.get());
    for (size_t t = kTables; t < tensors.size(); ++t) {
      const size_t offset = dense_offsets_[t - kTables];
      auto copy = [&](const std::vector<float>& from, std::vector<float>& to) {
        std::copy(from.begin() + offset, from.begin() + offset + to.size(), to.begin());
      };
      copy(dense, tensors[t]->values);
      copy(dense0, host_.state0[t].values);
      copy(dense1, host_.state1[t].values);
    }
    return host_;
  }

  void load_state(const TrainState& state) override {
    TB_CHECK(state.params.config.num_users == host_.params.config.num_users &&
                 state.params.config.num_items == host_.params.config.num_items,
             "checkpoint does not match the model's shape");
    if (&state != &host_) host_ = state;
    auto tensors = host_.params.tensors();
    TB_CHECK(host_.state0.size() == tensors.size() && host_.state1.size() == tensors.size(),
             "the training state has no optimizer state for every tensor");
    cuda::StreamHandle stream = stream_.get();
    for (size_t t = 0; t < kTables; ++t) {
      d_tables_[t].upload(tensors[t]->values, stream);
      d_table_state0_[t].upload(host_.state0[t].values, stream);
      d_table_state1_[t].upload(host_.state1[t].values, stream);
    }
    std::vector<float> dense(dense_offsets_.back(), 0.0f), dense0(dense.size(), 0.0f), dense1(dense.size(), 0.0f);
    for (size_t t = kTables; t < tensors.size(); ++t) {
      const size_t offset = dense_offsets_[t - kTables];
      TB_CHECK(host_.state0[t].values.size() == tensors[t]->values.size() &&
                   host_.state1[t].values.size() == tensors[t]->values.size(),
               "optimizer state of " + tensors[t]->name + " has the wrong size");
      std::copy(tensors[t]->values.begin(), tensors[t]->values.end(), dense.begin() + offset);
      std::copy(host_.state0[t].values.begin(), host_.state0[t].values.end(), dense0.begin() + offset);
      std::copy(host_.state1[t].values.begin(), host_.state1[t].values.end(), dense1.begin() + offset);
    }
    d_dense_.upload(dense, stream);
    d_dense_state0_.upload(dense0, stream);
    d_dense_state1_.upload(dense1, stream);
    bind_dense();
  }

 private:
  bool bpr() const { return options_.loss == LossKind::kBpr; }

  void download(const cuda::DeviceBuffer<float>& from, std::vector<float>& to) {
    TB_CHECK(from.size() == to.size(), "device and host tensors differ in size");
    cuda::copy_to_host(to.data(), from.data(), from.bytes(), stream_.get());
  }

  int64_t widest_table() const {
    return std::max<int64_t>({shape_.factors, static_cast<int64_t>(host_.params.config.mlp_embedding()), 1});
  }

  // Device bytes this job needs, counted from the buffers allocate() and upload_data() make, plus
  // cub's scratch and cuBLAS's workspace as a margin.
  double bytes_needed() const {
    const double p = static_cast<double>(data_.size()), rows = static_cast<double>(max_rows_);
    double params = 0;
    for (const Tensor* t : host_.params.tensors()) params += static_cast<double>(align_up(t->values.size()));
    double bytes = 4.0 * params * 4.0;                                // values, two states, gradients
    bytes += p * (4 + 4 + 4 + 4) + 8.0 * (data_.num_users + 1.0);     // positives and the order
    bytes += p * (8 + 8 + 4) * 1.25;                                  // shuffle keys, index, sort scratch
    if (options_.sampler == SamplerKind::kPopularity) bytes += 8.0 * data_.num_items;
    double width = 5.0 * shape_.factors;                               // user, item, gmf, their grads
    for (int64_t w : shape_.layers) width += 2.0 * w;                  // activations and their grads
    bytes += rows * (4 * 4 + 4 * 2 + 8 + 4 * width);                    // ids, labels, weights, logits, loss
    bytes += 2.0 * rows * 4 * 7 * 1.25;                                // two RowGroups with sort scratch
    bytes += rows * 4.0 * widest_table();                               // summed row gradients
    bytes += 4.0 * cuda::neumf_partials(shape_, max_rows_);
    return bytes + 512.0 * 1024 * 1024;                                 // cuBLAS workspace, context
  }

  void check_fits() const {
    cuda::DeviceInfo info;
    std::string reason;
    if (!cuda::probe(&reason, &info)) throw Error("--device cuda: " + reason);
    const double needed = bytes_needed();
    if (needed > static_cast<double>(info.free_bytes)) {
      throw Error(fmt::format(
          "--device cuda: the model, the training data and a batch of {} need about {:.2f} GiB of "
          "device memory, but only {:.2f} GiB of {:.2f} GiB are free on {}; lower --batch-size, "
          "shrink the model or use --device cpu",
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
    if (options_.sampler == SamplerKind::kPopularity) {
      std::vector<double> weights(data_.num_items);
      for (uint32_t i = 0; i < data_.num_items; ++i) {
        weights[i] = std::pow(static_cast<double>(data_.item_counts[i]), options_.sampler_alpha);
      }
      // The CPU's table, uploaded: both backends then pick the same column and coin.
      const cpu::AliasTable alias = cpu::AliasTable::build(weights);
      d_alias_probability_.upload(alias.probability, stream);
      d_alias_index_.upload(alias.alias, stream);
      positives_.alias_probability = d_alias_probability_.data();
      positives_.alias_index = d_alias_index_.data();
    }
    d_order_.resize(data_.size());
    shuffler_ = std::make_unique<cuda::Shuffler>(data_.size());
  }

  void allocate() {
    const ModelConfig& config = host_.params.config;
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
    d_d_user_gmf_.resize(rows * f);
    d_d_item_gmf_.resize(rows * f);
    const size_t widths = config.has_mlp() ? config.layers.size() : 0;
    acts_.clear();
    d_acts_.clear();
    for (size_t j = 0; j < widths; ++j) {
      acts_.emplace_back(rows * config.layers[j]);
      d_acts_.emplace_back(rows * config.layers[j]);
    }
    d_partial_.resize(static_cast<size_t>(cuda::neumf_partials(shape_, max_rows_)));
    d_summed_.resize(rows * static_cast<size_t>(widest_table()));
    user_groups_ = std::make_unique<cuda::RowGroups>(max_rows_, data_.num_users);
    item_groups_ = std::make_unique<cuda::RowGroups>(max_rows_, data_.num_items);
    loss_ = std::make_unique<cuda::LossAccumulator>(max_rows_);

    for (size_t t = 0; t < kTables; ++t) {
      d_tables_[t] = {};
      d_table_state0_[t] = {};
      d_table_state1_[t] = {};
    }
    dense_offsets_.clear();
    size_t offset = 0;
    auto tensors = host_.params.tensors();
    for (size_t t = kTables; t < tensors.size(); ++t) {
      dense_offsets_.push_back(offset);
      offset += align_up(tensors[t]->values.size());
    }
    dense_offsets_.push_back(offset);
    d_dense_grad_.resize(offset);
    d_dense_grad_.zero(stream_.get());  // the alignment gaps stay zero, so their updates are no-ops

    batch_.user_gmf = d_user_gmf_.data();
    batch_.item_gmf = d_item_gmf_.data();
    batch_.gmf = d_gmf_.data();
    batch_.d_user_gmf = d_d_user_gmf_.data();
    batch_.d_item_gmf = d_d_item_gmf_.data();
    batch_.logits = d_logits_.data();
    batch_.dlogits = d_dlogits_.data();
    batch_.partial = d_partial_.data();
    batch_.acts.clear();
    batch_.d_acts.clear();
    for (size_t j = 0; j < widths; ++j) {
      batch_.acts.push_back(acts_[j].data());
      batch_.d_acts.push_back(d_acts_[j].data());
    }
  }

  // Points dense_ and grads_ into the flat dense buffers; again whenever they are reallocated.
  void bind_dense() {
    dense_ = {};
    grads_ = {};
    size_t k = 0;
    for (size_t j = 0; j < host_.params.weights.size(); ++j) {
      dense_.weights.push_back(d_dense_.data() + dense_offsets_[k]);
      grads_.weights.push_back(d_dense_grad_.data() + dense_offsets_[k++]);
      dense_.biases.push_back(d_dense_.data() + dense_offsets_[k]);
      grads_.biases.push_back(d_dense_grad_.data() + dense_offsets_[k++]);
    }
    dense_.head_weight = d_dense_.data() + dense_offsets_[k];
    grads_.head_weight = d_dense_grad_.data() + dense_offsets_[k++];
    dense_.head_bias = d_dense_.data() + dense_offsets_[k];
    grads_.head_bias = d_dense_grad_.data() + dense_offsets_[k++];
  }

  void train_batch(uint32_t epoch, uint64_t first, uint32_t samples, uint64_t batch, uint64_t step) {
    cuda::StreamHandle stream = stream_.get();
    cuda::SampleSpec spec;
    spec.seed = options_.seed;
    spec.epoch = epoch;
    spec.negatives = options_.negatives;
    spec.bpr = bpr();
    cuda::fill_rows(spec, positives_, d_order_.data(), first, samples, d_users_.data(), d_items_.data(),
                    d_labels_.data(), d_weights_.data(), stream);
    const int64_t rows = bpr() ? 2 * static_cast<int64_t>(samples) : samples;
    const int64_t f = shape_.factors;
    const int64_t e = host_.params.config.mlp_embedding();
    if (f > 0) {
      cuda::gather_rows(d_tables_[0].data(), f, d_users_.data(), rows, d_user_gmf_.data(), f, 0, stream);
      cuda::gather_rows(d_tables_[1].data(), f, d_items_.data(), rows, d_item_gmf_.data(), f, 0, stream);
    }
    if (e > 0) {
      cuda::gather_rows(d_tables_[2].data(), e, d_users_.data(), rows, acts_[0].data(), 2 * e, 0, stream);
      cuda::gather_rows(d_tables_[3].data(), e, d_items_.data(), rows, acts_[0].data(), 2 * e, e, stream);
    }
    batch_.rows = rows;
    cuda::neumf_forward(blas_, shape_, dense_, batch_, stream);
    const float scale = 1.0f / static_cast<float>(samples);
    if (bpr()) {
      cuda::bpr_loss_and_grad(d_logits_.data(), d_weights_.data(), rows, scale, d_dlogits_.data(),
                              d_row_loss_.data(), stream);
    } else {
      cuda::bce_loss_and_grad(d_logits_.data(), d_labels_.data(), d_weights_.data(), rows, scale,
                              d_dlogits_.data(), d_row_loss_.data(), stream);
    }
    loss_->add_batch(d_row_loss_.data(), bpr() ? rows / 2 : rows, samples, batch, nullptr, 0, stream);
    cuda::neumf_backward(blas_, shape_, dense_, batch_, grads_, stream);

    const OptimizerParams& opt = options_.optimizer;
    const float step_size = opt.kind == OptimizerKind::kAdam ? adam_step_size(opt, step) : opt.lr;
    const int* halted = loss_->halted();
    cuda::dense_update(opt, step_size, d_dense_.data(), d_dense_state0_.data(), d_dense_state1_.data(),
                       d_dense_grad_.data(), static_cast<int64_t>(d_dense_.size()), halted, stream);

    user_groups_->build(d_users_.data(), rows, stream);
    item_groups_->build(d_items_.data(), rows, stream);
    update_table(0, *user_groups_, d_d_user_gmf_.data(), f, 0, f, step_size);
    update_table(1, *item_groups_, d_d_item_gmf_.data(), f, 0, f, step_size);
    if (e > 0) {
      update_table(2, *user_groups_, d_acts_[0].data(), 2 * e, 0, e, step_size);
      update_table(3, *item_groups_, d_acts_[0].data(), 2 * e, e, e, step_size);
    }
  }

  void update_table(size_t t, const cuda::RowGroups& groups, const float* grads, int64_t stride,
                    int64_t offset, int64_t width, float step_size) {
    if (width == 0) return;
    cuda::StreamHandle stream = stream_.get();
    cuda::sum_row_gradients(groups, grads, stride, offset, width, d_summed_.data(), stream);
    cuda::sparse_update(options_.optimizer, step_size, d_tables_[t].data(), d_table_state0_[t].data(),
                        d_table_state1_[t].data(), width, groups.rows(), groups.num_groups(),
                        groups.max_groups(), d_summed_.data(), loss_->halted(), stream);
  }

  const TrainingSet& data_;
  TrainOptions options_;
  TrainState host_;  // shapes and names; values are current after state()
  cuda::Stream stream_;
  cuda::Blas blas_;
  cuda::NeuMFShape shape_;
  int64_t max_rows_ = 0;

  cuda::DeviceBuffer<uint32_t> d_user_, d_item_, d_order_;
  cuda::DeviceBuffer<float> d_weight_;
  cuda::DeviceBuffer<uint64_t> d_user_offsets_;
  cuda::DeviceBuffer<float> d_alias_probability_;
  cuda::DeviceBuffer<uint32_t> d_alias_index_;
  cuda::PositivesView positives_;
  std::unique_ptr<cuda::Shuffler> shuffler_;

  cuda::DeviceBuffer<uint32_t> d_users_, d_items_;
  cuda::DeviceBuffer<float> d_labels_, d_weights_, d_logits_, d_dlogits_;
  cuda::DeviceBuffer<double> d_row_loss_;
  cuda::DeviceBuffer<float> d_user_gmf_, d_item_gmf_, d_gmf_, d_d_user_gmf_, d_d_item_gmf_;
  std::vector<cuda::DeviceBuffer<float>> acts_, d_acts_;
  cuda::DeviceBuffer<float> d_partial_, d_summed_;
  cuda::BatchRows batch_;

  cuda::DeviceBuffer<float> d_tables_[kTables], d_table_state0_[kTables], d_table_state1_[kTables];
  cuda::DeviceBuffer<float> d_dense_, d_dense_state0_, d_dense_state1_, d_dense_grad_;
  std::vector<size_t> dense_offsets_;
  cuda::DenseParams dense_;
  cuda::DenseGrads grads_;

  std::unique_ptr<cuda::RowGroups> user_groups_, item_groups_;
  std::unique_ptr<cuda::LossAccumulator> loss_;
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
                                           TrainState state) {
  return std::make_unique<CudaBackend>(data, options, std::move(state));
}

}  // namespace tastebud
