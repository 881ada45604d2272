// The service's domain recommenders (issue 24): an e-commerce or video team picks its domain and
// switches on use cases whose rules are fixed and documented, instead of choosing recipes.
//
//   tastebud recommenders --data D --domain ecommerce|video-on-demand --out DIR
//       trains every use case of the domain the data supports into DIR/<use-case>/ (each a model
//       directory that batch-infer, serve and the Python package read) and writes
//       DIR/recommenders.json; a use case the data cannot support is skipped with a line saying why.
//   tastebud train --use-case NAME --data D --out MODEL_DIR
//       one of them.
//
// Each use case fixes what it learns from (the events of some of the service's roles: View,
// Purchase, Watch, Click), the model, what a user's answers leave out, and what a query must carry
// (the service's GetRecommendations requirements); the table is in use_cases.cpp and README.md.
// An event role takes the dataset's event types spelled as the role is, ignoring case ("View",
// "view", "VIEW"), or the types --event-map ROLE=TYPE[,TYPE] names (an export that says
// `transaction` for purchases). A use case needs at least 1,000 events of its roles and 25 users
// with two or more of them (the service's minimum); more-like-x also needs items with metadata.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "host/train_plan.h"
#include "tastebud/datasets/dataset.h"

namespace tastebud::host {

enum class Domain { kEcommerce, kVideoOnDemand };
Domain parse_domain(std::string_view name);  // ecommerce | video-on-demand
std::string_view to_string(Domain domain);

enum class EventRole { kView, kPurchase, kWatch, kClick };
std::string_view to_string(EventRole role);  // View, Purchase, Watch, Click

// What a query of the use case must name: the service's GetRecommendations requirements.
enum class QueryNeeds {
  kUser,         // {"userId"}: the user's list
  kItem,         // {"itemId"}, a userId beside it optional: items related to the item
  kUserAndItem,  // {"userId", "itemId"}: related to the item, the user's exclusions applied
};

struct UseCase {
  std::string_view name;
  Domain domain;
  std::string_view summary;            // one line: what it answers
  std::vector<EventRole> learns_from;  // the roles whose events it trains on (those the data has)
  std::vector<EventRole> excludes;     // roles whose items the user's answers leave out (empty: every seen item)
  QueryNeeds query = QueryNeeds::kUser;
  bool picks_model = false;          // trains the candidates and keeps the best on validation
  bool needs_item_metadata = false;  // more-like-x
  double exploration_weight = 0;     // > 0: answers explore new items by default (weight, 30 days)
  // The model and its settings for the dataset (the candidates' shared settings when picks_model);
  // `given(option)` tells the settings the user chose, which it leaves alone.
  std::function<void(TrainJob&, const datasets::Dataset&, const std::function<bool(const std::string&)>&)> configure;
};

// Every use case, e-commerce's then video-on-demand's, in the service's order.
std::span<const UseCase> use_cases();
// The use case named `name`; an Error naming `use_case` and the choices for any other name.
const UseCase& find_use_case(std::string_view name);
// The use case a model directory's config.json names, or null ("" or a name this build lacks).
const UseCase* use_case_named(std::string_view name);

// Which event types of a dataset play each role.
class EventRoles {
 public:
  // `map`: ROLE=TYPE[,TYPE] entries (roles view, purchase, watch, click, any case); an unknown role
  // or a type the dataset lacks is an Error naming `event_map`.
  EventRoles(const datasets::Dataset& dataset, const std::vector<std::string>& map);
  // The dataset's event types that play any of `roles`.
  std::vector<std::string> types(std::span<const EventRole> roles) const;

 private:
  std::vector<std::vector<std::string>> types_;  // per role
};

// Why the dataset cannot support the use case (the service's data needs), or nullopt when it can.
std::optional<std::string> unsupported_because(const UseCase& use_case, const datasets::Dataset& dataset,
                                               const EventRoles& roles);

// Trains the use case `job.use_case` into `job.out` (built beside it and swapped in whole): the
// use case's model, events and exclusions, the job's other settings (epochs, threads, seed,
// evaluation ...) as given. A use case that picks its model trains `job.candidates` (default
// transitions and mf), or only job.model when `given("model")`, and keeps the best by the
// validation split's metric. Throws an Error when the data cannot support it. config.json records
// "use_case" and, for a picked model, the candidates' metrics.
TrainResult train_use_case(TrainJob job, const std::function<bool(const std::string&)>& given, std::ostream& log);

struct RecommendersJob {
  std::filesystem::path data, out;
  std::string domain;
  std::vector<std::string> event_map;
  std::vector<std::string> candidates;  // empty: transitions, mf
  uint32_t threads = 0;
  uint64_t seed = 1;
  bool progress = true;
};

// `tastebud recommenders`: every use case of the domain the data supports into out/<use-case>/,
// the others skipped with a line saying why; out/recommenders.json lists each use case with its
// status ("trained" or "skipped"), the reason, the model and its metrics. Returns that listing.
nlohmann::json train_recommenders(const RecommendersJob& job, std::ostream& log);

}  // namespace tastebud::host
