#include "host/offline_eval.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tastebud/datasets/csv.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/error.h"
#include "tastebud/json_input.h"

namespace tastebud::host {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Item ids as indices: the dataset's catalog first (coverage counts those), then any other id a
// truth file or a list names, so that they still match each other.
class ItemIndex {
 public:
  explicit ItemIndex(const datasets::Dataset* dataset) {
    if (dataset == nullptr) return;
    for (size_t i = 0; i < dataset->item_ids.size(); ++i) index_.emplace(std::string(dataset->item_ids[i]), i);
    catalog_ = static_cast<uint32_t>(dataset->item_ids.size());
    fixed_ = true;
  }
  uint32_t of(const std::string& id) {
    const auto [it, added] = index_.emplace(id, static_cast<uint32_t>(index_.size()));
    if (added && !fixed_) catalog_ = static_cast<uint32_t>(index_.size());
    return it->second;
  }
  uint32_t catalog() const { return catalog_; }

 private:
  std::unordered_map<std::string, uint32_t> index_;
  uint32_t catalog_ = 0;
  bool fixed_ = false;
};

// What a dataset tells about items beyond their ids.
struct ItemFacts {
  std::vector<uint32_t> users;                   // distinct users who interacted, per item
  uint32_t num_users = 0;
  std::vector<std::vector<uint64_t>> attributes;  // sorted (field, value) codes per item

  explicit ItemFacts(const datasets::Dataset& d) : users(d.num_items(), 0), num_users(d.num_users()), attributes(d.num_items()) {
    const auto& rows = d.interactions;
    std::vector<uint32_t> last(d.num_items(), UINT32_MAX);
    for (uint64_t r = 0; r < rows.size(); ++r) {
      if (last[rows.item[r]] != rows.user[r]) {
        last[rows.item[r]] = rows.user[r];
        ++users[rows.item[r]];
      }
    }
    for (size_t f = 0; f < d.items.categorical.size(); ++f) {
      const datasets::CategoricalField& field = d.items.categorical[f];
      for (uint32_t i = 0; i < d.num_items() && i + 1 < field.offsets.size(); ++i) {
        for (uint64_t k = field.offsets[i]; k < field.offsets[i + 1]; ++k) {
          attributes[i].push_back(static_cast<uint64_t>(f) << 32 | field.values[k]);
        }
      }
    }
    for (auto& a : attributes) std::sort(a.begin(), a.end());
  }

  double novelty(uint32_t item) const {
    const double share = (static_cast<double>(item < users.size() ? users[item] : 0) + 1.0) / (num_users + 1.0);
    return -std::log2(share);
  }
  bool cold(uint32_t item) const { return item >= users.size() || users[item] == 0; }
  // 1 - Jaccard of the two items' attribute sets; -1 when either has none.
  double distance(uint32_t a, uint32_t b) const {
    if (a >= attributes.size() || b >= attributes.size() || attributes[a].empty() || attributes[b].empty()) return -1;
    const auto& x = attributes[a];
    const auto& y = attributes[b];
    size_t common = 0;
    for (size_t i = 0, j = 0; i < x.size() && j < y.size();) {
      if (x[i] == y[j]) ++common, ++i, ++j;
      else if (x[i] < y[j]) ++i;
      else ++j;
    }
    return 1.0 - static_cast<double>(common) / static_cast<double>(x.size() + y.size() - common);
  }
};

// Novelty, diversity and cold share of one list.
void beyond_accuracy(const ItemFacts& facts, std::span<const uint32_t> list, std::vector<double>& out) {
  double novelty = 0, cold = 0, distance = 0;
  uint64_t pairs = 0;
  for (size_t a = 0; a < list.size(); ++a) {
    novelty += facts.novelty(list[a]);
    cold += facts.cold(list[a]);
    for (size_t b = a + 1; b < list.size(); ++b) {
      const double d = facts.distance(list[a], list[b]);
      if (d >= 0) distance += d, ++pairs;
    }
  }
  const double n = static_cast<double>(std::max<size_t>(list.size(), 1));
  out.push_back(novelty / n);
  out.push_back(pairs > 0 ? distance / static_cast<double>(pairs) : 0.0);
  out.push_back(cold / n);
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Predictions read_predictions(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open the predictions", path.string()));
  Predictions p;
  p.path = path;
  std::string text;
  for (uint64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path.string(), line);
    const json j = parse_json(text, where);
    if (!j.is_object()) throw Error(where + ": not a JSON object");
    const json& input = j.contains("input") ? j.at("input") : json();
    if (!input.is_object()) throw Error(where + ": no \"input\" object (expected the batch layout)");
    if (!input.contains("userId")) {
      ++p.other_lines;
      continue;
    }
    if (!input.at("userId").is_string()) throw Error(where + ": \"input\".\"userId\" is not a string");
    std::vector<std::string> items;
    const json& output = j.contains("output") ? j.at("output") : json();
    if (output.is_null()) {
      ++p.failed_lines;
    } else {
      const json& list = output.is_object() && output.contains("recommendedItems") ? output.at("recommendedItems") : json();
      if (!list.is_array()) throw Error(where + ": \"output\" has no \"recommendedItems\" list");
      for (const json& item : list) {
        if (!item.is_string()) throw Error(where + ": \"recommendedItems\" holds a value that is not a string");
        items.push_back(item.get<std::string>());
      }
    }
    p.by_user.emplace(input.at("userId").get<std::string>(), std::move(items));  // the first line of a user wins
  }
  return p;
}

std::map<std::string, std::vector<std::string>> read_truth(const fs::path& path) {
  datasets::CsvReader reader(path);
  datasets::CsvRecord record;
  if (!reader.next(record)) throw Error(fmt::format("{}: empty; expected a header with USER_ID and ITEM_ID", path.string()));
  std::vector<std::string> header;
  size_t user_field = SIZE_MAX, item_field = SIZE_MAX;
  for (size_t f = 0; f < record.fields.size(); ++f) {
    header.emplace_back(record.fields[f]);
    if (upper(record.fields[f]) == "USER_ID") user_field = f;
    if (upper(record.fields[f]) == "ITEM_ID") item_field = f;
  }
  if (user_field == SIZE_MAX || item_field == SIZE_MAX) {
    throw Error(fmt::format("{}: line 1: the header needs USER_ID and ITEM_ID columns; it has {}", path.string(),
                            fmt::join(header, ", ")));
  }
  reader.set_field_names(header);
  std::map<std::string, std::vector<std::string>> truth;
  while (reader.next(record)) {
    for (size_t f : {user_field, item_field}) {
      if (f >= record.fields.size() || record.fields[f].empty()) {
        throw Error(fmt::format("{}: line {}, {}: empty", path.string(), record.line, reader.field_label(f)));
      }
    }
    truth[std::string(record.fields[user_field])].emplace_back(record.fields[item_field]);
  }
  if (truth.empty()) throw Error(fmt::format("{}: no interactions under the header", path.string()));
  return truth;
}

OfflineEvalReport evaluate_predictions(const OfflineEvalOptions& options) {
  TB_CHECK(options.predictions.size() == 1 || options.predictions.size() == 2,
           "evaluate: give one predictions file, or two to compare");
  std::optional<datasets::Dataset> dataset;
  if (!options.data.empty()) dataset = datasets::Dataset::open(options.data);
  std::optional<ItemFacts> facts;
  if (dataset) facts.emplace(*dataset);
  ItemIndex items(dataset ? &*dataset : nullptr);
  const auto truth = read_truth(options.truth);
  std::vector<Predictions> systems;
  for (const fs::path& p : options.predictions) systems.push_back(read_predictions(p));
  // Index every id before any list is scored, so the catalog is complete for coverage.
  std::vector<std::vector<uint32_t>> relevant;
  for (const auto& [user, ids] : truth) {
    std::vector<uint32_t> r;
    for (const std::string& id : ids) r.push_back(items.of(id));
    std::sort(r.begin(), r.end());
    r.erase(std::unique(r.begin(), r.end()), r.end());
    relevant.push_back(std::move(r));
  }
  std::vector<std::vector<std::vector<uint32_t>>> lists(systems.size());
  OfflineEvalReport report;
  report.truth_users = truth.size();
  for (size_t s = 0; s < systems.size(); ++s) {
    uint64_t missing = 0;
    for (const auto& [user, ids] : truth) {
      const auto it = systems[s].by_user.find(user);
      missing += it == systems[s].by_user.end();
      std::vector<uint32_t> list;
      if (it != systems[s].by_user.end()) {
        for (size_t k = 0; k < it->second.size() && k < 25; ++k) list.push_back(items.of(it->second[k]));
      }
      lists[s].push_back(std::move(list));
    }
    report.missing_users.push_back(missing);
  }
  std::vector<UserValues> values(systems.size());
  for (size_t s = 0; s < systems.size(); ++s) {
    UserValues& v = values[s];
    v.names = UserValues::list_metric_names();
    if (facts) v.names.insert(v.names.end(), {"novelty", "diversity", "cold_share"});
    v.list_size = 25;
    v.num_items = items.catalog();
    for (size_t u = 0; u < relevant.size(); ++u) {
      v.add_list(lists[s][u], relevant[u]);
      if (facts) beyond_accuracy(*facts, lists[s][u], v.values);
    }
    report.systems.push_back(summarize(v, options.bootstrap));
  }
  if (values.size() == 2) report.paired = compare_paired(values[0], values[1], options.bootstrap);
  return report;
}

void print_report(const OfflineEvalOptions& options, const OfflineEvalReport& report, std::ostream& out) {
  out << fmt::format("{} users in {}\n", report.truth_users, options.truth.string());
  std::vector<std::string> headers;
  std::vector<const Metrics*> columns;
  for (size_t s = 0; s < report.systems.size(); ++s) {
    const std::string name = options.predictions[s].filename().string();
    out << fmt::format("{}: {} of them without a list (scored as empty)\n", options.predictions[s].string(),
                       report.missing_users[s]);
    headers.push_back(name);
    columns.push_back(&report.systems[s]);
  }
  if (report.systems.size() == 2) {
    headers.push_back("second - first");
    columns.push_back(&report.paired);
  }
  out << "\n" << metrics_table(headers, columns);
  out << "\n95% bootstrap intervals over users; p: two-sided paired bootstrap p-value of no difference\n";
}

}  // namespace tastebud::host
