#include "host/catalog_view.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tastebud/error.h"

namespace tastebud::host {
namespace {

using json = nlohmann::ordered_json;

// A float column's value as the shortest decimal that reads back as the same float (15.72, not
// 15.720000267028809).
double shortest_float(double x) { return std::strtod(fmt::format("{}", static_cast<float>(x)).c_str(), nullptr); }

}  // namespace

UserCatalog user_catalog(const std::vector<std::string>& user_ids, const datasets::Dataset& dataset) {
  UserCatalog users;
  users.user_ids = user_ids;
  const uint32_t n = static_cast<uint32_t>(user_ids.size());
  std::unordered_map<std::string, uint32_t> rows;
  for (uint32_t d = 0; d < dataset.num_users(); ++d) rows.emplace(std::string(dataset.user_ids[d]), d);
  std::vector<int64_t> row_of(n, -1);
  for (uint32_t u = 0; u < n; ++u)
    if (const auto it = rows.find(user_ids[u]); it != rows.end()) row_of[u] = it->second;
  for (const datasets::CategoricalField& f : dataset.users.categorical) {
    ItemCategoricalColumn col;
    col.name = f.name;
    for (size_t k = 0; k < f.vocabulary.size(); ++k) col.vocabulary.emplace_back(f.vocabulary[k]);
    col.offsets.push_back(0);
    for (uint32_t u = 0; u < n; ++u) {
      if (row_of[u] >= 0 && !f.offsets.empty())
        for (uint64_t k = f.offsets[row_of[u]]; k < f.offsets[row_of[u] + 1]; ++k) col.values.push_back(f.values[k]);
      col.offsets.push_back(col.values.size());
    }
    users.categorical.push_back(std::move(col));
  }
  for (const datasets::NumericalField& f : dataset.users.numerical) {
    ItemNumericalColumn col{f.name, std::vector<double>(n, NAN)};
    for (uint32_t u = 0; u < n; ++u)
      if (row_of[u] >= 0 && !f.values.empty()) col.values[u] = f.values[row_of[u]];
    users.numerical.push_back(std::move(col));
  }
  const datasets::Interactions& x = dataset.interactions;
  users.event_type_offsets.assign(1, 0);
  for (uint32_t u = 0; u < n; ++u) {
    const size_t first = users.event_types.size();
    if (row_of[u] >= 0 && !x.event_type.empty())
      for (uint64_t r = x.user_offsets[row_of[u]]; r < x.user_offsets[row_of[u] + 1]; ++r) users.event_types.push_back(x.event_type[r]);
    std::sort(users.event_types.begin() + first, users.event_types.end());
    users.event_types.erase(std::unique(users.event_types.begin() + first, users.event_types.end()), users.event_types.end());
    users.event_type_offsets.push_back(users.event_types.size());
  }
  return users;
}

std::vector<double> item_times(const datasets::Dataset& dataset, std::span<const int64_t> row_of,
                               std::span<const int64_t> to_model, double& now) {
  std::vector<double> time(row_of.size(), NAN);
  const datasets::Interactions& x = dataset.interactions;
  for (size_t r = 0; r < x.size(); ++r) {
    const double t = static_cast<double>(x.timestamp[r]);
    if (std::isnan(now) || t > now) now = t;
    const int64_t item = to_model[x.item[r]];
    if (item >= 0 && (std::isnan(time[item]) || t < time[item])) time[item] = t;
  }
  const std::span<const int64_t> created = dataset.items.creation_timestamp;
  for (size_t i = 0; i < row_of.size(); ++i)
    if (row_of[i] >= 0 && !created.empty() && created[row_of[i]] != INT64_MIN) time[i] = static_cast<double>(created[row_of[i]]);
  return time;
}

std::vector<MetadataColumn> find_metadata_columns(const std::vector<std::string>& names, const ItemCatalog& c) {
  std::vector<MetadataColumn> out;
  for (const std::string& name : names) {
    MetadataColumn column{name};
    bool found = false;
    for (size_t k = 0; k < c.categorical.size() && !found; ++k)
      if (c.categorical[k].name == name) column = {name, true, k}, found = true;
    for (size_t k = 0; k < c.numerical.size() && !found; ++k)
      if (c.numerical[k].name == name) column = {name, false, k}, found = true;
    if (!found) {
      std::vector<std::string> known;
      for (const auto& col : c.categorical) known.push_back(col.name);
      for (const auto& col : c.numerical) known.push_back(col.name);
      throw Error(fmt::format("metadata columns: the items have no categorical or numerical field Items.{}{}{}", name,
                              known.empty() ? " (the model's dataset is not open or has no Items fields)" : "; they have ",
                              fmt::join(known, ", ")));
    }
    out.push_back(column);
  }
  return out;
}

json item_metadata(const ItemCatalog& catalog, std::span<const MetadataColumn> columns, int64_t item) {
  if (item < 0) return nullptr;
  json out = json::object();
  for (const MetadataColumn& m : columns) {
    if (m.categorical) {
      const ItemCategoricalColumn& col = catalog.categorical[m.column];
      std::string text;
      for (uint64_t k = col.offsets[item]; k < col.offsets[item + 1]; ++k)
        text += (text.empty() ? "" : "|") + col.vocabulary[col.values[k]];
      out[m.name] = col.offsets[item] == col.offsets[item + 1] ? json(nullptr) : json(text);
    } else {
      const double x = catalog.numerical[m.column].values[item];
      out[m.name] = std::isnan(x)                                   ? json(nullptr)
                    : x == std::floor(x) && std::fabs(x) < 9.0e15 ? json(static_cast<int64_t>(x))
                                                                  : json(shortest_float(x));
    }
  }
  return out;
}

InferenceContext load_context(const ModelData& model, const std::filesystem::path& dataset_dir) {
  InferenceContext context;
  ItemCatalog& catalog = context.catalog;
  catalog.item_ids = model.item_ids;
  if (dataset_dir.empty()) return context;
  auto dataset = std::make_shared<datasets::Dataset>(datasets::Dataset::open(dataset_dir));
  const std::unordered_map<std::string, uint32_t> model_items = index_ids(model.item_ids);
  // Dataset rows may differ from model rows after an incremental import: match them by id.
  const uint32_t n = static_cast<uint32_t>(model.item_ids.size());
  std::vector<int64_t> row_of(n, -1);
  auto to_model = std::make_shared<std::vector<int64_t>>(dataset->num_items(), -1);
  for (uint32_t d = 0; d < dataset->num_items(); ++d) {
    const auto it = model_items.find(std::string(dataset->item_ids[d]));
    if (it != model_items.end()) {
      row_of[it->second] = d;
      (*to_model)[d] = it->second;
    }
  }
  const datasets::Metadata& items = dataset->items;
  for (const datasets::CategoricalField& f : items.categorical) {
    ItemCategoricalColumn col;
    col.name = f.name;
    for (size_t k = 0; k < f.vocabulary.size(); ++k) col.vocabulary.emplace_back(f.vocabulary[k]);
    col.offsets.push_back(0);
    for (uint32_t i = 0; i < n; ++i) {
      if (row_of[i] >= 0 && !f.offsets.empty()) {
        for (uint64_t k = f.offsets[row_of[i]]; k < f.offsets[row_of[i] + 1]; ++k) col.values.push_back(f.values[k]);
      }
      col.offsets.push_back(col.values.size());
    }
    catalog.categorical.push_back(std::move(col));
  }
  for (const datasets::NumericalField& f : items.numerical) {
    ItemNumericalColumn col{f.name, std::vector<double>(n, NAN)};
    for (uint32_t i = 0; i < n; ++i)
      if (row_of[i] >= 0 && !f.values.empty()) col.values[i] = f.values[row_of[i]];
    catalog.numerical.push_back(std::move(col));
  }
  if (!items.creation_timestamp.empty()) {
    ItemNumericalColumn col{"CREATION_TIMESTAMP", std::vector<double>(n, NAN)};
    for (uint32_t i = 0; i < n; ++i) {
      if (row_of[i] >= 0 && items.creation_timestamp[row_of[i]] != INT64_MIN)
        col.values[i] = static_cast<double>(items.creation_timestamp[row_of[i]]);
    }
    catalog.numerical.push_back(std::move(col));
  }
  for (const datasets::TextualField& f : items.textual) catalog.textual.push_back(f.name);
  for (size_t k = 0; k < dataset->event_types.size(); ++k) catalog.event_types.emplace_back(dataset->event_types[k]);
  catalog.users = user_catalog(model.user_ids, *dataset);
  context.item_time = item_times(*dataset, row_of, *to_model, catalog.now);

  auto users = std::make_shared<std::unordered_map<std::string, uint32_t>>();
  users->reserve(dataset->num_users());
  for (uint32_t u = 0; u < dataset->num_users(); ++u) users->emplace(std::string(dataset->user_ids[u]), u);
  context.user_events = [dataset, users, to_model](std::string_view user_id) {
    std::vector<UserEvent> events;
    const auto it = users->find(std::string(user_id));
    if (it == users->end()) return events;
    const datasets::Interactions& x = dataset->interactions;
    for (uint64_t r = x.user_offsets[it->second]; r < x.user_offsets[it->second + 1]; ++r) {
      const int64_t item = (*to_model)[x.item[r]];
      if (item >= 0) events.push_back({static_cast<uint32_t>(item), x.event_type.empty() ? 0u : x.event_type[r]});
    }
    return events;
  };
  return context;
}


}  // namespace tastebud::host
