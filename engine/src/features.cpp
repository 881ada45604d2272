#include "tastebud/engine/features.h"

#include <fmt/format.h>

#include "cpu/features.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/error.h"

namespace tastebud {

void FeatureInputs::check(const FeatureSpec& spec, uint32_t expected_entities, const char* side) const {
  TB_CHECK(entities == expected_entities,
           fmt::format("{} metadata covers {} entities, the model has {}", side, entities, expected_entities));
  if (spec.table_rows() > 0) {
    TB_CHECK(offsets.size() == static_cast<size_t>(entities) + 1 && rows.size() == offsets.back() &&
                 weights.size() == rows.size(),
             fmt::format("{} metadata: feature rows are inconsistent", side));
    for (uint32_t r : rows) {
      TB_CHECK(r < spec.table_rows(), fmt::format("{} metadata: feature row {} is out of range", side, r));
    }
  } else {
    TB_CHECK(offsets.empty(), fmt::format("{} metadata: feature rows given but the model has none", side));
  }
  TB_CHECK(numeric == spec.numerical.size() && values.size() == static_cast<size_t>(entities) * numeric,
           fmt::format("{} metadata: {} numerical fields given, the model has {}", side, numeric,
                       spec.numerical.size()));
}

FeatureView FeatureInputs::view() const {
  FeatureView v;
  if (!offsets.empty()) {
    v.offsets = offsets.data();
    v.rows = rows.data();
    v.weights = weights.data();
  }
  v.numeric = numeric;
  v.values = values.data();
  return v;
}

namespace {

void fold_side(const FeatureSpec& spec, const FeatureInputs& in, const Tensor& table,
               const Tensor& projection, Tensor& gmf, Tensor& mlp, int64_t f, int64_t e,
               const char* side) {
  if (!spec.enabled()) return;
  in.check(spec, static_cast<uint32_t>(gmf.rows()), side);
  const cpu::FeatureView v = in.view();
#pragma omp parallel for schedule(static)
  for (int64_t x = 0; x < static_cast<int64_t>(in.entities); ++x) {
    cpu::add_features<float>(v, static_cast<uint32_t>(x), table.values.data(), projection.values.data(),
                             f, e, gmf.values.data() + x * f, mlp.values.data() + x * e);
  }
}

}  // namespace

ModelParams fold_features(const ModelParams& params, const FeatureInputs& users,
                          const FeatureInputs& items) {
  ModelParams folded = params;
  const ModelConfig& c = params.config;
  const int64_t f = c.has_gmf() ? c.factors : 0, e = c.mlp_embedding();
  fold_side(c.user_features, users, params.user_features, params.user_numeric, folded.user_gmf,
            folded.user_mlp, f, e, "user");
  fold_side(c.item_features, items, params.item_features, params.item_numeric, folded.item_gmf,
            folded.item_mlp, f, e, "item");
  folded.config.user_features = {};
  folded.config.item_features = {};
  folded.user_features = folded.item_features = folded.user_numeric = folded.item_numeric = {};
  return folded;
}

std::vector<float> context_vector(const ModelParams& params, const FeatureInputs& context, uint32_t x) {
  const int64_t e = params.config.mlp_embedding();
  std::vector<float> out(static_cast<size_t>(e), 0.0f);
  if (!params.config.has_context() || context.offsets.empty()) return out;
  TB_CHECK(x < context.entities, "context: entity out of range");
  cpu::add_features<float>(context.view(), x, params.context_features.values.data(), nullptr, 0, e,
                           nullptr, out.data());
  return out;
}

void zero_untrained_rows(ModelParams& params, const TrainingSet& data) {
  const ModelConfig& c = params.config;
  // MF: the id row's constant column stays at one (a cold item's score is p . features + b_i).
  // Sharded params hold rows u = shard_rank + k * shard_ranks at k.
  auto zero = [&params](Tensor& t, uint64_t row, int64_t constant) {
    const uint64_t at = row / params.shard_ranks;
    std::fill_n(t.values.begin() + at * t.cols(), t.cols(), 0.0f);
    if (constant >= 0) t.values[at * t.cols() + constant] = 1.0f;
  };
  const uint32_t first = params.shard_rank, step = params.shard_ranks;
  if (c.user_features.enabled()) {
    for (uint32_t u = first; u < data.num_users; u += step) {
      if (data.user_offsets[u + 1] == data.user_offsets[u]) {
        zero(params.user_gmf, u, c.constant_column(false));
        zero(params.user_mlp, u, -1);
      }
    }
  }
  if (c.item_features.enabled()) {
    for (uint32_t i = first; i < data.num_items; i += step) {
      if (data.item_counts[i] == 0) {
        zero(params.item_gmf, i, c.constant_column(true));
        zero(params.item_mlp, i, -1);
      }
    }
  }
}

}  // namespace tastebud
