#include "host/query_lines.h"

#include <algorithm>
#include <cctype>

#include "tastebud/engine/features.h"
#include "tastebud/json_input.h"

namespace tastebud::host {

using json = nlohmann::ordered_json;

bool blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

std::string dump_line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A query line as JSON; LineError for a line that is not JSON, nests too deep, or holds a number
// a double cannot hold (nlohmann throws out_of_range for 1e999, not parse_error).
json parse_line(std::string_view line) {
  if (json_nested_deeper_than(line, kMaxJsonDepth))
    throw LineError(fmt::format("not a query: JSON nested deeper than {} levels", kMaxJsonDepth));
  try {
    return json::parse(line);
  } catch (const json::exception& e) {
    throw LineError(fmt::format("not valid JSON: {}", e.what()));
  }
}

// The result line of a line whose problem came before it could be echoed as JSON: the input is
// echoed as its text.
std::string error_line(std::string_view line, const char* message, LineOutcome& result) {
  result.error = true;
  result.fallback = false;
  try {
    return dump_line(json{{"input", std::string(line)}, {"output", nullptr}, {"error", message}});
  } catch (...) {  // out of memory for the echo: the line's error still comes out
    return R"({"input": null, "output": null, "error": "the line could not be echoed"})";
  }
}

std::optional<std::string> string_field(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw LineError(fmt::format("{} must be a string, not {}", key, it->dump()));
  return it->get<std::string>();
}

uint32_t num_results_of(const json& j, uint32_t fallback, uint32_t max) {
  const auto it = j.find("numResults");
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > max)
    throw LineError(fmt::format("numResults must be an integer from 1 to {}, not {}", max, it->dump()));
  return static_cast<uint32_t>(it->get<int64_t>());
}

namespace {

// The context vector of a query's "context" object.
std::vector<float> context_of(const json& object, const ModelData& model) {
  FeatureInputs rows;
  rows.entities = 1;
  rows.offsets = {0};
  for (auto v = object.begin(); v != object.end(); ++v) {
    const auto field = std::find_if(model.context.begin(), model.context.end(),
                                    [&](const ContextValues& c) { return c.field == v.key(); });
    if (field == model.context.end()) {
      std::string names;
      for (const ContextValues& c : model.context) names += (names.empty() ? "" : ", ") + c.field;
      throw LineError(fmt::format("context.{}: the model was trained with the contextual fields {}", v.key(), names));
    }
    if (!v.value().is_string()) throw LineError(fmt::format("context.{} must be a string", v.key()));
    const auto row = field->rows.find(v.value().get<std::string>());
    if (row == field->rows.end()) continue;  // a value the model never saw adds nothing
    rows.rows.push_back(row->second);
    rows.weights.push_back(1.0f);
  }
  rows.offsets.push_back(rows.rows.size());
  return context_vector(*model.params, rows, 0);
}

}  // namespace

// "recentItems": an array of item id strings, oldest first; the ones the model knows.
std::vector<uint32_t> recent_items_of(const json& list, const std::unordered_map<std::string, uint32_t>& item_index) {
  if (!list.is_array()) throw LineError("recentItems must be an array of item ids, oldest first");
  if (list.size() > kMaxResults) throw LineError(fmt::format("recentItems: {} items, more than {}", list.size(), kMaxResults));
  std::vector<uint32_t> out;
  for (const json& v : list) {
    if (!v.is_string()) throw LineError(fmt::format("recentItems must hold item id strings, not {}", v.dump()));
    if (const auto it = item_index.find(v.get<std::string>()); it != item_index.end()) out.push_back(it->second);
  }
  return out;
}

Query parse_query(const json& j, uint32_t default_k, const ModelData& model,
                  const std::unordered_map<std::string, uint32_t>& item_index) {
  Query q;
  q.user_id = string_field(j, "userId");
  q.item_id = string_field(j, "itemId");
  if (!q.user_id && !q.item_id)
    throw LineError("the query names neither a userId nor an itemId");
  if (q.item_id && j.contains("itemList") && !j.at("itemList").is_null())
    throw LineError("itemList ranks items for a userId; give no itemId with it");
  if (const auto it = j.find("itemList"); it != j.end() && !it->is_null()) {
    if (!q.user_id) throw LineError("itemList needs a userId to rank for");
    if (!it->is_array()) throw LineError("itemList must be an array of item ids");
    std::vector<std::string> list;
    for (const json& v : *it) {
      if (!v.is_string()) throw LineError(fmt::format("itemList must hold item id strings, not {}", v.dump()));
      list.push_back(v.get<std::string>());
    }
    q.item_list = std::move(list);
  }
  q.k = num_results_of(j, default_k, kMaxResults);
  if (const auto it = j.find("recentItems"); it != j.end() && !it->is_null()) q.recent = recent_items_of(*it, item_index);
  if (const auto it = j.find("filterValues"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw LineError("filterValues must be an object, e.g. {\"GENRE\": \"\\\"Comedy\\\"\"}");
    for (auto v = it->begin(); v != it->end(); ++v) {
      if (!v.value().is_string())
        throw LineError(fmt::format("filterValues.{} must be a string of quoted values, e.g. \"\\\"Comedy\\\"\"", v.key()));
      q.values[v.key()] = v.value().get<std::string>();
    }
  }
  if (const auto it = j.find("context"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw LineError("context must be an object of field values, e.g. {\"DEVICE_TYPE\": \"mobile\"}");
    if (model.params && model.params->config.has_context()) q.context = context_of(*it, model);
    else q.context_ignored = !it->empty();
  }
  return q;
}

}  // namespace tastebud::host
