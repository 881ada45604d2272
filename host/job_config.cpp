#include "host/job_config.h"

#include <cmath>
#include <cstdlib>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tastebud/error.h"
#include "tastebud/read_file.h"
#include "tastebud/json_input.h"

namespace tastebud::host {
namespace {

using json = nlohmann::json;

// Errors of one configuration text: "SOURCE: KEY: REASON".
struct Checker {
  std::string_view source;

  [[noreturn]] void fail(std::string_view key, const std::string& reason) const {
    throw Error(fmt::format("{}: {}: {}", source, key, reason));
  }

  // A number written as a JSON number or as a string holding one, within [lo, hi].
  double number(const json& value, std::string_view key, double lo, double hi) const {
    double x = NAN;
    if (value.is_number()) {
      x = value.get<double>();
    } else if (value.is_string()) {
      const std::string text = value.get<std::string>();
      char* end = nullptr;
      x = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0') fail(key, fmt::format("\"{}\" is not a number", text));
    } else {
      fail(key, fmt::format("expected a number, found {}", shortened(value.dump())));
    }
    if (!(x >= lo && x <= hi)) fail(key, fmt::format("{} is out of range: expected {} to {}", shortened(value.dump()), lo, hi));
    return x;
  }

  const json& object(const json& value, std::string_view key) const {
    if (!value.is_object()) fail(key, fmt::format("expected an object, found {}", shortened(value.dump())));
    return value;
  }

  std::string string(const json& value, std::string_view key) const {
    if (!value.is_string()) fail(key, fmt::format("expected a string, found {}", shortened(value.dump())));
    return value.get<std::string>();
  }

  [[noreturn]] void unknown(std::string_view key, std::string_view known) const {
    fail(key, fmt::format("unknown key; expected one of {}", known));
  }
};

void read_exploration(const Checker& check, const json& section, JobConfig& config) {
  for (const auto& [key, value] : check.object(section, "itemExplorationConfig").items()) {
    const std::string path = "itemExplorationConfig." + key;
    if (key == "explorationWeight") config.exploration_weight = check.number(value, path, 0, 1);
    else if (key == "explorationItemAgeCutOff") {
      config.exploration_age_cutoff = check.number(value, path, 0, 1e6);
      if (*config.exploration_age_cutoff <= 0) check.fail(path, "must be more than 0 days");
    } else check.unknown(path, "explorationWeight, explorationItemAgeCutOff");
  }
}

void read_influence(const Checker& check, const json& section, JobConfig& config) {
  for (const auto& [key, value] : check.object(section, "rankingInfluence").items()) {
    const std::string path = "rankingInfluence." + key;
    if (key == "POPULARITY") config.popularity_influence = check.number(value, path, 0, 1);
    else if (key == "FRESHNESS") config.freshness_influence = check.number(value, path, 0, 1);
    else check.unknown(path, "POPULARITY, FRESHNESS");
  }
}

Promotion read_promotion(const Checker& check, const json& entry, const std::string& at) {
  Promotion p;
  bool has_percent = false;
  for (const auto& [key, value] : check.object(entry, at).items()) {
    const std::string path = at + "." + key;
    if (key == "name") {
      p.name = check.string(value, path);
      if (p.name.empty()) check.fail(path, "must not be empty");
    } else if (key == "percentPromotedItems") {
      p.percent = check.number(value, path, 1, 100);
      has_percent = true;
    } else if (key == "filterExpression") {
      p.filter_expression = check.string(value, path);
      try {
        check_filter_syntax(p.filter_expression);
      } catch (const FilterError& e) {
        check.fail(path, e.what());
      }
    } else if (key == "filterValues") {
      for (const auto& [name, v] : check.object(value, path).items())
        p.filter_values[name] = check.string(v, path + "." + name);
    } else {
      check.unknown(path, "name, percentPromotedItems, filterExpression, filterValues");
    }
  }
  if (p.name.empty()) check.fail(at + ".name", "a promotion needs a name");
  if (!has_percent) check.fail(at + ".percentPromotedItems", "a promotion needs its share, 1 to 100");
  if (p.filter_expression.empty()) check.fail(at + ".filterExpression", "a promotion needs a filter expression");
  for (const std::string& name : include_parameters(p.filter_expression)) {
    if (!p.filter_values.contains(name))
      check.fail(at + ".filterValues",
                 fmt::format("has no value for ${}, which filterExpression's INCLUDE needs", name));
  }
  return p;
}

void read_promotions(const Checker& check, const json& section, JobConfig& config) {
  if (!section.is_array()) check.fail("promotions", fmt::format("expected an array, found {}", shortened(section.dump())));
  for (size_t k = 0; k < section.size(); ++k) {
    Promotion p = read_promotion(check, section[k], fmt::format("promotions[{}]", k));
    for (const Promotion& other : config.promotions)
      if (other.name == p.name) check.fail(fmt::format("promotions[{}].name", k), fmt::format("'{}' is used twice", p.name));
    config.promotions.push_back(std::move(p));
  }
  double total = 0;
  for (const Promotion& p : config.promotions) total += p.percent;
  if (total > 100) check.fail("promotions", fmt::format("the shares add up to {}%, more than 100%", total));
}

void read_metadata(const Checker& check, const json& section, JobConfig& config) {
  for (const auto& [key, value] : check.object(section, "metadataColumns").items()) {
    const std::string path = "metadataColumns." + key;
    if (key != "ITEMS") check.unknown(path, "ITEMS");
    if (!value.is_array()) check.fail(path, fmt::format("expected an array of field names, found {}", shortened(value.dump())));
    for (size_t k = 0; k < value.size(); ++k) config.metadata_columns.push_back(check.string(value[k], fmt::format("{}[{}]", path, k)));
  }
}

}  // namespace

JobConfig parse_job_config(std::string_view text, std::string_view source) {
  const Checker check{source};
  const json root = parse_json(text, source);
  if (!root.is_object()) check.fail("(top level)", fmt::format("expected an object, found {}", shortened(root.dump())));
  JobConfig config;
  config.from_file = true;
  config.source = std::string(source);
  for (const auto& [key, value] : root.items()) {
    if (key == "itemExplorationConfig") read_exploration(check, value, config);
    else if (key == "rankingInfluence") read_influence(check, value, config);
    else if (key == "promotions") read_promotions(check, value, config);
    else if (key == "metadataColumns") read_metadata(check, value, config);
    else check.unknown(key, "itemExplorationConfig, rankingInfluence, promotions, metadataColumns");
  }
  return config;
}

JobConfig read_job_config(const std::filesystem::path& path) {
  const std::string source = "--job-config " + path.string();
  std::string text;
  try {
    text = read_file(path);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: {}", source, e.what()));
  }
  return parse_job_config(text, source);
}

void parse_ranking_influence(std::string_view text, JobConfig& config) {
  const Checker check{"--ranking-influence"};
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string_view part = text.substr(at, comma - at);
    const size_t eq = part.find('=');
    if (eq == std::string_view::npos)
      check.fail(part, "expected SIGNAL=WEIGHT, e.g. POPULARITY=0.2,FRESHNESS=0.5");
    const std::string key(part.substr(0, eq));
    const json value = std::string(part.substr(eq + 1));
    if (key == "POPULARITY") config.popularity_influence = check.number(value, key, 0, 1);
    else if (key == "FRESHNESS") config.freshness_influence = check.number(value, key, 0, 1);
    else check.unknown(key, "POPULARITY, FRESHNESS");
    at = comma + 1;
  }
}

std::vector<std::string> parse_metadata_columns(std::string_view text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    std::string_view name = text.substr(at, comma - at);
    if (name.size() > 6 && (name.substr(0, 6) == "Items." || name.substr(0, 6) == "ITEMS.")) name.remove_prefix(6);
    if (name.empty() || name.find('.') != std::string_view::npos)
      throw Error(fmt::format("--metadata-columns: '{}' is not an Items field, e.g. Items.GENRES",
                              text.substr(at, comma - at)));
    out.emplace_back(name);
    at = comma + 1;
  }
  return out;
}

}  // namespace tastebud::host
