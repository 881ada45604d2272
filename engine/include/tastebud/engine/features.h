// Metadata as model input: one side's (users' or items') categorical, textual and numerical
// fields encoded per dense index against a FeatureSpec (host/features.h builds them from a dataset).
#pragma once

#include <cstdint>
#include <vector>

#include "tastebud/engine/model.h"
#include "tastebud/feature_view.h"

namespace tastebud {

// Entity x's feature-table rows are rows[offsets[x] .. offsets[x + 1]), each listed once, with
// weights 1 / (values of that field), so multi-valued fields and the text bag are averaged;
// values[x * numeric .. + numeric) are its standardised numbers, 0 for null (the mean).
struct FeatureInputs {
  uint32_t entities = 0;
  std::vector<uint64_t> offsets;  // entities + 1; empty when the spec has no table rows
  std::vector<uint32_t> rows;
  std::vector<float> weights;
  uint32_t numeric = 0;
  std::vector<float> values;  // entities x numeric

  bool empty() const { return offsets.empty() && numeric == 0; }
  // The kernels' view of these host arrays (no table rows when offsets is empty).
  FeatureView view() const;
  // Throws tastebud::Error when the inputs do not fit the spec or the entity count.
  void check(const FeatureSpec& spec, uint32_t expected_entities, const char* side) const;
};

// The id-only model that scores every known user and item exactly as params with these inputs:
// each id row plus its entity's feature sum, feature tables and specs dropped. Scoring then costs
// what an id-only model costs, and cold items score from their metadata alone.
ModelParams fold_features(const ModelParams& params, const FeatureInputs& users,
                          const FeatureInputs& items);

// Context: the sum of entity x's context-table rows (params.context_features), the vector that
// joins the user's half of the MLP input; mlp_embedding() floats, zeros when x has none.
std::vector<float> context_vector(const ModelParams& params, const FeatureInputs& context, uint32_t x);

}  // namespace tastebud
