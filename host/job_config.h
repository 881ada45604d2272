// A batch job's configuration in the managed service's shape (issue 14), `--job-config job.json`:
//
//   {"itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "30"},
//    "rankingInfluence": {"POPULARITY": 0.2, "FRESHNESS": 0.5},
//    "promotions": [{"name": "books-push", "percentPromotedItems": 20,
//                    "filterExpression": "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN (\"books\")",
//                    "filterValues": {}}],
//    "metadataColumns": {"ITEMS": ["GENRES", "PRICE"]}}
//
// Numbers may be written as JSON numbers or as strings holding one (the service writes the
// exploration settings as strings). Every key is checked: an unknown key, a value of the wrong
// type or out of range, or a promotion filter that does not parse is an Error naming the file, the
// key and the reason, raised before the job opens its output.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/filters.h"

namespace tastebud::host {

// The service's default share of exploration slots when a job configuration is given.
constexpr double kDefaultExplorationWeight = 0.3;
constexpr double kDefaultExplorationAgeCutOffDays = 30;
// Exploration explores items with little interaction data (host/slate.h): at most this many
// training users interacted with the item (the ranker's popularity(): distinct users for the
// neural models and sasrec, the recipe's own count for recipes), and it is within the age cut-off.
// A count, not a share of the catalog: what a model knows of an item depends on that item's own
// interactions, and below 5 users collaborative models learn little (the usual 5-core rule of the
// literature drops such items as unlearnable). A percentile would call nothing but the items
// without any interaction cold on a catalog where a tenth of the items have none, and call items
// 20 users took "little data" on a dense one such as MovieLens.
constexpr float kExplorationMaxInteractions = 4;

struct Promotion {
  std::string name;
  double percent = 0;  // percentPromotedItems, 1..100: that share of each result's slots
  std::string filter_expression;
  FilterValues filter_values;
};

struct JobConfig {
  // Unset: no exploration (no job configuration) or the service's default 0.3 (a configuration
  // without the key); see exploration_weight_or_default.
  // The share of a user's slots given to explorable items: cold (at most
  // kExplorationMaxInteractions training users) AND created within the age cut-off (an item
  // without a date counts as new); host/slate.h says why AND.
  std::optional<double> exploration_weight;        // 0..1
  std::optional<double> exploration_age_cutoff;    // days, > 0
  double popularity_influence = 0;                 // rankingInfluence.POPULARITY, 0..1
  double freshness_influence = 0;                  // rankingInfluence.FRESHNESS, 0..1
  std::vector<Promotion> promotions;
  std::vector<std::string> metadata_columns;       // Items fields, without the "Items." prefix
  bool from_file = false;                          // read from --job-config
  std::string source = "the job configuration";    // names it in errors found later

  double exploration_weight_or_default() const {
    return exploration_weight.value_or(from_file ? kDefaultExplorationWeight : 0.0);
  }
  double exploration_age_cutoff_or_default() const {
    return exploration_age_cutoff.value_or(kDefaultExplorationAgeCutOffDays);
  }
  // True under a job configuration file, or when a flag asks for exploration, influence or
  // metadata: answers then carry "reasons" (and "promotionNames", "metadata"), and such lines
  // are answered on the CPU.
  bool shapes_answers() const {
    return from_file || exploration_weight_or_default() > 0 || popularity_influence > 0 || freshness_influence > 0 ||
           !promotions.empty() || !metadata_columns.empty();
  }
};

// `source` names the text in errors (the file's path).
JobConfig parse_job_config(std::string_view text, std::string_view source);
JobConfig read_job_config(const std::filesystem::path& path);

// --ranking-influence POPULARITY=0.2,FRESHNESS=0.5 into `config` (each 0..1).
void parse_ranking_influence(std::string_view text, JobConfig& config);
// --metadata-columns Items.GENRES,Items.PRICE (the prefix may be left out).
std::vector<std::string> parse_metadata_columns(std::string_view text);

}  // namespace tastebud::host
