// What shaped batch answers read about the catalog beyond the model (issue 14): the users'
// metadata (IF CurrentUser, CurrentUser values, UserID filters), each item's age (exploration,
// freshness), and the item metadata columns an answer returns (--metadata-columns).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string_view>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/filters.h"
#include "host/model_data.h"
#include "tastebud/datasets/dataset.h"

namespace tastebud::host {

// The dataset's users' metadata columns and event types in the order of `user_ids` (the model's),
// matched by id.
UserCatalog user_catalog(const std::vector<std::string>& user_ids, const datasets::Dataset& dataset);

// Per model item: its CREATION_TIMESTAMP, else its first interaction (NaN: neither), and in `now`
// the dataset's latest interaction timestamp. row_of[i]: item i's dataset row (-1: none);
// to_model[d]: dataset item d's model index (-1: none).
std::vector<double> item_times(const datasets::Dataset& dataset, std::span<const int64_t> row_of,
                               std::span<const int64_t> to_model, double& now);

// An Items field an answer returns with each item.
struct MetadataColumn {
  std::string name;
  bool categorical = true;
  size_t column = 0;  // in ItemCatalog::categorical or ::numerical
};

// The catalog's columns of these field names; an Error names a field the items lack.
std::vector<MetadataColumn> find_metadata_columns(const std::vector<std::string>& names, const ItemCatalog& catalog);

// {"GENRES": "Comedy|Drama", "PRICE": 15.72} of one item: categorical values joined by '|',
// whole numbers as integers, other numbers as the shortest decimal of their float, null fields
// null; null for item -1 (an id the model never saw).
nlohmann::ordered_json item_metadata(const ItemCatalog& catalog, std::span<const MetadataColumn> columns, int64_t item);

// The querying user's events by external id, for Interactions.EVENT_TYPE filters.
using UserEventsFn = std::function<std::vector<UserEvent>(std::string_view user_id)>;

// The catalog view filters need (metadata, event types) and the users' events, from the dataset
// the model was trained on, mapped to the model's item order.
struct InferenceContext {
  ItemCatalog catalog;       // with the users' metadata and the dataset's latest timestamp (now)
  UserEventsFn user_events;  // may be empty: no events known
  // Per model item: CREATION_TIMESTAMP, else its first interaction (Unix seconds); NaN unknown.
  // Empty: nothing known (an item without interactions then counts as new).
  std::vector<double> item_time;
};
InferenceContext load_context(const ModelData& model, const std::filesystem::path& dataset_dir);

}  // namespace tastebud::host
