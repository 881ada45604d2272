#include "tastebud/engine/param_layout.h"

#include <fmt/format.h>

#include "tastebud/engine/model.h"
#include "tastebud/error.h"

namespace tastebud {

uint64_t TensorSlot::size() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

ParamLayout::ParamLayout(const ModelConfig& config) {
  const uint64_t users = config.num_users, items = config.num_items;
  const uint64_t f = config.has_gmf() ? config.factors : 0;
  const uint64_t e = config.mlp_embedding();
  const uint64_t w = config.feature_width();
  auto add = [&](TensorRole role, std::string name, std::vector<uint64_t> shape, uint32_t layer = 0) {
    slots_.push_back(TensorSlot{role, layer, std::move(name), std::move(shape), 0});
  };
  add(TensorRole::kUserGmf, "user_gmf", {users, f});
  add(TensorRole::kItemGmf, "item_gmf", {items, f});
  add(TensorRole::kUserMlp, "user_mlp", {users, e});
  add(TensorRole::kItemMlp, "item_mlp", {items, e});
  if (config.user_features.table_rows() > 0) {
    add(TensorRole::kUserFeatures, "user_features", {config.user_features.table_rows(), w});
  }
  if (config.item_features.table_rows() > 0) {
    add(TensorRole::kItemFeatures, "item_features", {config.item_features.table_rows(), w});
  }
  if (config.has_context()) add(TensorRole::kContext, "context_features", {config.context.table_rows(), e});
  sparse_count_ = slots_.size();
  for (uint32_t j = 0; j < config.num_dense_layers(); ++j) {
    const uint64_t in = config.layers[j], out = config.layers[j + 1];
    add(TensorRole::kDenseWeight, fmt::format("dense{}_weight", j), {in, out}, j);
    add(TensorRole::kDenseBias, fmt::format("dense{}_bias", j), {out}, j);
  }
  add(TensorRole::kHeadWeight, "head_weight", {config.head_inputs()});
  add(TensorRole::kHeadBias, "head_bias", {1});
  if (!config.user_features.numerical.empty()) {
    add(TensorRole::kUserNumeric, "user_numeric", {config.user_features.numerical.size(), w});
  }
  if (!config.item_features.numerical.empty()) {
    add(TensorRole::kItemNumeric, "item_numeric", {config.item_features.numerical.size(), w});
  }
  for (size_t t = sparse_count_; t < slots_.size(); ++t) {
    slots_[t].dense_offset = dense_floats_;
    dense_floats_ += (slots_[t].size() + kDenseAlign - 1) / kDenseAlign * kDenseAlign;
  }
}

size_t ParamLayout::find(TensorRole role, uint32_t layer) const {
  for (size_t t = 0; t < slots_.size(); ++t) {
    if (slots_[t].role == role && slots_[t].layer == layer) return t;
  }
  return kNone;
}

uint64_t ParamLayout::dense_offset(TensorRole role, uint32_t layer) const {
  const size_t t = find(role, layer);
  TB_CHECK(t != kNone && !slots_[t].sparse(), "parameter layout: no such dense tensor");
  return slots_[t].dense_offset;
}

}  // namespace tastebud
