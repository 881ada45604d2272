// The epoch and the state, once for both backends (backend_base.h).
#include "backend_base.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud {

BackendBase::BackendBase(const TrainingSet& data, const TrainOptions& options, TrainState state)
    : data_(data), options_(options), state_(std::move(state)), layout_(state_.params.config) {
  check_training_inputs(data, options, state_.params.config);
  check_unsharded();
  max_rows_ = bpr() ? 2 * static_cast<int64_t>(options.batch_size) : options.batch_size;
  chunk_rows_ = tastebud::chunk_rows(static_cast<uint32_t>(max_rows_));
}

void BackendBase::check_unsharded() const {
  TB_CHECK(ranks() > 1 || !state_.params.sharded(),
           fmt::format("the state holds only rank {} of {}'s id rows; train it on as many ranks",
                       state_.params.shard_rank, state_.params.shard_ranks));
}

uint64_t BackendBase::samples_per_epoch() const {
  return tastebud::samples_per_epoch(data_.size(), options_.negatives, bpr());
}

BatchStep BackendBase::batch_step(uint32_t epoch, uint64_t first, uint32_t samples, uint64_t index,
                                  uint64_t step) const {
  BatchStep b;
  b.epoch = epoch;
  b.first = first;
  b.samples = samples;
  b.index = index;
  b.rows = bpr() ? 2 * static_cast<int64_t>(samples) : samples;
  b.chunks = (b.rows + chunk_rows_ - 1) / chunk_rows_;
  b.chunk_end = b.chunks;
  if (ranks() > 1) {
    const auto [begin, end] = rank_slice(static_cast<uint64_t>(b.chunks), options_.comm->rank(), ranks());
    b.chunk_begin = static_cast<int64_t>(begin);
    b.chunk_end = static_cast<int64_t>(end);
  }
  b.row_begin = std::min(b.chunk_begin * chunk_rows_, b.rows);
  b.row_end = std::min(b.chunk_end * chunk_rows_, b.rows);
  b.scale = 1.0f / static_cast<float>(samples);
  b.step = step;
  const OptimizerParams& opt = options_.optimizer;
  b.step_size = opt.kind == OptimizerKind::kAdam ? adam_step_size(opt, step) : opt.lr;
  b.optimizer = step_params(opt, step);
  return b;
}

// Batch b of the epoch covers its samples [b * batch_size, ...) and takes step step0 + b + 1. A
// loss known on the host is summed here in batch order, and the epoch stops at the first that is
// not finite, before its updates; progress is reported every 64 batches and at the last.
EpochStats BackendBase::train_epoch(uint32_t epoch, const ProgressFn& progress) {
  const auto start_time = std::chrono::steady_clock::now();
  exchanged_bytes_ = 0;
  if (rank_step_) rank_step_->take_exchanged_bytes();
  begin_epoch(epoch);
  const uint64_t total = samples_per_epoch();
  const uint64_t step0 = state_.step;
  LossTotals totals;
  bool on_device = false;
  uint64_t index = 0;
  for (uint64_t first = 0; first < total; first += options_.batch_size, ++index) {
    const uint32_t samples = static_cast<uint32_t>(std::min<uint64_t>(options_.batch_size, total - first));
    const BatchStep batch = batch_step(epoch, first, samples, index, step0 + index + 1);
    const std::optional<double> loss = rows_and_gradients(batch);
    on_device = !loss.has_value();
    if (loss) {
      if (!std::isfinite(*loss)) {
        totals.finite = false;
        break;
      }
      totals.loss += *loss;
      totals.samples += samples;
      ++totals.batches;
    }
    state_.step = batch.step;
    update(batch);
    if (loss && progress && (index % 64 == 0 || totals.samples == total)) {
      progress(totals.samples, total, totals.loss / static_cast<double>(totals.samples));
    }
  }
  if (on_device) totals = read_loss_totals();
  state_.step = step0 + totals.batches;
  EpochStats stats;
  stats.samples = totals.samples;
  stats.finite = totals.finite;
  stats.mean_loss = stats.samples > 0 ? totals.loss / static_cast<double>(stats.samples) : 0.0;
  stats.impression_negatives = epoch_impressions();
  stats.exchanged_bytes = exchanged_bytes_ + (rank_step_ ? rank_step_->take_exchanged_bytes() : 0);
  stats.graph_steps = take_graph_steps();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  if (on_device && progress) progress(stats.samples, total, stats.mean_loss);
  return stats;
}

std::optional<double> BackendBase::rows_and_gradients(const BatchStep& batch) {
  fill_rows(batch);
  gather(batch);
  return forward_backward(batch);
}

void BackendBase::update(const BatchStep& batch) {
  update_dense(batch);
  update_tables(batch);
}

TrainState BackendBase::state() {
  download_state();
  if (!rank_step_) return state_;
  TrainState whole = state_;
  rank_step_->gather(whole);
  return whole;
}

TrainState BackendBase::held_state() {
  download_state();
  TrainState held = state_;  // its id tables are empty while rank_step_ holds them
  if (rank_step_) rank_step_->copy_held_rows(held);
  return held;
}

void BackendBase::load_state(const TrainState& state) {
  // The backend's buffers and the dense layout were sized from state_'s config: every tensor must fit.
  state.check_fits(state_.params.config);
  if (&state != &state_) state_ = state;
  install_state();
}

void BackendBase::install_state() {
  rank_step_.reset();
  check_unsharded();
  if (ranks() > 1) rank_step_ = std::make_unique<RankStep>(*options_.comm, state_);
  upload_state();
}

}  // namespace tastebud
