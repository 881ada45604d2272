#include "host/use_cases.h"

#include <algorithm>
#include <cmath>
#include <ostream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "host/model_dir.h"
#include "host/split.h"
#include "host/training.h"
#include "tastebud/atomic_file.h"
#include "tastebud/directory_swap.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Given = std::function<bool(const std::string&)>;

constexpr uint64_t kMinEvents = 1000;         // the service's minimum interactions of a use case's types
constexpr uint32_t kMinActiveUsers = 25;      // ... and users with two or more of them
constexpr uint32_t kExcludeLatest = 100;      // exclusions read each user's latest 100 events of a type

// Sets a recipe's option unless the user chose it.
template <typename T, typename V>
void preset(TrainJob& job, T TrainJob::*field, V value, const char* name, const Given& given) {
  if (!given(name)) job.*field = static_cast<T>(value);
}

bool has_context_field(const datasets::Dataset& dataset, std::string_view name) {
  return std::any_of(dataset.interactions.context.begin(), dataset.interactions.context.end(),
                     [&](const datasets::ContextField& f) { return f.name == name; });
}

// Items related by who interacted with both: co-views, co-watches.
void related_by_users(TrainJob& job, const datasets::Dataset&, const Given&) { job.model = "sims"; }

// Items bought in the same order (the interactions' ORDER_ID), else in the same session.
void bought_together(TrainJob& job, const datasets::Dataset& dataset, const Given& given) {
  job.model = "sims";
  if (given("co_occurrence")) return;
  job.co_occurrence = has_context_field(dataset, job.order_field) ? "order" : "session";
}

// The items the most distinct users bought (viewed) in the latest 30 days.
void popular_lately(TrainJob& job, const datasets::Dataset&, const Given& given) {
  job.model = "popularity";
  preset(job, &TrainJob::popularity_count, "users", "popularity_count", given);
  preset(job, &TrainJob::popularity_window_days, 30, "popularity_window_days", given);
}

// The items the most distinct users watched, all time.
void popular_ever(TrainJob& job, const datasets::Dataset&, const Given& given) {
  job.model = "popularity";
  preset(job, &TrainJob::popularity_count, "users", "popularity_count", given);
}

void trending(TrainJob& job, const datasets::Dataset&, const Given&) { job.model = "trending"; }

// Co-watches blended with the items' metadata, so a title nobody watched yet has neighbours.
void like_by_metadata(TrainJob& job, const datasets::Dataset&, const Given& given) {
  job.model = "sims";
  preset(job, &TrainJob::metadata_similarity, 0.5, "metadata_similarity", given);
}

void picked_later(TrainJob&, const datasets::Dataset&, const Given&) {}

using R = EventRole;
const std::vector<UseCase>& table() {
  static const std::vector<UseCase> cases{
      {"recommended-for-you", Domain::kEcommerce, "a user's personal list; purchases left out, new items explored",
       {R::kView, R::kPurchase}, {R::kPurchase}, QueryNeeds::kUser, true, false, 0.3, picked_later},
      {"customers-who-viewed-x-also-viewed", Domain::kEcommerce, "items viewed by those who viewed X; the user's purchases left out",
       {R::kView}, {R::kPurchase}, QueryNeeds::kUserAndItem, false, false, 0, related_by_users},
      {"frequently-bought-together", Domain::kEcommerce, "items bought in the same orders as X",
       {R::kPurchase}, {R::kPurchase}, QueryNeeds::kItem, false, false, 0, bought_together},
      {"best-sellers", Domain::kEcommerce, "the items the most users bought in the latest 30 days",
       {R::kPurchase}, {R::kPurchase}, QueryNeeds::kUser, false, false, 0, popular_lately},
      {"most-viewed", Domain::kEcommerce, "the items the most users viewed in the latest 30 days",
       {R::kView}, {R::kPurchase}, QueryNeeds::kUser, false, false, 0, popular_lately},
      {"top-picks-for-you", Domain::kVideoOnDemand, "a user's personal list; watched titles left out",
       {R::kWatch, R::kClick}, {R::kWatch}, QueryNeeds::kUser, true, false, 0, picked_later},
      {"because-you-watched-x", Domain::kVideoOnDemand, "titles watched by those who watched X",
       {R::kWatch}, {R::kWatch}, QueryNeeds::kItem, false, false, 0, related_by_users},
      {"more-like-x", Domain::kVideoOnDemand, "titles like X by co-watches and metadata; new titles too",
       {R::kWatch}, {R::kWatch}, QueryNeeds::kItem, false, true, 0, like_by_metadata},
      {"trending-now", Domain::kVideoOnDemand, "the titles whose watches grew most in the latest window",
       {R::kWatch, R::kClick}, {R::kWatch}, QueryNeeds::kUser, false, false, 0, trending},
      {"most-popular", Domain::kVideoOnDemand, "the titles the most users watched",
       {R::kWatch}, {R::kWatch}, QueryNeeds::kUser, false, false, 0, popular_ever},
  };
  return cases;
}

std::optional<EventRole> parse_role(std::string_view name) {
  for (EventRole role : {R::kView, R::kPurchase, R::kWatch, R::kClick})
    if (same_ignoring_case(to_string(role), name)) return role;
  return std::nullopt;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    if (end > start) out.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

Domain parse_domain(std::string_view name) {
  if (name == "ecommerce" || name == "e-commerce") return Domain::kEcommerce;
  if (name == "video-on-demand" || name == "video_on_demand") return Domain::kVideoOnDemand;
  throw Error(fmt::format("`domain` '{}': the domains are ecommerce and video-on-demand", name));
}

std::string_view to_string(Domain domain) {
  return domain == Domain::kEcommerce ? "ecommerce" : "video-on-demand";
}

std::string_view to_string(EventRole role) {
  switch (role) {
    case R::kView: return "View";
    case R::kPurchase: return "Purchase";
    case R::kWatch: return "Watch";
    case R::kClick: return "Click";
  }
  return "";
}

std::span<const UseCase> use_cases() { return table(); }

const UseCase* use_case_named(std::string_view name) {
  for (const UseCase& u : table())
    if (u.name == name) return &u;
  return nullptr;
}

const UseCase& find_use_case(std::string_view name) {
  if (const UseCase* u = use_case_named(name)) return *u;
  std::vector<std::string_view> names;
  for (const UseCase& u : table()) names.push_back(u.name);
  throw Error(fmt::format("`use_case` '{}': the use cases are {}", name, fmt::join(names, ", ")));
}

EventRoles::EventRoles(const datasets::Dataset& dataset, const std::vector<std::string>& map) : types_(4) {
  std::vector<uint8_t> mapped(4, 0);
  for (const std::string& entry : map) {
    const size_t eq = entry.find('=');
    const std::optional<EventRole> role = eq == std::string::npos ? std::nullopt : parse_role(entry.substr(0, eq));
    if (!role)
      throw Error(fmt::format("`event_map` '{}': write ROLE=TYPE[,TYPE], ROLE one of view, purchase, watch, click", entry));
    const size_t r = static_cast<size_t>(*role);
    mapped[r] = 1;
    for (const std::string& type : split_list(std::string_view(entry).substr(eq + 1))) {
      try {
        types_[r].emplace_back(dataset.event_types[find_event_type(dataset, type)]);
      } catch (const Error& e) {
        throw Error(fmt::format("`event_map` '{}': {}", entry, e.what()));
      }
    }
  }
  for (size_t r = 0; r < 4; ++r) {
    if (mapped[r]) continue;
    for (size_t t = 0; t < dataset.event_types.size(); ++t)
      if (same_ignoring_case(dataset.event_types[t], to_string(static_cast<EventRole>(r))))
        types_[r].emplace_back(dataset.event_types[t]);
  }
}

std::vector<std::string> EventRoles::types(std::span<const EventRole> roles) const {
  std::vector<std::string> out;
  for (EventRole role : roles)
    for (const std::string& type : types_[static_cast<size_t>(role)])
      if (std::find(out.begin(), out.end(), type) == out.end()) out.push_back(type);
  return out;
}

std::optional<std::string> unsupported_because(const UseCase& use_case, const datasets::Dataset& dataset,
                                               const EventRoles& roles) {
  std::vector<std::string_view> role_names;
  for (EventRole role : use_case.learns_from) role_names.push_back(to_string(role));
  const std::vector<std::string> types = roles.types(use_case.learns_from);
  if (types.empty()) {
    std::vector<std::string> have;
    for (size_t t = 0; t < dataset.event_types.size(); ++t) have.emplace_back(dataset.event_types[t]);
    return fmt::format("it needs {} events and the dataset has none (its event types: {}; --event-map ROLE=TYPE maps others)",
                       fmt::join(role_names, " or "), fmt::join(have, ", "));
  }
  std::vector<uint8_t> wanted(dataset.event_types.size(), 0);
  for (const std::string& type : types) wanted[find_event_type(dataset, type)] = 1;
  const datasets::Interactions& rows = dataset.interactions;
  uint64_t events = 0;
  uint32_t active = 0;
  for (uint32_t u = 0; u < dataset.num_users(); ++u) {
    uint64_t mine = 0;
    for (uint64_t r = rows.user_offsets[u]; r < rows.user_offsets[u + 1]; ++r) mine += wanted[rows.event_type[r]];
    events += mine;
    active += mine >= 2;
  }
  if (events < kMinEvents)
    return fmt::format("it needs at least {} {} events ({}) and the dataset has {}", kMinEvents,
                       fmt::join(role_names, " or "), fmt::join(types, ", "), events);
  if (active < kMinActiveUsers)
    return fmt::format("it needs at least {} users with two or more {} events and the dataset has {}", kMinActiveUsers,
                       fmt::join(role_names, " or "), active);
  if (use_case.needs_item_metadata && dataset.items.categorical.empty() && dataset.items.textual.empty())
    return std::string("it needs item metadata (categorical or textual fields of Items) and the dataset has none");
  return std::nullopt;
}

namespace {

// The settings the use case fixes: its events, what answers leave out, the model (and its recipe's
// options the user did not choose). Naming events or exclusions of one's own is refused.
void fix_settings(const UseCase& u, TrainJob& job, const datasets::Dataset& dataset, const EventRoles& roles,
                  const Given& given) {
  if (given("event") || given("events") || given("exclude_events"))
    throw Error(fmt::format("`use_case` {} fixes the events it learns from and leaves out; "
                            "map the dataset's event types to its roles with `event_map` instead",
                            u.name));
  if (!u.picks_model && given("model"))
    throw Error(fmt::format("`use_case` {} fixes its model; `model` chooses only among the candidates of "
                            "recommended-for-you and top-picks-for-you",
                            u.name));
  job.events = roles.types(u.learns_from);
  job.exclude_events = roles.types(u.excludes);
  if (job.exclude_events.empty()) job.exclude_events = {"none"};  // the data has none of those events
  preset(job, &TrainJob::exclude_latest, kExcludeLatest, "exclude_latest", given);
  u.configure(job, dataset, given);
}

// A model trained into a directory built beside job.out (swapped in by commit()).
struct Built {
  std::string model;
  std::unique_ptr<DirectoryReplacement> dir;
  TrainResult result;
  double score = NAN;  // the validation metric of the kept epoch (the test's without validation)
};

double kept_metric(const TrainResult& result, const std::string& metric) {
  const EpochRecord* kept = result.kept();
  if (!kept) return NAN;
  for (const std::string& key : {"val." + metric, metric})
    if (const auto it = kept->metrics.find(key); it != kept->metrics.end()) return it->second;
  return NAN;
}

Built train_beside(TrainJob job, const Given& given, std::ostream& log) {
  Built built;
  built.model = job.model;
  built.dir = std::make_unique<DirectoryReplacement>(job.out);
  job.out = built.dir->path();
  apply_model_defaults(job, given);
  const TrainPlan plan = make_plan(job);
  built.result = run_training(plan, log);
  built.score = kept_metric(built.result, plan.metric);
  return built;
}

// config.json gains the use case (what inference checks queries and defaults answers by).
void record_use_case(const fs::path& dir, const UseCase& u, const json& candidates) {
  json config = json::parse(read_file(dir / "config.json"));
  config["use_case"] = u.name;
  config["domain"] = to_string(u.domain);
  if (!candidates.empty()) config["candidates"] = candidates;
  write_file_atomically(dir / "config.json", config_file_text(config));
}

std::vector<std::string> candidate_models(const TrainJob& job, const Given& given) {
  if (given("model")) return {job.model};
  if (!job.candidates.empty()) return job.candidates;
  return {"transitions", "mf"};
}

// Recommended for you, top picks for you: each candidate trained, the best by validation kept.
TrainResult pick_and_train(const UseCase& u, const TrainJob& job, const Given& given, std::ostream& log) {
  const std::vector<std::string> models = candidate_models(job, given);
  std::optional<Built> best;
  json candidates = json::array();
  for (const std::string& model : models) {
    TrainJob candidate = job;
    candidate.model = model;
    log << fmt::format("{}: candidate {}\n", u.name, model);
    Built built = train_beside(candidate, given, log);
    candidates.push_back(json{{"model", model}, {"metric", std::isnan(built.score) ? json(nullptr) : json(built.score)}});
    log << fmt::format("{}: candidate {} scored {:.4f}\n", u.name, model, built.score);
    if (!best || built.score > best->score || (std::isnan(best->score) && !std::isnan(built.score))) best = std::move(built);
  }
  TB_CHECK(models.size() == 1 || !std::isnan(best->score),
           fmt::format("`use_case` {} picks its model by evaluation; with `eval` none name one `model`", u.name));
  record_use_case(best->dir->path(), u, candidates);
  best->dir->commit();
  log << fmt::format("{}: kept {}, the best of {}, in {}\n", u.name, best->model, fmt::join(models, ", "), job.out.string());
  return best->result;
}

}  // namespace

TrainResult train_use_case(TrainJob job, const Given& given, std::ostream& log) {
  const UseCase& u = find_use_case(job.use_case);
  TB_CHECK(!job.resume && job.warm_start.empty(),
           fmt::format("`use_case` {} trains from scratch: `resume` and `warm_start` are for `model` runs", u.name));
  {
    const datasets::Dataset dataset = datasets::Dataset::open(job.data);
    const EventRoles roles(dataset, job.event_map);
    if (const std::optional<std::string> why = unsupported_because(u, dataset, roles))
      throw Error(fmt::format("use case {} cannot train on {}: {}", u.name, job.data.string(), *why));
    fix_settings(u, job, dataset, roles, given);
  }
  if (!job.out.parent_path().empty()) fs::create_directories(job.out.parent_path());
  const std::string left_out = job.exclude_events == std::vector<std::string>{"none"}
                                   ? "leaves out nothing (the data has none of the events it leaves out)"
                                   : fmt::format("leaves out the user's items of {}", fmt::join(job.exclude_events, ", "));
  log << fmt::format("use case {} ({}): {}; learns from {}, {}\n", u.name, to_string(u.domain), u.summary,
                     fmt::join(job.events, ", "), left_out);
  if (u.picks_model) return pick_and_train(u, job, given, log);
  Built built = train_beside(job, given, log);
  record_use_case(built.dir->path(), u, json());
  built.dir->commit();
  return built.result;
}

json train_recommenders(const RecommendersJob& r, std::ostream& log) {
  const Domain domain = parse_domain(r.domain);
  const datasets::Dataset dataset = datasets::Dataset::open(r.data);
  const EventRoles roles(dataset, r.event_map);
  fs::create_directories(r.out);
  json listing = json::array();
  for (const UseCase& u : use_cases()) {
    if (u.domain != domain) continue;
    json entry{{"use_case", u.name}, {"answers", u.summary}};
    if (const std::optional<std::string> why = unsupported_because(u, dataset, roles)) {
      log << fmt::format("skipped {}: {}\n", u.name, *why);
      entry["status"] = "skipped";
      entry["reason"] = *why;
      listing.push_back(std::move(entry));
      continue;
    }
    TrainJob job;
    job.data = r.data;
    job.out = r.out / std::string(u.name);
    job.use_case = u.name;
    job.event_map = r.event_map;
    job.candidates = r.candidates;
    job.threads = r.threads;
    job.seed = r.seed;
    job.progress = r.progress;
    const TrainResult result = train_use_case(job, [](const std::string&) { return false; }, log);
    const json config = json::parse(read_file(job.out / "config.json"));
    entry["status"] = "trained";
    entry["model"] = config.value("model", "");
    if (const EpochRecord* kept = result.kept()) entry["metrics"] = kept->metrics;
    if (!result.popularity.empty()) entry["popularity"] = result.popularity;
    listing.push_back(std::move(entry));
  }
  const json summary{{"domain", to_string(domain)}, {"data", fs::absolute(r.data).string()}, {"use_cases", listing}};
  write_file_atomically(r.out / "recommenders.json", summary.dump(2) + "\n");
  return listing;
}

}  // namespace tastebud::host
