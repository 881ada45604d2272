// The sequence model's CUDA trainer, the twin of sequence_trainer_cpu.cpp: the batch the CPU would
// train (SequenceTrainerBase::fill: the same sequences, negatives and dropout keys) packed into
// one pass on the GPU over the ops of kernels/cuda/sequence.h and dense.h, the sampled loss summed
// on the host in position order, Adam on the dense range and on the item rows the batch touched.
// Item metadata as on the CPU: each batch reads E plus each item's feature sum, and the F and N
// rows learn from the items' gradients. Every reduction has a fixed order, so a run repeats bit
// for bit on the same device; the sums differ from the CPU's chunked ones by rounding only
// (SequenceTrainerCuda.TracksTheCpuTrainer).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include <fmt/format.h>

#include "cuda/common.h"
#include "cuda/dense.h"
#include "cuda/embedding.h"
#include "cuda/features.h"
#include "cuda/optimizer.h"
#include "cuda/sequence.h"
#include "sequence_trainer_base.h"
#include "tastebud/error.h"

namespace tastebud {

namespace {

// Grows a device buffer to at least n elements (contents discarded when it grows).
template <class T>
void grow(cuda::DeviceBuffer<T>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
}

template <class T>
void put(cuda::DeviceBuffer<T>& buffer, const std::vector<T>& host, cuda::StreamHandle stream) {
  grow(buffer, host.size());
  cuda::copy_to_device(buffer.data(), host.data(), host.size() * sizeof(T), stream);
}

// One block's activations, [rows x d] each unless said.
struct DeviceBlock {
  cuda::DeviceBuffer<float> a1, q, k, v, probs, att, x1, a2, f1, mean1, rstd1, mean2, rstd2;
  cuda::DeviceBuffer<uint8_t> mask_o, mask_f;
};

class CudaSequenceTrainer final : public SequenceTrainerBase {
 public:
  CudaSequenceTrainer(const SequenceSet& data, const SequenceTrainOptions& options, SequenceState state)
      : SequenceTrainerBase(data, options, std::move(state)), blas_(stream_.get(), cuda::GemmPrecision::kFp32), blocks_(config().blocks),
        xs_(config().blocks + 1) {
    cuda::StreamHandle stream = stream_.get();
    w_.upload(std::span<const float>(state_.params.values), stream);
    m_.upload(std::span<const float>(state_.m), stream);
    v_.upload(std::span<const float>(state_.v), stream);
    grad_dense_.resize(layout_.dense_size());
    item_grad_.resize(size_t{config().num_items} * config().hidden);
    item_grad_.zero(stream);
    frozen_flags_.upload(std::span<const uint8_t>(frozen_), stream);
    if (config().has_features()) start_features();
  }

  const SequenceState& state() override {
    cuda::StreamHandle stream = stream_.get();
    cuda::copy_to_host(state_.params.values.data(), w_.data(), w_.bytes(), stream);
    cuda::copy_to_host(state_.m.data(), m_.data(), m_.bytes(), stream);
    cuda::copy_to_host(state_.v.data(), v_.data(), v_.bytes(), stream);
    stream_.synchronize();
    return state_;
  }

 private:
  bool train_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end,
                   double& loss) override;
  void upload_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end);
  void forward();
  void block_forward(size_t b);
  bool loss_of(uint64_t first, uint64_t end, std::span<const uint64_t> order, double& sum);
  void backward();
  void block_backward(size_t b);
  void update();
  void dense_forward(const float* in, size_t weight, size_t bias, bool relu, float* out) {
    cuda::dense_forward(blas_, in, rows_, d(), P(weight), P(bias), d(), relu, out);
  }
  void dense_backward(const float* in, const float* out, float* d_out, size_t weight, size_t bias, bool relu,
                      float* d_in) {
    cuda::dense_backward(blas_, in, out, d_out, rows_, d(), P(weight), d(), relu, G(weight), G(bias), d_in,
                         partial_.data(), stream_.get());
  }
  void layer_norm_backward(const float* dy, const float* x, size_t gamma, size_t beta, const float* mean,
                           const float* rstd, float* dx) {
    cuda::layer_norm_backward(dy, x, P(gamma), mean, rstd, rows_, d(), dx, G(gamma), G(beta), partial_.data(),
                              stream_.get());
  }
  void dropout(float* x, cuda::DeviceBuffer<uint8_t>& mask, uint32_t site) {
    if (dropout_site_.rate <= 0.0f) return;
    cuda::DropoutSite s = dropout_site_;
    s.site = site;
    cuda::dropout_forward(x, mask.data(), starts_.data(), dropout_id_.data(), position_.data(),
                          static_cast<int64_t>(seqs_.count()), rows_, d(), s, stream_.get());
  }
  void undo_dropout(float* dx, const cuda::DeviceBuffer<uint8_t>& mask) {
    if (dropout_site_.rate > 0.0f) cuda::dropout_backward(dx, mask.data(), rows_ * d(), dropout_site_.rate, stream_.get());
  }
  void resize();
  void start_features();
  void add_item_features();
  void update_features(const OptimizerParams& p, float step);
  // The rows the input and the loss read: E, or E plus each item's features.
  const float* item_rows() const { return effective_.empty() ? P(layout_.items) : effective_.data(); }

  int64_t d() const { return config().hidden; }
  const float* P(size_t offset) const { return w_.data() + offset; }
  float* G(size_t offset) { return grad_dense_.data() + (offset - layout_.dense_begin()); }

  cuda::Stream stream_;
  cuda::Blas blas_;
  // The parameters and Adam's moments (SequenceLayout's flat vector), the dense range's gradient
  // and the item rows' (every row; the rows a batch touched are zeroed again by their update).
  cuda::DeviceBuffer<float> w_, m_, v_, grad_dense_, item_grad_;
  // The batch as fill() made it: per row its item and position, per sequence its start, its
  // attention weights' offset and dropout id, per slot its item, per position its weight.
  PackedSequences seqs_;
  std::vector<uint32_t> slot_items_;
  std::vector<float> weight_;
  std::vector<int64_t> prob_offsets_;
  int64_t rows_ = 0;
  cuda::DeviceBuffer<uint32_t> input_, position_, slot_ids_, touched_ids_;
  cuda::DeviceBuffer<int64_t> starts_, d_prob_offsets_;
  cuda::DeviceBuffer<uint64_t> dropout_id_;
  cuda::DeviceBuffer<float> d_weight_, ones_;
  cuda::DropoutSite dropout_site_;
  // Activations and workspaces.
  std::vector<DeviceBlock> blocks_;
  std::vector<cuda::DeviceBuffer<float>> xs_;  // each block's input, then the last block's output
  cuda::DeviceBuffer<uint8_t> mask_in_;
  cuda::DeviceBuffer<float> h_, mean_f_, rstd_f_, tmp_, d_tmp_, d_tmp2_, d_f1_, dx_, d_q_, d_k_, d_v_, d_att_, dscores_;
  cuda::DeviceBuffer<float> coef_, dh_, d_input_, partial_;
  cuda::DeviceBuffer<double> position_loss_;
  std::vector<double> h_position_loss_;
  // Row groups: the batch's slots by item, its input rows by item and by position, and the items
  // it touched (sized for the largest batch so far).
  std::unique_ptr<cuda::RowGroups> slot_groups_, input_groups_, position_groups_, touched_groups_;
  int64_t groups_rows_ = 0;
  // Item metadata (start_features): the items' metadata on the device, every item's id once (the
  // rows of add_features and of the feature groups, built once), the items' rows with their
  // features, the F rows' gradient (grouped sums placed in a whole table), N's gradient, the F rows
  // a lazy step leaves (unreached, set to 1 each batch), the items no sequence
  // holds (their E rows stay at zero).
  cuda::DeviceBuffer<uint64_t> f_offsets_;
  cuda::DeviceBuffer<uint32_t> f_rows_, all_items_;
  cuda::DeviceBuffer<float> f_weights_, f_values_, effective_, feature_sum_, feature_grad_, numeric_grad_,
      numeric_partial_;
  cuda::DeviceBuffer<uint8_t> unreached_, frozen_flags_;
  cuda::FeatureView view_;
  std::unique_ptr<cuda::FeatureGroups> feature_groups_;
};

void CudaSequenceTrainer::start_features() {
  cuda::StreamHandle stream = stream_.get();
  const FeatureView& f = data_.item_features;
  const uint32_t n = config().num_items, rows = config().feature_rows, numeric = config().numeric;
  const size_t d = config().hidden;
  view_.numeric = numeric;
  if (f.offsets != nullptr) {
    f_offsets_.upload(std::span<const uint64_t>(f.offsets, size_t{n} + 1), stream);
    f_rows_.upload(std::span<const uint32_t>(f.rows, f.offsets[n]), stream);
    f_weights_.upload(std::span<const float>(f.weights, f.offsets[n]), stream);
    view_.offsets = f_offsets_.data();
    view_.rows = f_rows_.data();
    view_.weights = f_weights_.data();
  }
  if (numeric > 0) {
    f_values_.upload(std::span<const float>(f.values, size_t{n} * numeric), stream);
    view_.values = f_values_.data();
    numeric_grad_.resize(numeric * d);
    numeric_partial_.resize(static_cast<size_t>(cuda::numeric_gradient_partials(n, numeric, static_cast<int64_t>(d))));
  }
  std::vector<uint32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0u);
  all_items_.upload(std::span<const uint32_t>(ids), stream);
  effective_.resize(size_t{n} * d);
  if (rows == 0) return stream_.synchronize();
  uint32_t most = 1;
  for (uint32_t i = 0; i < n; ++i) most = std::max<uint32_t>(most, static_cast<uint32_t>(f.offsets[i + 1] - f.offsets[i]));
  feature_groups_ = std::make_unique<cuda::FeatureGroups>(n, rows, most);
  feature_groups_->build(view_, all_items_.data(), n, stream);
  feature_sum_.resize(static_cast<size_t>(feature_groups_->max_groups()) * d);
  feature_grad_.resize(size_t{rows} * d);
  feature_grad_.zero(stream);
  unreached_.resize(rows);
  stream_.synchronize();  // the host vectors above go out of scope
}

// The items' rows the batch reads: E plus each item's feature sum (item_representations' order).
void CudaSequenceTrainer::add_item_features() {
  cuda::StreamHandle stream = stream_.get();
  const int64_t n = config().num_items;
  cuda::copy_device(effective_.data(), P(layout_.items), effective_.bytes(), stream);
  cuda::add_features(view_, all_items_.data(), n, config().feature_rows > 0 ? P(layout_.features) : nullptr,
                     config().numeric > 0 ? P(layout_.numeric) : nullptr, d(), 0, effective_.data(), d(), nullptr, 0,
                     0, stream);
}

// The F rows' gradient is the items' (item_grad, zero where untouched) summed per row in item
// order, N's likewise; Adam on the F rows the touched items reached (dense item updates: every
// row) and on every N row, as the CPU trainer's update_features.
void CudaSequenceTrainer::update_features(const OptimizerParams& p, float step) {
  cuda::StreamHandle stream = stream_.get();
  const int64_t n = config().num_items;
  if (config().feature_rows > 0) {
    const size_t f = layout_.features;
    cuda::sum_feature_gradients(*feature_groups_, item_grad_.data(), d(), nullptr, 0, 0, d(), 0, feature_sum_.data(),
                                stream);
    cuda::place_group_sums(feature_sum_.data(), feature_groups_->rows(), feature_groups_->num_groups(),
                           feature_groups_->max_groups(), d(), feature_grad_.data(), stream);
    const bool lazy = options_.embedding_updates != EmbeddingUpdates::kDense;
    if (lazy) {
      cuda::fill_bytes(unreached_.data(), 1, unreached_.bytes(), stream);
      cuda::mark_feature_rows(view_, touched_groups_->rows(), touched_groups_->num_groups(),
                              touched_groups_->max_groups(), unreached_.data(), stream);
    }
    cuda::item_rows_update(p, step, w_.data() + f, m_.data() + f, v_.data() + f, feature_grad_.data(), d(), nullptr,
                           nullptr, config().feature_rows, lazy ? unreached_.data() : nullptr, stream);
  }
  if (config().numeric > 0) {
    const size_t at = layout_.numeric;
    cuda::numeric_gradient(view_, all_items_.data(), n, item_grad_.data(), d(), nullptr, 0, 0, d(), 0,
                           numeric_partial_.data(), numeric_grad_.data(), stream);
    cuda::dense_update(p, step, w_.data() + at, m_.data() + at, v_.data() + at, numeric_grad_.data(),
                       static_cast<int64_t>(numeric_grad_.size()), nullptr, stream);
  }
}

void CudaSequenceTrainer::upload_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end) {
  seqs_.clear();
  slot_items_.clear();
  weight_.clear();
  fill(epoch, order, first, end, seqs_, slot_items_, weight_);
  rows_ = seqs_.rows();
  seqs_.attention_offsets(config().heads, prob_offsets_);
  resize();
  cuda::StreamHandle stream = stream_.get();
  put(input_, seqs_.input, stream);
  put(position_, seqs_.position, stream);
  put(starts_, seqs_.starts, stream);
  put(d_prob_offsets_, prob_offsets_, stream);
  put(dropout_id_, seqs_.dropout_id, stream);
  put(slot_ids_, slot_items_, stream);
  put(d_weight_, weight_, stream);
  std::vector<uint32_t> touched(slot_items_);
  touched.insert(touched.end(), seqs_.input.begin(), seqs_.input.end());
  put(touched_ids_, touched, stream);
  dropout_site_ = cuda::DropoutSite{options_.seed, epoch, config().dropout, dropout_sites(config()), 0,
                                    config().max_sequence};
}

// Every buffer grown to the batch (none shrinks, so steady batches allocate nothing).
void CudaSequenceTrainer::resize() {
  const size_t n = static_cast<size_t>(rows_ * d()), rows = static_cast<size_t>(rows_);
  const size_t probs = static_cast<size_t>(prob_offsets_.back()), slots = options_.negatives + 1;
  for (auto& x : xs_) grow(x, n);
  for (DeviceBlock& a : blocks_) {
    for (auto* v : {&a.a1, &a.q, &a.k, &a.v, &a.att, &a.x1, &a.a2, &a.f1}) grow(*v, n);
    for (auto* v : {&a.mean1, &a.rstd1, &a.mean2, &a.rstd2}) grow(*v, rows);
    grow(a.probs, probs);
    grow(a.mask_o, n);
    grow(a.mask_f, n);
  }
  grow(mask_in_, n);
  for (auto* v : {&h_, &tmp_, &d_tmp_, &d_tmp2_, &d_f1_, &dx_, &d_q_, &d_k_, &d_v_, &d_att_, &dh_, &d_input_}) grow(*v, n);
  grow(dscores_, probs);
  grow(mean_f_, rows);
  grow(rstd_f_, rows);
  grow(coef_, rows * slots);
  grow(position_loss_, rows);
  grow(partial_, static_cast<size_t>(std::max(cuda::column_sum_partials(rows_, d()), cuda::layer_norm_partials(rows_, d()))));
  if (ones_.size() < rows) {
    ones_.resize(rows);
    cuda::copy_to_device(ones_.data(), std::vector<float>(rows, 1.0f).data(), rows * sizeof(float), stream_.get());
  }
  if (rows_ > groups_rows_) {
    groups_rows_ = rows_;
    const int64_t s = static_cast<int64_t>(slots);
    slot_groups_ = std::make_unique<cuda::RowGroups>(rows_ * s, config().num_items);
    input_groups_ = std::make_unique<cuda::RowGroups>(rows_, config().num_items);
    position_groups_ = std::make_unique<cuda::RowGroups>(rows_, config().max_sequence);
    touched_groups_ = std::make_unique<cuda::RowGroups>(rows_ * (s + 1), config().num_items);
  }
}

void CudaSequenceTrainer::forward() {
  cuda::StreamHandle stream = stream_.get();
  if (!effective_.empty()) add_item_features();
  cuda::input_rows_forward(item_rows(), P(layout_.positions), input_.data(), position_.data(), rows_, d(),
                           xs_[0].data(), stream);
  dropout(xs_[0].data(), mask_in_, 0);
  for (size_t b = 0; b < blocks_.size(); ++b) block_forward(b);
  cuda::layer_norm_forward(xs_.back().data(), P(layout_.final_gamma), P(layout_.final_beta), rows_, d(),
                           kSequenceLayerNormEps, h_.data(), mean_f_.data(), rstd_f_.data(), stream);
}

void CudaSequenceTrainer::block_forward(size_t b) {
  const SequenceLayout::Block& w = layout_.blocks[b];
  DeviceBlock& a = blocks_[b];
  cuda::StreamHandle stream = stream_.get();
  const int64_t n = rows_ * d(), heads = config().heads;
  cuda::layer_norm_forward(xs_[b].data(), P(w.ln1_gamma), P(w.ln1_beta), rows_, d(), kSequenceLayerNormEps,
                           a.a1.data(), a.mean1.data(), a.rstd1.data(), stream);
  dense_forward(a.a1.data(), w.wq, w.bq, false, a.q.data());
  dense_forward(a.a1.data(), w.wk, w.bk, false, a.k.data());
  dense_forward(a.a1.data(), w.wv, w.bv, false, a.v.data());
  cuda::causal_attention_forward(a.q.data(), a.k.data(), a.v.data(), starts_.data(), d_prob_offsets_.data(),
                                 static_cast<int64_t>(seqs_.count()), rows_, heads, d() / heads, a.probs.data(),
                                 a.att.data(), stream);
  dense_forward(a.att.data(), w.wo, w.bo, false, tmp_.data());
  dropout(tmp_.data(), a.mask_o, 1 + 2 * static_cast<uint32_t>(b));
  cuda::copy_device(a.x1.data(), xs_[b].data(), static_cast<size_t>(n) * sizeof(float), stream);
  cuda::add_into(a.x1.data(), tmp_.data(), n, stream);
  cuda::layer_norm_forward(a.x1.data(), P(w.ln2_gamma), P(w.ln2_beta), rows_, d(), kSequenceLayerNormEps,
                           a.a2.data(), a.mean2.data(), a.rstd2.data(), stream);
  dense_forward(a.a2.data(), w.w1, w.b1, true, a.f1.data());
  dense_forward(a.f1.data(), w.w2, w.b2, false, tmp_.data());
  dropout(tmp_.data(), a.mask_f, 2 + 2 * static_cast<uint32_t>(b));
  cuda::copy_device(xs_[b + 1].data(), a.x1.data(), static_cast<size_t>(n) * sizeof(float), stream);
  cuda::add_into(xs_[b + 1].data(), tmp_.data(), n, stream);
}

// The sampled loss and its gradient dh; sum: the batch's loss, each position's added in order.
bool CudaSequenceTrainer::loss_of(uint64_t first, uint64_t end, std::span<const uint64_t> order, double& sum) {
  const float scale = 1.0f / static_cast<float>(positions_in(order, first, end));
  const int64_t slots = options_.negatives + 1;
  cuda::sampled_loss_forward_backward(h_.data(), rows_, d(), item_rows(), slot_ids_.data(), slots,
                                      d_weight_.data(), beta_, scale, coef_.data(), dh_.data(),
                                      position_loss_.data(), stream_.get());
  h_position_loss_.resize(static_cast<size_t>(rows_));
  cuda::copy_to_host(h_position_loss_.data(), position_loss_.data(), h_position_loss_.size() * sizeof(double),
                     stream_.get());
  stream_.synchronize();
  sum = std::accumulate(h_position_loss_.begin(), h_position_loss_.end(), 0.0);
  return std::isfinite(sum);
}

void CudaSequenceTrainer::backward() {
  cuda::StreamHandle stream = stream_.get();
  grad_dense_.zero(stream);
  layer_norm_backward(dh_.data(), xs_.back().data(), layout_.final_gamma, layout_.final_beta, mean_f_.data(),
                      rstd_f_.data(), dx_.data());
  for (size_t b = blocks_.size(); b-- > 0;) block_backward(b);
  undo_dropout(dx_.data(), mask_in_);
  cuda::input_rows_backward(dx_.data(), position_.data(), rows_, d(), *position_groups_, G(layout_.positions),
                            d_input_.data(), stream);
}

// dx_: on entry the gradient w.r.t. block b's output, on return w.r.t. its input.
void CudaSequenceTrainer::block_backward(size_t b) {
  const SequenceLayout::Block& w = layout_.blocks[b];
  DeviceBlock& a = blocks_[b];
  cuda::StreamHandle stream = stream_.get();
  const int64_t n = rows_ * d(), heads = config().heads;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  // The feed-forward branch: x2 = x1 + dropout(W2 relu(W1 LN2(x1) + b1) + b2).
  cuda::copy_device(d_tmp_.data(), dx_.data(), bytes, stream);
  undo_dropout(d_tmp_.data(), a.mask_f);
  dense_backward(a.f1.data(), a.f1.data(), d_tmp_.data(), w.w2, w.b2, false, d_f1_.data());
  dense_backward(a.a2.data(), a.f1.data(), d_f1_.data(), w.w1, w.b1, true, d_tmp2_.data());
  layer_norm_backward(d_tmp2_.data(), a.x1.data(), w.ln2_gamma, w.ln2_beta, a.mean2.data(), a.rstd2.data(),
                      d_tmp_.data());
  cuda::add_into(dx_.data(), d_tmp_.data(), n, stream);
  // The attention branch: x1 = x + dropout(Wo attention(q, k, v) + bo), q, k, v of LN1(x).
  cuda::copy_device(d_tmp_.data(), dx_.data(), bytes, stream);
  undo_dropout(d_tmp_.data(), a.mask_o);
  dense_backward(a.att.data(), a.att.data(), d_tmp_.data(), w.wo, w.bo, false, d_att_.data());
  cuda::causal_attention_backward(d_att_.data(), a.q.data(), a.k.data(), a.v.data(), a.probs.data(), starts_.data(),
                                  d_prob_offsets_.data(), static_cast<int64_t>(seqs_.count()), rows_, heads,
                                  d() / heads, d_q_.data(), d_k_.data(), d_v_.data(), dscores_.data(), stream);
  dense_backward(a.a1.data(), a.q.data(), d_q_.data(), w.wq, w.bq, false, d_tmp2_.data());
  dense_backward(a.a1.data(), a.k.data(), d_k_.data(), w.wk, w.bk, false, d_tmp_.data());
  cuda::add_into(d_tmp2_.data(), d_tmp_.data(), n, stream);
  dense_backward(a.a1.data(), a.v.data(), d_v_.data(), w.wv, w.bv, false, d_tmp_.data());
  cuda::add_into(d_tmp2_.data(), d_tmp_.data(), n, stream);
  layer_norm_backward(d_tmp2_.data(), xs_[b].data(), w.ln1_gamma, w.ln1_beta, a.mean1.data(), a.rstd1.data(),
                      d_tmp_.data());
  cuda::add_into(dx_.data(), d_tmp_.data(), n, stream);
}

// Adam: the dense range, then the item rows' gradients scattered (the scored slots', then the
// input rows') and the rows the batch touched stepped (dense item updates: every row).
void CudaSequenceTrainer::update() {
  cuda::StreamHandle stream = stream_.get();
  const OptimizerParams& o = options_.optimizer;
  const uint64_t t = ++state_.step;
  const float step = adam_step_size(o, t);
  const OptimizerParams p = step_params(o, t);
  const size_t base = layout_.dense_begin();
  if (!options_.freeze_dense) {
    cuda::dense_update(p, step, w_.data() + base, m_.data() + base, v_.data() + base, grad_dense_.data(),
                       static_cast<int64_t>(layout_.dense_size()), nullptr, stream);
  }
  const int64_t slots = options_.negatives + 1;
  float* item_grad = item_grad_.data();
  cuda::scatter_item_grads(coef_.data(), h_.data(), slot_ids_.data(), rows_, slots, d(), *slot_groups_, item_grad, stream);
  cuda::scatter_item_grads(ones_.data(), d_input_.data(), input_.data(), rows_, 1, d(), *input_groups_, item_grad, stream);
  const size_t items = layout_.items;
  const bool dense = options_.embedding_updates == EmbeddingUpdates::kDense;
  if (!dense) touched_groups_->build(touched_ids_.data(), rows_ * (slots + 1), stream);
  if (!effective_.empty()) update_features(p, step);
  const uint8_t* frozen = frozen_flags_.empty() ? nullptr : frozen_flags_.data();
  if (dense) {
    cuda::item_rows_update(p, step, w_.data() + items, m_.data() + items, v_.data() + items, item_grad, d(), nullptr,
                           nullptr, config().num_items, frozen, stream);
  } else {
    cuda::item_rows_update(p, step, w_.data() + items, m_.data() + items, v_.data() + items, item_grad, d(),
                           touched_groups_->rows(), touched_groups_->num_groups(), touched_groups_->max_groups(),
                           frozen, stream);
  }
}

bool CudaSequenceTrainer::train_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end,
                                      double& loss) {
  upload_batch(epoch, order, first, end);
  forward();
  double sum = 0;
  if (!loss_of(first, end, order, sum)) return false;
  backward();
  update();
  loss += sum;
  return true;
}

}  // namespace

std::unique_ptr<SequenceTrainerBase> make_cuda_sequence_trainer(const SequenceSet& data,
                                                                const SequenceTrainOptions& options,
                                                                SequenceState state) {
  std::string reason;
  if (!cuda::probe(&reason)) throw Error("`device=cuda`: " + reason);
  return std::make_unique<CudaSequenceTrainer>(data, options, std::move(state));
}

}  // namespace tastebud
