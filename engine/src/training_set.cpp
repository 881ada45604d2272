#include <fmt/format.h>

#include "tastebud/engine/trainer.h"
#include "tastebud/error.h"

namespace tastebud {

void TrainingSet::finalize() {
  TB_CHECK(user.size() == item.size(), "training set: user and item columns differ in length");
  if (weight.empty()) weight.assign(user.size(), 1.0f);
  TB_CHECK(weight.size() == user.size(), "training set: weight column has the wrong length");
  user_offsets.assign(static_cast<size_t>(num_users) + 1, 0);
  item_counts.assign(num_items, 0);
  for (size_t p = 0; p < user.size(); ++p) {
    TB_CHECK(user[p] < num_users && item[p] < num_items,
             fmt::format("training set: positive {} is out of range", p));
    if (p > 0) {
      TB_CHECK(user[p - 1] < user[p] || (user[p - 1] == user[p] && item[p - 1] < item[p]),
               fmt::format("training set: positives must be distinct and sorted by (user, item); "
                           "positive {} is not",
                           p));
    }
    ++user_offsets[user[p] + 1];
    ++item_counts[item[p]];
  }
  for (uint32_t u = 0; u < num_users; ++u) user_offsets[u + 1] += user_offsets[u];
  if (!impression_offsets.empty()) {
    TB_CHECK(impression_offsets.size() == static_cast<size_t>(num_users) + 1 &&
                 impression_offsets.back() == impression_items.size(),
             "training set: the impression lists do not match the users");
    for (uint32_t i : impression_items) TB_CHECK(i < num_items, "training set: an impression is out of range");
  }
}

PositivesView TrainingSet::view(float impression_share) const {
  PositivesView v;
  v.user = user.data();
  v.item = item.data();
  v.weight = weight.data();
  v.user_offsets = user_offsets.data();
  v.num_items = num_items;
  v.count = size();
  if (impression_share > 0.0f && !impression_offsets.empty()) {
    v.impression_offsets = impression_offsets.data();
    v.impression_items = impression_items.data();
    v.impression_share = impression_share;
  }
  return v;
}

void check_training_inputs(const TrainingSet& data, const TrainOptions& options, const ModelConfig& config) {
  TB_CHECK(config.num_users == data.num_users && config.num_items == data.num_items,
           "the model's user and item counts do not match the training data");
  TB_CHECK(data.size() > 0, "the training set has no positives");
  TB_CHECK(options.batch_size > 0, "`batch_size` must be positive");
  TB_CHECK(options.negatives > 0 || options.loss == LossKind::kBce,
           "BPR needs at least one negative per positive");
  TB_CHECK(options.embedding_updates == EmbeddingUpdates::kLazy || !options.masked(),
           "dense embedding updates move every row; update mode (frozen rows) needs lazy ones");
  if (config.user_features.enabled()) data.user_features.check(config.user_features, data.num_users, "user");
  if (config.item_features.enabled()) data.item_features.check(config.item_features, data.num_items, "item");
  if (config.has_context()) {
    TB_CHECK(data.size() < (1ull << 32), "context: at most 2^32 - 1 positives");
    data.context.check(config.context, static_cast<uint32_t>(data.size()), "context");
  }
  if (!data.impression_offsets.empty()) {
    TB_CHECK(data.impression_offsets.size() == static_cast<size_t>(data.num_users) + 1 &&
                 data.impression_offsets.back() == data.impression_items.size(),
             "training set: the impression lists do not match the users");
  }
}

TrainState TrainState::fresh(const ModelParams& params, const OptimizerParams& optimizer) {
  TrainState s;
  s.params = params;
  const float init = optimizer.kind == OptimizerKind::kAdagrad ? optimizer.adagrad_init : 0.0f;
  for (const Tensor* t : s.params.tensors()) {
    s.state0.push_back(Tensor{t->name + ".state0", t->shape, std::vector<float>(t->values.size(), init)});
    s.state1.push_back(Tensor{t->name + ".state1", t->shape, std::vector<float>(t->values.size(), 0.0f)});
  }
  return s;
}

void TrainState::check_fits(const ModelConfig& config) const {
  TB_CHECK(params.config.num_users == config.num_users && params.config.num_items == config.num_items,
           fmt::format("checkpoint does not match the model's shape: {} users x {} items, the model has {} x {}",
                       params.config.num_users, params.config.num_items, config.num_users, config.num_items));
  const ParamLayout layout(config);
  const auto tensors = params.tensors();
  TB_CHECK(tensors.size() == layout.size() && state0.size() == layout.size() && state1.size() == layout.size(),
           fmt::format("checkpoint does not match the model's shape: {} tensors, the model has {}",
                       tensors.size(), layout.size()));
  for (size_t t = 0; t < layout.size(); ++t) {
    const TensorSlot& slot = layout[t];
    // Sharded params hold their own rows of the id tables only.
    const uint64_t size = t < ModelParams::kEmbeddingTables && params.sharded()
                              ? params.held_rows(slot.shape[0]) * slot.shape[1] : slot.size();
    for (const Tensor* x : {tensors[t], &state0[t], &state1[t]}) {
      TB_CHECK(x->shape == slot.shape && x->values.size() == size,
               fmt::format("checkpoint does not match the model's shape: {} differs in shape", slot.name));
    }
  }
}

uint32_t chunk_rows(uint32_t batch_rows) {
  // At most 64 chunks of at least 128 rows; a multiple of 16 so that every chunk's buffers start
  // 64-byte aligned, and even so that BPR pairs never straddle two chunks.
  const uint32_t rows = std::max<uint32_t>(128, (batch_rows + 63) / 64);
  return (rows + 15) / 16 * 16;
}

}  // namespace tastebud
