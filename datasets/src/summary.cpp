#include "tastebud/datasets/summary.h"

#include <algorithm>
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tastebud::datasets {
namespace {

std::string utc_date(int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return "?";
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

// One line per field: "  GENRES  string, categorical, nullable".
std::string describe_schema(const std::string& json_text) {
  std::string out;
  try {
    const auto doc = nlohmann::json::parse(json_text);
    for (const auto& f : doc.at("fields")) {
      std::string type;
      bool nullable = false;
      if (f.at("type").is_array()) {
        for (const auto& t : f.at("type")) {
          if (t == "null") {
            nullable = true;
          } else {
            type = t.get<std::string>();
          }
        }
      } else {
        type = f.at("type").get<std::string>();
      }
      std::string flags;
      if (f.value("categorical", false)) flags += ", categorical";
      if (f.value("textual", false)) flags += ", textual";
      if (nullable) flags += ", nullable";
      out += fmt::format("    {:<28} {}{}\n", f.at("name").get<std::string>(), type, flags);
    }
  } catch (const nlohmann::json::exception&) {
    out += "    (unreadable schema)\n";
  }
  return out;
}

}  // namespace

DatasetSummary summarize(const Dataset& dataset) {
  DatasetSummary s;
  const Interactions& in = dataset.interactions;
  s.interactions = in.size();
  s.users = dataset.num_users();
  s.items = dataset.num_items();
  s.event_types = static_cast<uint32_t>(dataset.event_types.size());

  for (uint32_t u = 0; u < s.users; ++u) {
    const uint64_t count = in.user_offsets[u + 1] - in.user_offsets[u];
    if (count >= 2) {
      ++s.users_with_two_or_more;
    } else {
      ++s.users_below_two;
    }
  }
  // The columns are read once, their pages released behind the scan: a summary stays within a
  // small resident set whatever the dataset's size (import prints one after its bounded sort).
  std::vector<uint8_t> item_seen(s.items, 0);
  scan_released(in.item, [&](size_t, uint32_t i) { item_seen[i] = 1; });
  s.cold_items = static_cast<uint32_t>(std::count(item_seen.begin(), item_seen.end(), 0));

  std::vector<uint64_t> per_type(s.event_types, 0);
  scan_released(in.event_type, [&](size_t, uint32_t t) { ++per_type[t]; });
  for (uint32_t t = 0; t < s.event_types; ++t) {
    s.events_per_type.emplace_back(std::string(dataset.event_types[t]), per_type[t]);
  }
  if (!in.timestamp.empty()) {
    s.first_timestamp = s.last_timestamp = in.timestamp[0];
    scan_released(in.timestamp, [&](size_t, int64_t t) {
      s.first_timestamp = std::min(s.first_timestamp, t);
      s.last_timestamp = std::max(s.last_timestamp, t);
    });
  }
  s.users_with_metadata =
      static_cast<uint32_t>(std::count(dataset.users.has_row.begin(), dataset.users.has_row.end(), 1));
  s.items_with_metadata =
      static_cast<uint32_t>(std::count(dataset.items.has_row.begin(), dataset.items.has_row.end(), 1));

  if (s.interactions < kMinInteractionsToLearn) {
    s.warnings.push_back(fmt::format("only {} interactions: with fewer than {} a model has too little "
                                     "to learn from",
                                     s.interactions, kMinInteractionsToLearn));
  }
  if (s.users_with_two_or_more < kMinUsersWithTwoInteractions) {
    s.warnings.push_back(fmt::format("only {} users have 2 or more interactions: with fewer than {} "
                                     "there is too little to learn and to evaluate on",
                                     s.users_with_two_or_more, kMinUsersWithTwoInteractions));
  }
  if (s.items - s.cold_items < 2) {
    s.warnings.push_back(fmt::format("only {} item(s) have interactions: there is nothing to rank",
                                     s.items - s.cold_items));
  }
  // Unix seconds reach 1e11 in the year 5138; larger values are almost surely milliseconds.
  if (s.last_timestamp > 100'000'000'000) {
    s.warnings.push_back("TIMESTAMP values look like milliseconds; they must be Unix seconds");
  }
  return s;
}

std::string format_summary(const Dataset& dataset) {
  const DatasetSummary s = summarize(dataset);
  std::string out = fmt::format("dataset {}\n", dataset.dir.string());
  out += fmt::format("  interactions               {}\n", s.interactions);
  out += fmt::format("  users                      {} ({} with metadata)\n", s.users,
                     s.users_with_metadata);
  out += fmt::format("    with 2+ interactions     {}\n", s.users_with_two_or_more);
  out += fmt::format("    with fewer than 2        {}\n", s.users_below_two);
  out += fmt::format("  items                      {} ({} with metadata)\n", s.items,
                     s.items_with_metadata);
  out += fmt::format("    cold (no interactions)   {}\n", s.cold_items);
  out += fmt::format("  event types                {}\n", s.event_types);
  for (const auto& [name, count] : s.events_per_type) {
    out += fmt::format("    {:<24} {}\n", name.empty() ? "(none)" : name, count);
  }
  if (s.interactions > 0) {
    out += fmt::format("  time span                  {} .. {} UTC\n", utc_date(s.first_timestamp),
                       utc_date(s.last_timestamp));
  }
  for (auto [title, text] : {std::pair{"interactions", &dataset.interactions_schema},
                             std::pair{"users", &dataset.users_schema},
                             std::pair{"items", &dataset.items_schema}}) {
    if (text->empty()) continue;
    out += fmt::format("  schema {} ({}/schema/{}.json)\n", title, dataset.dir.string(), title);
    out += describe_schema(*text);
  }
  for (const std::string& w : s.warnings) out += fmt::format("warning: {}\n", w);
  return out;
}

}  // namespace tastebud::datasets
