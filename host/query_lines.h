// One line of a batch job: what became of it, the guards that turn any problem of a line into its
// "error" (so a line never ends the job), and the query a batch-infer line asks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/filters.h"
#include "host/model_data.h"
#include "tastebud/error.h"

namespace tastebud::host {

constexpr uint32_t kMaxResults = 500;  // the service's cap per query

struct LineOutcome {
  bool error = false;     // the line's "error" is set
  bool fallback = false;  // unknown user or item: popular items
};

// A query's own problem: it becomes the line's "error".
struct LineError : Error {
  using Error::Error;
};

bool blank(std::string_view line);
std::string dump_line(const nlohmann::ordered_json& j);
// A query line as JSON; LineError for a line that is not JSON, nests too deep, or holds a number
// a double cannot hold.
nlohmann::ordered_json parse_line(std::string_view line);
// The result line of a line whose problem came before it could be echoed as JSON: the input is
// echoed as its text.
std::string error_line(std::string_view line, const char* message, LineOutcome& result);

// The result line {"input", "output", "error"} of an input already parsed: whatever `answer`
// throws becomes the "error", with a null output. Nothing escapes, so a line never ends the job
// (these run inside OpenMP loops, where an escaping exception is std::terminate).
template <class Answer>
std::string answered_line(nlohmann::ordered_json input, LineOutcome& result, Answer&& answer) noexcept {
  try {
    nlohmann::ordered_json out{{"input", std::move(input)}, {"output", nullptr}, {"error", nullptr}};
    try {
      out["output"] = answer(out["input"]);
    } catch (const std::exception& e) {
      out["output"] = nullptr;
      out["error"] = e.what();
      result.error = true;
      result.fallback = false;
    }
    return dump_line(out);
  } catch (const std::exception& e) {
    return error_line("", e.what(), result);
  } catch (...) {
    return error_line("", "unknown error", result);
  }
}

// One result line for one query line. A line that is not JSON, not an object, or that `answer`
// throws on gets its message in "error" and a null output; nothing escapes.
template <class Answer>
std::string result_line(std::string_view line, const char* example, LineOutcome& result, Answer&& answer) noexcept {
  nlohmann::ordered_json input;
  try {
    input = parse_line(line);
  } catch (const std::exception& e) {
    return error_line(line, e.what(), result);
  }
  return answered_line(std::move(input), result, [&](const nlohmann::ordered_json& in) {
    if (!in.is_object()) throw LineError(fmt::format("a query must be a JSON object such as {}", example));
    return answer(in);
  });
}

// What a batch-infer line asks.
struct Query {
  std::optional<std::string> user_id, item_id;
  std::optional<std::vector<std::string>> item_list;
  uint32_t k = 25;
  FilterValues values;
  std::vector<float> context;  // the context vector; empty: none
  bool context_ignored = false;  // a "context" the model has no contextual fields for
  // "recentItems": items the asker interacted with since the model was trained, oldest first
  // (ids the model does not know are left out); they count as seen and as the latest history.
  std::vector<uint32_t> recent;
};

// A string field, absent or null as nullopt; LineError for any other type.
std::optional<std::string> string_field(const nlohmann::ordered_json& j, const char* key);
// "numResults" from 1 to max; `fallback` when absent.
uint32_t num_results_of(const nlohmann::ordered_json& j, uint32_t fallback, uint32_t max);
// The query of a batch-infer line (an object); `model` turns its "context" into a context vector,
// `item_index` its "recentItems" into items.
Query parse_query(const nlohmann::ordered_json& j, uint32_t default_k, const ModelData& model,
                  const std::unordered_map<std::string, uint32_t>& item_index);

}  // namespace tastebud::host
