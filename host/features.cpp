#include "host/features.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tastebud/error.h"

namespace tastebud::host {

MetadataSides parse_metadata_sides(const std::string& name) {
  if (name == "none") return {};
  if (name == "items") return {false, true};
  if (name == "users") return {true, false};
  if (name == "both") return {true, true};
  throw Error(fmt::format("unknown --metadata '{}': expected auto, none, items, users or both", name));
}

namespace {

// The names of a table's fields that would give a feature row or number.
std::vector<std::string> usable_fields(const datasets::Metadata& metadata) {
  std::vector<std::string> names;
  for (const auto& field : metadata.categorical) {
    if (field.vocabulary.size() > 0) names.push_back(field.name);
  }
  for (const auto& field : metadata.textual) names.push_back(field.name);
  for (const auto& field : metadata.numerical) {
    if (std::any_of(field.values.begin(), field.values.end(), [](float v) { return !std::isnan(v); })) {
      names.push_back(field.name);
    }
  }
  return names;
}

}  // namespace

std::string resolve_metadata(const std::string& requested, const datasets::Dataset& dataset,
                             const std::string& /*model: every model takes metadata*/, std::string* note) {
  if (requested != "auto") return requested;
  auto say = [&](const std::string& line) {
    if (note != nullptr) *note = line;
  };
  const std::vector<std::string> users = usable_fields(dataset.users), items = usable_fields(dataset.items);
  const std::string chosen = items.empty() ? "none" : "items";
  std::string why = items.empty() ? "the dataset has no Items fields to use" : fmt::format("items: {}", fmt::join(items, ", "));
  // User fields cost warm users accuracy in every measurement made (bench/RESULTS.md, issue 13):
  // they are used only when asked for.
  if (!users.empty()) why += fmt::format("; users' {} not used unless --metadata users or both", fmt::join(users, ", "));
  say(fmt::format("--metadata auto: {} ({}; --metadata none trains on ids only)", chosen, why));
  return chosen;
}

FeatureSpec make_feature_spec(const datasets::Metadata& metadata, uint32_t text_buckets, const char* side) {
  FeatureSpec spec;
  for (const auto& field : metadata.categorical) {
    spec.categorical.push_back(field.name);
    spec.categorical_rows.push_back(static_cast<uint32_t>(field.vocabulary.size()));
  }
  if (!metadata.textual.empty()) {
    TB_CHECK(text_buckets > 0 && (text_buckets & (text_buckets - 1)) == 0 &&
                 text_buckets <= datasets::kTextHashBuckets,
             fmt::format("--text-buckets {}: expected a power of two up to {}", text_buckets,
                         datasets::kTextHashBuckets));
    spec.textual = metadata.textual.front().name;
    spec.text_buckets = text_buckets;
  }
  for (const auto& field : metadata.numerical) {
    double sum = 0, sum2 = 0;
    uint64_t n = 0;
    for (float v : field.values) {
      if (std::isnan(v)) continue;
      sum += v;
      sum2 += static_cast<double>(v) * v;
      ++n;
    }
    const double mean = n > 0 ? sum / n : 0.0;
    const double var = n > 0 ? std::max(0.0, sum2 / n - mean * mean) : 0.0;
    spec.numerical.push_back(field.name);
    spec.numerical_mean.push_back(static_cast<float>(mean));
    // A constant field carries no information; stddev 1 keeps its standardised value at 0.
    spec.numerical_stddev.push_back(var > 0 ? static_cast<float>(std::sqrt(var)) : 1.0f);
  }
  TB_CHECK(spec.enabled(), fmt::format("--metadata: the dataset has no {} metadata fields to use "
                                       "(import a {} file with categorical, textual or numerical fields)",
                                       side, side));
  return spec;
}

nlohmann::json spec_vocabularies(const datasets::Metadata& metadata, const FeatureSpec& spec) {
  nlohmann::json fields = nlohmann::json::object();
  for (size_t k = 0; k < spec.categorical.size(); ++k) {
    nlohmann::json values = nlohmann::json::array();
    for (const auto& field : metadata.categorical) {
      if (field.name != spec.categorical[k]) continue;
      for (uint32_t v = 0; v < spec.categorical_rows[k] && v < field.vocabulary.size(); ++v)
        values.push_back(std::string(field.vocabulary[v]));
    }
    fields[spec.categorical[k]] = std::move(values);
  }
  return fields;
}

FeatureInputs encode_features(const datasets::Metadata& metadata, const FeatureSpec& spec,
                              uint32_t entities, std::span<const int64_t> dataset_row) {
  FeatureInputs in;
  in.entities = entities;
  auto row_of = [&](uint32_t x) -> int64_t { return dataset_row.empty() ? x : dataset_row[x]; };
  // Field k of the spec is field field_of[k] of the dataset, or -1 when it is gone.
  auto find = [](const auto& fields, const std::string& name) -> int64_t {
    for (size_t k = 0; k < fields.size(); ++k) {
      if (fields[k].name == name) return static_cast<int64_t>(k);
    }
    return -1;
  };
  if (spec.table_rows() > 0) {
    std::vector<int64_t> categorical(spec.categorical.size());
    for (size_t k = 0; k < spec.categorical.size(); ++k) categorical[k] = find(metadata.categorical, spec.categorical[k]);
    const int64_t text = spec.textual.empty() ? -1 : find(metadata.textual, spec.textual);
    std::vector<uint32_t> values;
    in.offsets.push_back(0);
    for (uint32_t x = 0; x < entities; ++x) {
      const int64_t r = row_of(x);
      for (size_t k = 0; k < categorical.size() && r >= 0; ++k) {
        if (categorical[k] < 0) continue;
        const auto& field = metadata.categorical[categorical[k]];
        values.assign(field.values.begin() + field.offsets[r], field.values.begin() + field.offsets[r + 1]);
        std::sort(values.begin(), values.end());
        values.erase(std::unique(values.begin(), values.end()), values.end());
        values.erase(std::remove_if(values.begin(), values.end(),
                                    [&](uint32_t v) { return v >= spec.categorical_rows[k]; }),
                     values.end());
        const uint64_t base = spec.categorical_base(k);
        for (uint32_t v : values) {
          in.rows.push_back(static_cast<uint32_t>(base + v));
          in.weights.push_back(1.0f / static_cast<float>(values.size()));
        }
      }
      if (text >= 0 && r >= 0) {
        // A bag of words: a bucket hit by several tokens is listed once with their share.
        const auto& field = metadata.textual[text];
        values.clear();
        for (uint64_t p = field.offsets[r]; p < field.offsets[r + 1]; ++p) {
          values.push_back(field.tokens[p] & (spec.text_buckets - 1));
        }
        std::sort(values.begin(), values.end());
        const uint64_t base = spec.text_base();
        for (size_t p = 0; p < values.size();) {
          size_t q = p;
          while (q < values.size() && values[q] == values[p]) ++q;
          in.rows.push_back(static_cast<uint32_t>(base + values[p]));
          in.weights.push_back(static_cast<float>(q - p) / static_cast<float>(values.size()));
          p = q;
        }
      }
      in.offsets.push_back(in.rows.size());
    }
  }
  in.numeric = static_cast<uint32_t>(spec.numerical.size());
  in.values.assign(static_cast<size_t>(entities) * in.numeric, 0.0f);
  for (size_t k = 0; k < spec.numerical.size(); ++k) {
    const int64_t field = find(metadata.numerical, spec.numerical[k]);
    if (field < 0) continue;
    const auto& values = metadata.numerical[field].values;
    for (uint32_t x = 0; x < entities; ++x) {
      const int64_t r = row_of(x);
      if (r < 0 || std::isnan(values[r])) continue;  // null: the mean, standardised to 0
      in.values[static_cast<size_t>(x) * in.numeric + k] =
          (values[r] - spec.numerical_mean[k]) / spec.numerical_stddev[k];
    }
  }
  return in;
}

FeatureSpec make_context_spec(const datasets::Interactions& interactions, const std::vector<std::string>& names) {
  FeatureSpec spec;
  std::vector<std::string> available;
  for (const auto& field : interactions.context) available.push_back(field.name);
  TB_CHECK(!available.empty(), "--context: the interactions have no contextual categorical fields "
                               "(string columns besides USER_ID, ITEM_ID, EVENT_TYPE and IMPRESSION)");
  const bool all = names.size() == 1 && names.front() == "all";
  for (const auto& field : interactions.context) {
    if (all || std::find(names.begin(), names.end(), field.name) != names.end()) {
      spec.categorical.push_back(field.name);
      spec.categorical_rows.push_back(static_cast<uint32_t>(field.vocabulary.size()));
    }
  }
  for (const std::string& name : names) {
    TB_CHECK(all || std::find(available.begin(), available.end(), name) != available.end(),
             fmt::format("--context: the interactions have no contextual field '{}'; they have {}", name,
                         fmt::join(available, ", ")));
  }
  return spec;
}

void append_context(const datasets::Interactions& interactions, const FeatureSpec& spec, uint64_t r,
                    FeatureInputs& in) {
  if (in.offsets.empty()) in.offsets.push_back(0);
  for (size_t k = 0; k < spec.categorical.size(); ++k) {
    for (const auto& field : interactions.context) {
      if (field.name != spec.categorical[k]) continue;
      const uint32_t v = field.values[r];
      if (v != datasets::kNullContext && v < spec.categorical_rows[k]) {
        in.rows.push_back(static_cast<uint32_t>(spec.categorical_base(k) + v));
        in.weights.push_back(1.0f);
      }
    }
  }
  in.offsets.push_back(in.rows.size());
  ++in.entities;
}

FeatureInputs encode_context(const datasets::Interactions& interactions, const FeatureSpec& spec,
                             std::span<const uint64_t> rows) {
  FeatureInputs in;
  in.offsets.reserve(rows.size() + 1);
  in.offsets.push_back(0);
  for (uint64_t r : rows) append_context(interactions, spec, r, in);
  return in;
}

}  // namespace tastebud::host
