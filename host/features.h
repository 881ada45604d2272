// Metadata for the model: which sides use it (--metadata), the FeatureSpec a dataset's Users or
// Items fields give, and their encoding per dense index as FeatureInputs.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/features.h"

namespace tastebud::host {

struct MetadataSides {
  bool users = false;
  bool items = false;
};
MetadataSides parse_metadata_sides(const std::string& name);  // none | items | users | both

// --metadata auto: items when the Items table has usable fields (a categorical field with values,
// the textual field, a numerical field with a number), else none; none for a model that takes no
// metadata (mf). User fields are never chosen by auto: they cost warm users accuracy wherever it
// was measured (bench/RESULTS.md). Any other name is returned as it is. *note (when given): one
// line for the log saying what was chosen and why.
std::string resolve_metadata(const std::string& requested, const datasets::Dataset& dataset,
                             const std::string& model, std::string* note = nullptr);

// Every categorical field, the textual field (token hashes folded to text_buckets, a power of two
// that divides datasets::kTextHashBuckets) and every numerical field, standardised with the mean
// and stddev of its non-null values. Throws when the side has no metadata at all.
FeatureSpec make_feature_spec(const datasets::Metadata& metadata, uint32_t text_buckets, const char* side);

// The values behind the metadata table's categorical rows, {FIELD: [value of row 0, ...], ...}:
// what a model directory records (vocabularies.json) so that a warm start matches rows by value.
nlohmann::json spec_vocabularies(const datasets::Metadata& metadata, const FeatureSpec& spec);

// Fields are matched by name. Entity x reads dataset row dataset_row[x] (empty span: row x; -1:
// no metadata). Values outside the spec's vocabulary (added by a later import) are left out.
FeatureInputs encode_features(const datasets::Metadata& metadata, const FeatureSpec& spec,
                              uint32_t entities, std::span<const int64_t> dataset_row = {});

// Context: the named contextual categorical fields of the interactions (`all`: every one). Throws
// naming the dataset's fields when a name is not one of them or the dataset has none.
FeatureSpec make_context_spec(const datasets::Interactions& interactions, const std::vector<std::string>& names);

// The context-table rows of interaction row r (one per field of the spec with a value, weight 1),
// appended to in as one entity. Values outside the spec's vocabulary are left out.
void append_context(const datasets::Interactions& interactions, const FeatureSpec& spec, uint64_t r,
                    FeatureInputs& in);

// One entity per interaction row in rows.
FeatureInputs encode_context(const datasets::Interactions& interactions, const FeatureSpec& spec,
                             std::span<const uint64_t> rows);

}  // namespace tastebud::host
