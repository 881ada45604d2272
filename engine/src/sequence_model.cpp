#include "tastebud/engine/sequence_model.h"

#include <algorithm>
#include <cmath>

#include <Eigen/Core>
#include <fmt/format.h>

#include "cpu/dense.h"
#include "sequence_pass.h"
#include "tastebud/engine/model.h"
#include "tastebud/error.h"
#include "tastebud/feature_view.h"

namespace tastebud {

void SequenceConfig::check() const {
  TB_CHECK(num_items > 0, "`num_items`: the sequence model needs items");
  TB_CHECK(hidden > 0 && hidden <= 4096, fmt::format("`hidden` must be in 1..4096, not {}", hidden));
  TB_CHECK(blocks >= 1 && blocks <= 64, fmt::format("`blocks` must be in 1..64, not {}", blocks));
  TB_CHECK(heads >= 1 && hidden % heads == 0,
           fmt::format("`heads` must divide `hidden` ({}), not {}", hidden, heads));
  TB_CHECK(max_sequence >= 2 && max_sequence <= 65536,
           fmt::format("`max_sequence` must be in 2..65536, not {}", max_sequence));
  TB_CHECK(dropout >= 0.0f && dropout < 1.0f, fmt::format("`dropout` must be in [0, 1), not {}", dropout));
}

bool SequenceConfig::has_features() const { return feature_rows > 0 || numeric > 0; }

SequenceLayout::SequenceLayout(const SequenceConfig& c) {
  const size_t d = c.hidden;
  size_t at = 0;
  auto take = [&](size_t n) {
    const size_t offset = at;
    at += n;
    return offset;
  };
  items = take(size_t{c.num_items} * d);
  features = take(size_t{c.feature_rows} * d);
  numeric = take(size_t{c.numeric} * d);
  positions = take(size_t{c.max_sequence} * d);
  for (uint32_t b = 0; b < c.blocks; ++b) {
    Block k{};
    k.ln1_gamma = take(d), k.ln1_beta = take(d);
    k.wq = take(d * d), k.bq = take(d), k.wk = take(d * d), k.bk = take(d);
    k.wv = take(d * d), k.bv = take(d), k.wo = take(d * d), k.bo = take(d);
    k.ln2_gamma = take(d), k.ln2_beta = take(d);
    k.w1 = take(d * d), k.b1 = take(d), k.w2 = take(d * d), k.b2 = take(d);
    blocks.push_back(k);
  }
  final_gamma = take(d);
  final_beta = take(d);
  total = at;
}

SequenceParams SequenceParams::initialize(const SequenceConfig& config, uint64_t seed) {
  config.check();
  const SequenceLayout layout(config);
  SequenceParams p{config, std::vector<float>(layout.total, 0.0f)};
  const size_t d = config.hidden;
  uint32_t tensor = 100;  // tensor ids of their own, apart from the NeuMF family's
  auto normal = [&](size_t offset, size_t n, float stddev) {
    for (size_t i = 0; i < n; ++i) p.values[offset + i] = normal_draw(seed, tensor, i, stddev);
    ++tensor;
  };
  auto ones = [&](size_t offset) { std::fill_n(p.values.begin() + static_cast<int64_t>(offset), d, 1.0f); };
  // Xavier-normal, as the reference SASRec code initialises every tensor: the item rows small next
  // to a position's (sqrt(2 / (items + d)) against sqrt(2 / (L + d))), so that at the start what
  // the sequence holds and where its items sit count alike and every logit is near 0.
  const float unit = 1.0f / std::sqrt(static_cast<float>(d));
  auto xavier = [&](size_t rows) { return std::sqrt(2.0f / static_cast<float>(rows + d)); };
  normal(layout.items, size_t{config.num_items} * d, xavier(config.num_items));
  normal(layout.positions, size_t{config.max_sequence} * d, xavier(config.max_sequence));
  for (const SequenceLayout::Block& b : layout.blocks) {
    for (size_t w : {b.wq, b.wk, b.wv, b.wo, b.w1, b.w2}) normal(w, d * d, unit);
    ones(b.ln1_gamma);
    ones(b.ln2_gamma);
  }
  ones(layout.final_gamma);
  return p;
}

void item_representations(const SequenceParams& params, const float* values, const FeatureView& items, float* out) {
  const SequenceConfig& c = params.config;
  const SequenceLayout layout(c);
  const int64_t d = c.hidden, n = c.num_items;
  std::copy_n(values + layout.items, size_t{c.num_items} * c.hidden, out);
  if (!c.has_features()) return;
#pragma omp parallel for schedule(static, 256)
  for (int64_t i = 0; i < n; ++i) {
    add_feature_columns<float>(items, static_cast<uint32_t>(i), values + layout.features, values + layout.numeric, d,
                               0, d, out + i * d, 0, nullptr);
  }
}

SequenceParams fold_item_features(const SequenceParams& params, const FeatureView& items) {
  SequenceConfig folded = params.config;
  folded.feature_rows = folded.numeric = 0;
  const SequenceLayout from(params.config), to(folded);
  SequenceParams p{folded, std::vector<float>(to.total)};
  item_representations(params, params.values.data(), items, p.values.data() + to.items);
  std::copy(params.values.begin() + static_cast<int64_t>(from.dense_begin()), params.values.end(),
            p.values.begin() + static_cast<int64_t>(to.dense_begin()));
  return p;
}

SequenceEncoder::SequenceEncoder(const SequenceParams& params)
    : params_(&params), layout_(std::make_unique<SequenceLayout>(params.config)) {
  TB_CHECK(!params.config.has_features(), "the sequence model's item metadata must be folded into its item rows first");
  TB_CHECK(params.values.size() == layout_->total,
           fmt::format("the sequence model holds {} values, its shape needs {}", params.values.size(), layout_->total));
}

SequenceEncoder::~SequenceEncoder() = default;
SequenceEncoder::SequenceEncoder(SequenceEncoder&&) noexcept = default;

void SequenceEncoder::encode(std::span<const uint32_t> items, std::span<float> h) const {
  const SequenceConfig& c = params_->config;
  // Each thread's workspace, kept while the shape stays (a pass holds no parameters, only sizes).
  thread_local std::unique_ptr<SequencePass> pass;
  thread_local SequenceConfig pass_shape;
  auto same_shape = [&](const SequenceConfig& a) {
    return a.num_items == c.num_items && a.hidden == c.hidden && a.blocks == c.blocks && a.heads == c.heads &&
           a.max_sequence == c.max_sequence;
  };
  if (!pass || !same_shape(pass_shape)) {
    pass = std::make_unique<SequencePass>(c);
    pass_shape = c;
  }
  if (items.empty()) {  // no history: every item scores 0, and answers fall back to popularity
    std::fill(h.begin(), h.begin() + c.hidden, 0.0f);
    return;
  }
  for (uint32_t i : items) TB_CHECK(i < c.num_items, fmt::format("item {} is outside the model's {} items", i, c.num_items));
  PackedSequences seqs;
  seqs.add(items, c.max_sequence);
  pass->forward_newest(params_->values.data(), seqs);
  std::copy(pass->hidden(), pass->hidden() + c.hidden, h.begin());
}

void SequenceEncoder::score(std::span<const float> h, std::span<const uint32_t> items, std::span<float> out) const {
  const int64_t d = params_->config.hidden;
  const float* table = params_->values.data() + layout_->items;
  if (items.empty()) return cpu::row_dots(table, params_->config.num_items, d, h.data(), out.data());
  const Eigen::Map<const Eigen::VectorXf> query(h.data(), d);
  for (size_t k = 0; k < items.size(); ++k)
    out[k] = Eigen::Map<const Eigen::VectorXf>(table + items[k] * static_cast<size_t>(d), d).dot(query);
}

void SequenceEncoder::score_sequence(std::span<const uint32_t> sequence, std::span<const uint32_t> items,
                                     std::span<float> out) const {
  std::vector<float> h(params_->config.hidden);
  encode(sequence, h);
  score(h, items, out);
}

}  // namespace tastebud
