#include "tastebud/engine/sequence_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "sequence_trainer_base.h"
#include "tastebud/engine/train_options.h"
#include "tastebud/error.h"
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

SequenceTrainerBase::SequenceTrainerBase(const SequenceSet& data, const SequenceTrainOptions& options,
                                         SequenceState state)
    : data_(data), options_(options), state_(std::move(state)), layout_(state_.params.config) {
  const SequenceConfig& c = config();
  c.check();
  options.check();
  TB_CHECK(c.num_items == data.num_items, "the sequence set and the model disagree on the item count");
  if (state_.m.empty()) state_.m.assign(layout_.total, 0.0f), state_.v.assign(layout_.total, 0.0f);
  TB_CHECK(state_.params.values.size() == layout_.total && state_.m.size() == layout_.total &&
               state_.v.size() == layout_.total,
           "the sequence model's state does not fit its shape");
  build_windows();
  build_known_items();
  if (options.sampler == SamplerKind::kPopularity) {
    std::vector<uint64_t> counts(c.num_items, 0);
    for (uint32_t i : data.items) ++counts[i];
    alias_ = cpu::AliasTable::popularity(counts, options.sampler_alpha);
  }
  const float alpha = std::min(1.0f, static_cast<float>(options.negatives) / std::max(1u, c.num_items - 1));
  beta_ = gbce_beta(alpha, options.gbce_t);
  TB_CHECK(options.trainable_items.empty() || options.trainable_items.size() == c.num_items,
           fmt::format("`trainable_items` flags {} items, the model has {}", options.trainable_items.size(), c.num_items));
  TB_CHECK(!options.freeze_dense || !c.has_features(), "`update` trains the folded model, without item metadata rows");
  if (!options.trainable_items.empty()) {
    frozen_.resize(c.num_items);
    for (uint32_t i = 0; i < c.num_items; ++i) frozen_[i] = !options.trainable_items[i];
  }
  if (!c.has_features()) return;
  // Item metadata: items that no sequence holds keep E at zero (their gradient as sampled
  // negatives reaches their features only), so a cold item answers from its metadata alone, as
  // the NeuMF family's do.
  const FeatureView& f = data.item_features;
  TB_CHECK(f.numeric == c.numeric && (f.offsets != nullptr) == (c.feature_rows > 0),
           fmt::format("the item metadata ({} numeric fields) does not fit the model ({} feature rows, {} numeric)",
                       f.numeric, c.feature_rows, c.numeric));
  std::vector<uint8_t> cold(c.num_items, 1);
  for (uint32_t i : data.items) cold[i] = 0;
  frozen_.resize(c.num_items, 0);
  for (uint32_t i = 0; i < c.num_items; ++i) {
    if (!cold[i]) continue;
    frozen_[i] = 1;
    std::fill_n(state_.params.values.begin() + static_cast<int64_t>(layout_.items + size_t{i} * c.hidden), c.hidden, 0.0f);
  }
}

// Each user's items sorted and distinct: the negatives the sampler rejects.
void SequenceTrainerBase::build_known_items() {
  known_offsets_.assign(1, 0);
  for (uint32_t u = 0; u < data_.num_users(); ++u) {
    const size_t from = known_.size();
    known_.insert(known_.end(), data_.items.begin() + static_cast<int64_t>(data_.offsets[u]),
                  data_.items.begin() + static_cast<int64_t>(data_.offsets[u + 1]));
    std::sort(known_.begin() + static_cast<int64_t>(from), known_.end());
    known_.erase(std::unique(known_.begin() + static_cast<int64_t>(from), known_.end()), known_.end());
    known_offsets_.push_back(known_.size());
  }
}

// A user's history in windows of max_sequence positions from its newest item back, so that long
// histories train whole: window w's targets are items (last - m, last], m of them.
void SequenceTrainerBase::build_windows() {
  const uint64_t L = config().max_sequence;
  for (uint32_t u = 0; u < data_.num_users(); ++u) {
    for (uint64_t last = data_.offsets[u + 1]; last >= data_.offsets[u] + 2; last = last > L ? last - L : 0) {
      windows_.push_back(Window{u, last - 1, std::min<uint64_t>(last - 1 - data_.offsets[u], L)});
      if (last - 1 - data_.offsets[u] <= L) break;
    }
  }
}

void SequenceTrainerBase::fill(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end,
                               PackedSequences& seqs, std::vector<uint32_t>& slot_items,
                               std::vector<float>& weight) const {
  const SequenceConfig& c = config();
  const uint32_t L = c.max_sequence, k = options_.negatives;
  const float* probability = alias_.probability.empty() ? nullptr : alias_.probability.data();
  const uint32_t* alias = alias_.alias.empty() ? nullptr : alias_.alias.data();
  for (uint64_t g = first; g < end; ++g) {
    const Window& win = windows_[order[g]];
    const uint32_t u = win.user;
    const uint64_t m = win.positions, start = win.last - m;  // inputs start .. start + m - 1, targets one later
    seqs.add(std::span(data_.items).subspan(start, m), L, g);
    const uint32_t* pos = known_.data() + known_offsets_[u];
    const uint64_t count = known_offsets_[u + 1] - known_offsets_[u];
    for (uint64_t t = 0; t < m; ++t) {
      slot_items.push_back(data_.items[start + t + 1]);
      weight.push_back(data_.weights[start + t + 1]);
      const uint64_t at = (g * L + (L - m + t)) * k;
      for (uint32_t j = 0; j < k; ++j) {
        slot_items.push_back(draw_negative(options_.seed, RandomStream::kNegatives, epoch, at + j, pos, count,
                                           c.num_items, probability, alias));
      }
    }
  }
}

EpochStats SequenceTrainerBase::train_epoch(uint32_t epoch, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<uint64_t> order(windows_.size());
  cpu::shuffle_order(options_.seed, epoch, order.size(), order);
  EpochStats stats;
  const uint64_t total = positions_per_epoch();
  double loss = 0;
  uint64_t batch = 0;
  for (uint64_t first = 0; first < order.size(); first += options_.batch_size, ++batch) {
    const uint64_t end = std::min<uint64_t>(first + options_.batch_size, order.size());
    if (!train_batch(epoch, order, first, end, loss)) {
      stats.finite = false;
      break;
    }
    stats.samples += positions_in(order, first, end);
    if (progress && (batch % 16 == 15 || end == order.size()))
      progress(stats.samples, total, stats.samples > 0 ? loss / static_cast<double>(stats.samples) : 0.0);
  }
  stats.mean_loss = stats.samples > 0 ? loss / static_cast<double>(stats.samples) : 0.0;
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

uint64_t SequenceTrainerBase::positions_in(std::span<const uint64_t> order, uint64_t first, uint64_t end) const {
  uint64_t positions = 0;
  for (uint64_t g = first; g < end; ++g) positions += positions_of(order[g]);
  return positions;
}

uint64_t SequenceTrainerBase::positions_per_epoch() const {
  uint64_t total = 0;
  for (const Window& w : windows_) total += w.positions;
  return total;
}

#ifndef TASTEBUD_WITH_CUDA
std::unique_ptr<SequenceTrainerBase> make_cuda_sequence_trainer(const SequenceSet&, const SequenceTrainOptions&,
                                                                SequenceState) {
  throw Error("`device=cuda`: this build has no GPU support");
}
#endif

SequenceTrainer::SequenceTrainer(const SequenceSet& data, const SequenceTrainOptions& options, SequenceState state)
    : impl_(options.cuda ? make_cuda_sequence_trainer(data, options, std::move(state))
                         : make_cpu_sequence_trainer(data, options, std::move(state))) {}
SequenceTrainer::~SequenceTrainer() = default;

EpochStats SequenceTrainer::train_epoch(uint32_t epoch, const ProgressFn& progress) {
  return impl_->train_epoch(epoch, progress);
}
uint64_t SequenceTrainer::positions_per_epoch() const { return impl_->positions_per_epoch(); }
const SequenceState& SequenceTrainer::state() const { return impl_->state(); }

}  // namespace tastebud
