#include "host/serve.h"

#include <signal.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <ostream>
#include <list>
#include <set>
#include <unordered_map>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "host/event_log.h"
#include "host/filters.h"
#include "host/inference.h"
#include "host/job_config.h"
#include "host/use_cases.h"
#include "tastebud/error.h"
#include "tastebud/json_input.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr size_t kMaxInputList = 500;  // the service's cap on GetPersonalizedRanking's inputList
constexpr size_t kMaxEvents = 10;      // and on PutEvents' eventList
constexpr size_t kMaxFilterRecommenders = 16;

// A request's own problem: a 400 whose message names the field.
struct BadRequest : Error {
  using Error::Error;
};

// One loaded model and the recommenders its requests use (one per filter expression).
struct Loaded {
  fs::path dir;         // the model directory (a retrain directory's `current` resolved)
  std::string version;  // its directory name
  std::shared_ptr<const ModelData> model;  // once in memory, whatever the filters and shapes asked for
  InferenceContext context;
  std::shared_ptr<const Recommender> plain;
  bool normalize_scores = false;  // ServeOptions::normalize_scores, for every recommender
  mutable std::mutex filters_mutex;
  mutable std::map<std::string, std::shared_ptr<const Recommender>> by_filter;

  // The recommender for a filter expression and a shaping configuration (promotions, metadata
  // columns: the service's request fields as a job configuration's text; empty: none).
  std::shared_ptr<const Recommender> for_request(const std::string& filter, const std::string& shaping = {}) const {
    if (filter.empty() && shaping.empty()) return plain;
    const std::string key = filter + '\n' + shaping;
    std::lock_guard lock(filters_mutex);
    if (const auto it = by_filter.find(key); it != by_filter.end()) return it->second;
    InferenceOptions options;
    options.filter = filter;
    options.device = "cpu";
    options.normalize_scores = normalize_scores;
    std::shared_ptr<const Recommender> r;
    try {
      if (!filter.empty() && filter_selects_users(filter))
        throw Error("UserID expressions select users; recommendations filter items");
      if (!shaping.empty()) options.job = parse_job_config(shaping, "the request");
      r = std::make_shared<const Recommender>(model, context, options);
    } catch (const Error& e) {  // the expression's or the configuration's own problem
      throw BadRequest(fmt::format("{}: {}", shaping.empty() ? "filter" : "filter, promotions or metadataColumns", e.what()));
    }
    if (by_filter.size() >= kMaxFilterRecommenders) by_filter.erase(by_filter.begin());
    by_filter.emplace(key, r);
    return r;
  }
};

fs::path model_dir_of(const ServeOptions& o) {
  if (o.models.empty()) return o.model;
  const fs::path current = o.models / "current";
  if (!fs::exists(current)) throw Error(fmt::format("--models {}: no `current` model yet (run retrain first)", o.models.string()));
  return fs::canonical(current);
}

std::shared_ptr<const Loaded> load_dir(const fs::path& dir, const ServeOptions& o) {
  auto loaded = std::make_shared<Loaded>();
  loaded->dir = dir;
  loaded->version = loaded->dir.filename().string();
  loaded->model = std::make_shared<const ModelData>(load_model_dir(loaded->dir));
  const fs::path data = loaded->model->data;
  loaded->context = load_context(*loaded->model, !data.empty() && fs::exists(data) ? data : fs::path());
  InferenceOptions options;
  options.device = "cpu";
  options.normalize_scores = loaded->normalize_scores = o.normalize_scores;
  loaded->plain = std::make_shared<const Recommender>(loaded->model, loaded->context, options);
  return loaded;
}

std::shared_ptr<const Loaded> load(const ServeOptions& o) { return load_dir(model_dir_of(o), o); }

// --recommenders DIR: every use case recommenders.json lists as trained, by name.
std::map<std::string, std::shared_ptr<const Loaded>> load_recommenders(const ServeOptions& o) {
  const fs::path listing = o.recommenders / "recommenders.json";
  std::map<std::string, std::shared_ptr<const Loaded>> out;
  try {
    const nlohmann::json written = parse_json(read_file(listing), listing.string());
    for (const auto& u : written.at("use_cases")) {
      if (u.at("status") != "trained") continue;
      const std::string name = u.at("use_case");
      out.emplace(name, load_dir(o.recommenders / name, o));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("--recommenders {}: {}", listing.string(), e.what()));
  }
  if (out.empty()) throw Error(fmt::format("--recommenders {}: lists no trained use case", listing.string()));
  return out;
}

// The items each user and session took since the server started, newest last: a bounded LRU.
class RecentItems {
 public:
  explicit RecentItems(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  void add(const std::string& key, const std::vector<std::string>& items) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      if (entries_.size() >= capacity_) {
        entries_.erase(order_.back());
        order_.pop_back();
      }
      order_.push_front(key);
      it = entries_.emplace(key, Entry{{}, order_.begin()}).first;
    } else {
      order_.splice(order_.begin(), order_, it->second.at);
    }
    std::vector<std::string>& list = it->second.items;
    list.insert(list.end(), items.begin(), items.end());
    if (list.size() > kPerKey) list.erase(list.begin(), list.end() - kPerKey);
  }

  std::vector<std::string> get(const std::string& key) const {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(key);
    return it == entries_.end() ? std::vector<std::string>{} : it->second.items;
  }

 private:
  static constexpr size_t kPerKey = 50;
  struct Entry {
    std::vector<std::string> items;
    std::list<std::string>::iterator at;
  };
  size_t capacity_;
  mutable std::mutex mutex_;
  std::list<std::string> order_;  // most recently written first
  std::unordered_map<std::string, Entry> entries_;
};

// The metadata fields of one side of the dataset (its Users or Items schema), in schema order:
// what a PutUsers or PutItems row holds. Empty `id` when the dataset has no such schema.
struct RecordSchema {
  std::string id;                   // USER_ID or ITEM_ID
  std::vector<std::string> fields;  // the others
  std::string header() const {
    std::vector<std::string> names{id};
    names.insert(names.end(), fields.begin(), fields.end());
    return csv_line(names);
  }
};

RecordSchema read_record_schema(const fs::path& data, const char* side, const char* id) {
  RecordSchema schema;
  const fs::path file = data / "schema" / fmt::format("{}.json", side);
  if (data.empty() || !fs::exists(file)) return schema;
  const nlohmann::json avro = nlohmann::json::parse(read_file(file));
  schema.id = id;
  for (const nlohmann::json& field : avro.at("fields")) {
    const std::string name = field.at("name").get<std::string>();
    if (name != id) schema.fields.push_back(name);
  }
  return schema;
}

// A property name as the service's SDK writes it (numberOfRatings) or as the schema does
// (NUMBER_OF_RATINGS): the schema field it names, or "" for none.
std::string field_named(const RecordSchema& schema, const std::string& key) {
  std::string snake;
  for (size_t k = 0; k < key.size(); ++k) {
    const unsigned char c = static_cast<unsigned char>(key[k]);
    if (std::isupper(c) && k > 0 && std::islower(static_cast<unsigned char>(key[k - 1]))) snake += '_';
    snake += static_cast<char>(std::toupper(c));
  }
  for (const std::string& f : schema.fields) {
    std::string upper = key;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (f == upper || f == snake) return f;
  }
  return "";
}

// A property's value as the CSV field an import reads: text as it is, numbers and booleans
// written out, a list of values joined by '|' (a multi-valued categorical field), null empty.
std::string field_value(const json& v, const std::string& at) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number()) return v.dump();
  if (v.is_array()) {
    std::string joined;
    for (const json& x : v) {
      if (!x.is_string()) throw BadRequest(fmt::format("{}: a list of values must hold strings", at));
      joined += fmt::format("{}{}", joined.empty() ? "" : "|", x.get<std::string>());
    }
    return joined;
  }
  throw BadRequest(fmt::format("{}: must be a string, a number, a boolean or a list of strings", at));
}

// --filters FILE: {"NAME": "EXPRESSION", ...}, each expression checked against the catalog at start.
std::map<std::string, std::string> read_filters(const fs::path& file, const ItemCatalog& catalog) {
  const nlohmann::json j = parse_json(read_file(file), file.string());
  if (!j.is_object()) throw Error(fmt::format("{}: expected an object of filter names and expressions", file.string()));
  std::map<std::string, std::string> filters;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) throw Error(fmt::format("{}: {}: the expression must be a string", file.string(), it.key()));
    const std::string expression = it.value().get<std::string>();
    try {
      Filter check(expression, catalog);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}: {}", file.string(), it.key(), e.what()));
    }
    filters.emplace(it.key(), expression);
  }
  return filters;
}

// ---- Request bodies ----

json parse_body(const std::string& body) {
  if (json_nested_deeper_than(body, kMaxJsonDepth)) throw BadRequest(fmt::format("JSON nested deeper than {} levels", kMaxJsonDepth));
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    throw BadRequest(fmt::format("not valid JSON: {}", json_error_message(e)));
  }
  if (!j.is_object()) throw BadRequest("the request must be a JSON object");
  return j;
}

void check_fields(const json& j, std::initializer_list<const char*> known, const std::string& where = {}) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* k : known) ok |= it.key() == k;
    if (!ok) {
      std::string names;
      for (const char* k : known) names += fmt::format("{}{}", names.empty() ? "" : ", ", k);
      throw BadRequest(fmt::format("{}{}: unknown field (expected {})", where, it.key(), names));
    }
  }
}

std::optional<std::string> string_of(const json& j, const char* key, const std::string& where = {}) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw BadRequest(fmt::format("{}{}: must be a string", where, key));
  return it->get<std::string>();
}

// The batch-infer line a request stands for: its shared fields copied as they are.
json line_of(const json& request) {
  json line = json::object();
  for (const char* key : {"userId", "itemId", "numResults", "filterValues", "context"})
    if (const auto it = request.find(key); it != request.end() && !it->is_null()) line[key] = *it;
  return line;
}

// The Recommender's answer to a line, or a 400 with its error.
json answer_of(const Recommender& r, const json& line) {
  const json answer = json::parse(r.answer(line.dump()));
  if (!answer.at("error").is_null()) throw BadRequest(answer.at("error").get<std::string>());
  return answer.at("output");
}

}  // namespace

// ---- Metrics ----

namespace {

constexpr std::array<double, 11> kBuckets{0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

struct ServerMetrics {
  std::mutex mutex;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (path, status) -> count
  std::map<std::string, std::array<uint64_t, kBuckets.size() + 1>> latency;  // path -> bucket counts (+Inf last)
  std::map<std::string, double> latency_sum;
  std::atomic<uint64_t> events{0};
  std::atomic<uint64_t> reloads{0};

  void observe(const std::string& path, int status, double seconds) {
    std::lock_guard lock(mutex);
    ++requests[{path, status}];
    auto& buckets = latency[path];
    size_t b = 0;
    while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
    ++buckets[b];
    latency_sum[path] += seconds;
  }

  std::string text(const std::string& version) {
    std::lock_guard lock(mutex);
    std::string out = "# HELP tastebud_requests_total HTTP requests answered, by path and status.\n"
                      "# TYPE tastebud_requests_total counter\n";
    for (const auto& [key, n] : requests)
      out += fmt::format("tastebud_requests_total{{path=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
    out += "# HELP tastebud_request_seconds Time to answer a request.\n# TYPE tastebud_request_seconds histogram\n";
    for (const auto& [path, buckets] : latency) {
      uint64_t cumulative = 0;
      for (size_t b = 0; b <= kBuckets.size(); ++b) {
        cumulative += buckets[b];
        const std::string le = b < kBuckets.size() ? fmt::format("{}", kBuckets[b]) : "+Inf";
        out += fmt::format("tastebud_request_seconds_bucket{{path=\"{}\",le=\"{}\"}} {}\n", path, le, cumulative);
      }
      out += fmt::format("tastebud_request_seconds_sum{{path=\"{}\"}} {}\n", path, latency_sum[path]);
      out += fmt::format("tastebud_request_seconds_count{{path=\"{}\"}} {}\n", path, cumulative);
    }
    out += fmt::format("# HELP tastebud_events_written_total Events on disk.\n# TYPE tastebud_events_written_total counter\n"
                       "tastebud_events_written_total {}\n", events.load());
    out += fmt::format("# HELP tastebud_model_reloads_total Models swapped in since start.\n# TYPE tastebud_model_reloads_total counter\n"
                       "tastebud_model_reloads_total {}\n", reloads.load());
    out += fmt::format("# HELP tastebud_model_info The model being served.\n# TYPE tastebud_model_info gauge\n"
                       "tastebud_model_info{{version=\"{}\"}} 1\n", version);
    return out;
  }
};

}  // namespace

struct Server::Impl {
  ServeOptions options;
  std::ostream& log;
  httplib::Server http;
  int port = 0;
  mutable std::mutex loaded_mutex;
  std::shared_ptr<const Loaded> loaded;  // with --recommenders: the first use case (its dataset takes the events)
  std::map<std::string, std::shared_ptr<const Loaded>> recommenders;  // --recommenders: by use case
  std::unique_ptr<PutEventsLog> events, users_log, items_log;
  RecordSchema users_schema, items_schema;
  std::map<std::string, std::string> filters;  // --filters: name -> expression
  RecentItems recent;
  ServerMetrics metrics;
  std::atomic<uint64_t> answered{0};
  const uint64_t started = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  // The `current` watcher (with --models).
  std::thread watcher;
  std::mutex watcher_mutex;
  std::condition_variable watcher_wake;
  bool stopping = false;

  Impl(ServeOptions o, std::ostream& l) : options(std::move(o)), log(l), recent(options.max_sessions) {}

  // The batch-infer line of a request, with the asking user's or session's recent items.
  json line_with_recent(const json& request) const {
    json line = line_of(request);
    if (const std::optional<std::string> user = string_of(request, "userId")) {
      const std::vector<std::string> items = recent.get(*user);
      if (!items.empty()) line["recentItems"] = items;
    }
    return line;
  }

  std::shared_ptr<const Loaded> model() const {
    std::lock_guard lock(loaded_mutex);
    return loaded;
  }

  // The model a request asks: the one model, or with --recommenders the use case its
  // recommenderArn names (a name, or an ARN ending in /NAME, as the service's field).
  std::shared_ptr<const Loaded> model_for(const json& request) const {
    const std::optional<std::string> arn = string_of(request, "recommenderArn");
    if (options.recommenders.empty()) {
      if (arn) throw BadRequest("recommenderArn: this server answers one model (start it with --recommenders DIR for several)");
      return model();
    }
    std::vector<std::string> names;
    std::lock_guard lock(loaded_mutex);
    for (const auto& [name, m] : recommenders) names.push_back(name);
    if (!arn) throw BadRequest(fmt::format("recommenderArn: required (the server's recommenders: {})", fmt::join(names, ", ")));
    const std::string name = arn->substr(arn->rfind('/') == std::string::npos ? 0 : arn->rfind('/') + 1);
    const auto it = recommenders.find(name);
    if (it == recommenders.end())
      throw BadRequest(fmt::format("recommenderArn: no recommender '{}' (the server's: {})", name, fmt::join(names, ", ")));
    return it->second;
  }

  std::string recommendation_id() {
    return fmt::format("RID-{:x}-{:x}", started & 0xffffffffffull, answered.fetch_add(1) + 1);
  }

  // The filter a request names: an expression ("filter"), or by name from --filters ("filterArn",
  // the service's field: a name, or an ARN ending in /NAME).
  std::string filter_of(const json& request, const char* at = "") const {
    const std::optional<std::string> expression = string_of(request, "filter", at);
    const std::optional<std::string> arn = string_of(request, "filterArn", at);
    if (expression && arn) throw BadRequest(fmt::format("{}filter, filterArn: give one", at));
    if (!arn) return expression.value_or("");
    const std::string name = arn->substr(arn->rfind('/') == std::string::npos ? 0 : arn->rfind('/') + 1);
    const auto it = filters.find(name);
    if (it == filters.end()) {
      std::vector<std::string> names;
      for (const auto& [n, e] : filters) names.push_back(n);
      throw BadRequest(fmt::format("{}filterArn: no filter named '{}' (the server's --filters: {})", at, name,
                                   names.empty() ? "none given" : fmt::format("{}", fmt::join(names, ", "))));
    }
    return it->second;
  }

  // The request's promotions and metadataColumns as a job configuration's text (exploration as the
  // model's use case sets it, else none: the service explores by its campaign's settings, not per
  // request); "" when it has neither.
  std::string shaping_of(const json& request, const Loaded& m) const {
    json config = json::object();
    if (const auto p = request.find("promotions"); p != request.end() && !p->is_null()) {
      if (!p->is_array()) throw BadRequest("promotions: must be an array");
      json promotions = json::array();
      for (size_t k = 0; k < p->size(); ++k) {
        const std::string at = fmt::format("promotions[{}].", k);
        json promotion = (*p)[k];
        if (!promotion.is_object()) throw BadRequest(fmt::format("promotions[{}]: must be an object", k));
        if (promotion.contains("filterArn")) {
          promotion["filterExpression"] = filter_of(promotion, at.c_str());
          promotion.erase("filterArn");
        }
        promotions.push_back(std::move(promotion));
      }
      config["promotions"] = std::move(promotions);
    }
    if (const auto c = request.find("metadataColumns"); c != request.end() && !c->is_null()) config["metadataColumns"] = *c;
    if (config.empty()) return "";
    const UseCase* use_case = use_case_named(m.model->use_case);
    config["itemExplorationConfig"] = {{"explorationWeight", use_case ? use_case->exploration_weight : 0.0}};
    return config.dump();
  }

  json recommendations(const json& request) {
    check_fields(request, {"userId", "itemId", "numResults", "filter", "filterArn", "filterValues", "context", "promotions",
                           "metadataColumns", "recommenderArn"});
    const std::shared_ptr<const Loaded> m = model_for(request);
    const json output = answer_of(*m->for_request(filter_of(request), shaping_of(request, *m)), line_with_recent(request));
    json items = json::array();
    for (size_t k = 0; k < output.at("recommendedItems").size(); ++k) {
      json item{{"itemId", output["recommendedItems"][k]}, {"score", output["scores"][k]}};
      if (output.contains("promotionNames") && !output["promotionNames"][k].is_null())
        item["promotionName"] = output["promotionNames"][k];
      if (output.contains("metadata")) item["metadata"] = output["metadata"][k];
      json reasons = json::array();
      if (output.contains("reasons") && !output["reasons"][k].is_null()) reasons.push_back(output["reasons"][k]);
      if (output.contains("reason")) reasons.push_back(output["reason"]);
      if (!reasons.empty()) item["reason"] = std::move(reasons);
      items.push_back(std::move(item));
    }
    json out{{"itemList", std::move(items)}, {"recommendationId", recommendation_id()}};
    if (output.contains("warning")) out["warning"] = output["warning"];
    return out;
  }

  json personalized_ranking(const json& request) {
    check_fields(request, {"userId", "inputList", "filter", "filterArn", "filterValues", "context", "metadataColumns",
                           "recommenderArn"});
    if (!string_of(request, "userId")) throw BadRequest("userId: required");
    const auto list = request.find("inputList");
    if (list == request.end() || !list->is_array()) throw BadRequest("inputList: required, an array of item ids");
    if (list->size() > kMaxInputList)
      throw BadRequest(fmt::format("inputList: {} items, more than the {} the service ranks at once", list->size(), kMaxInputList));
    json line = line_with_recent(request);
    line["itemList"] = *list;
    const std::shared_ptr<const Loaded> m = model_for(request);
    const json output = answer_of(*m->for_request(filter_of(request), shaping_of(request, *m)), line);
    json ranking = json::array();
    for (size_t k = 0; k < output.at("recommendedItems").size(); ++k) {
      json item{{"itemId", output["recommendedItems"][k]}};
      if (!output["scores"][k].is_null()) item["score"] = output["scores"][k];
      if (output.contains("metadata")) item["metadata"] = output["metadata"][k];
      ranking.push_back(std::move(item));
    }
    json out{{"personalizedRanking", std::move(ranking)}, {"recommendationId", recommendation_id()}};
    if (output.contains("reason")) out["reason"] = output["reason"];
    return out;
  }

  // One PutEvents event as a log row; BadRequest names eventList[k].field.
  static EventRow event_row(const json& e, const std::string& user, size_t k) {
    const std::string at = fmt::format("eventList[{}].", k);
    if (!e.is_object()) throw BadRequest(fmt::format("eventList[{}]: must be an object", k));
    check_fields(e, {"eventId", "eventType", "eventValue", "itemId", "sentAt", "properties", "impression", "recommendationId"}, at);
    EventRow row;
    row.user_id = user;
    row.event_type = string_of(e, "eventType", at).value_or("");
    if (row.event_type.empty()) throw BadRequest(at + "eventType: required");
    row.item_id = string_of(e, "itemId", at).value_or("");
    if (row.item_id.empty()) throw BadRequest(at + "itemId: required (tastebud learns from item events)");
    const auto sent = e.find("sentAt");
    if (sent == e.end() || !sent->is_number()) throw BadRequest(at + "sentAt: required, Unix seconds");
    const double seconds = sent->get<double>();
    if (!(seconds >= 0 && seconds < 1e11)) throw BadRequest(at + "sentAt: Unix seconds from 0 to 1e11");
    row.timestamp = static_cast<int64_t>(seconds);
    if (const auto v = e.find("eventValue"); v != e.end() && !v->is_null()) {
      if (!v->is_number()) throw BadRequest(at + "eventValue: must be a number");
      row.event_value = v->get<double>();
    }
    return row;
  }

  json put_events(const json& request) {
    check_fields(request, {"trackingId", "sessionId", "userId", "eventList"});
    const std::optional<std::string> session = string_of(request, "sessionId");
    if (!session || session->empty()) throw BadRequest("sessionId: required");
    const std::string user = string_of(request, "userId").value_or(*session);  // anonymous: the session
    const auto list = request.find("eventList");
    if (list == request.end() || !list->is_array() || list->empty() || list->size() > kMaxEvents)
      throw BadRequest(fmt::format("eventList: required, 1 to {} events", kMaxEvents));
    std::string lines;
    std::vector<std::string> items;
    for (size_t k = 0; k < list->size(); ++k) {
      const EventRow row = event_row((*list)[k], user, k);
      lines += event_csv_line(row);
      items.push_back(row.item_id);
    }
    events->append(lines, list->size());
    metrics.events += list->size();
    // Their next requests see them, by user and by session (an anonymous user asks as the session).
    recent.add(user, items);
    if (user != *session) recent.add(*session, items);
    return json::object();
  }

  // PutUsers / PutItems: {"users": [{"userId", "properties"}]} (or items / itemId), 1 to 10
  // records, each property a field of the dataset's schema; upserted by the next import.
  json put_records(const json& request, const char* list_key, const char* id_key, const RecordSchema& schema,
                   PutEventsLog* log) {
    check_fields(request, {list_key});
    if (log == nullptr)
      throw BadRequest(fmt::format("{}: the model's dataset has no {} schema to write records in", list_key, list_key));
    const auto list = request.find(list_key);
    if (list == request.end() || !list->is_array() || list->empty() || list->size() > kMaxEvents)
      throw BadRequest(fmt::format("{}: required, 1 to {} records", list_key, kMaxEvents));
    std::string lines;
    for (size_t k = 0; k < list->size(); ++k) {
      const std::string at = fmt::format("{}[{}].", list_key, k);
      const json& record = (*list)[k];
      if (!record.is_object()) throw BadRequest(fmt::format("{}[{}]: must be an object", list_key, k));
      check_fields(record, {id_key, "properties"}, at);
      const std::string id = string_of(record, id_key, at).value_or("");
      if (id.empty()) throw BadRequest(fmt::format("{}{}: required", at, id_key));
      json properties = json::object();
      if (const auto p = record.find("properties"); p != record.end() && !p->is_null()) {
        properties = p->is_string() ? parse_body(p->get<std::string>()) : *p;  // the service sends a JSON string
        if (!properties.is_object()) throw BadRequest(at + "properties: must be an object (or its JSON text)");
      }
      std::vector<std::string> row{id};
      row.resize(1 + schema.fields.size());
      for (auto it = properties.begin(); it != properties.end(); ++it) {
        const std::string field = field_named(schema, it.key());
        if (field.empty())
          throw BadRequest(fmt::format("{}properties.{}: not a field of the dataset's {} schema ({})", at, it.key(), list_key,
                                       fmt::join(schema.fields, ", ")));
        const size_t column = std::find(schema.fields.begin(), schema.fields.end(), field) - schema.fields.begin();
        row[1 + column] = field_value(it.value(), at + "properties." + it.key());
      }
      lines += csv_line(row);
    }
    log->append(lines, list->size());
    return json::object();
  }

  bool authorized(const httplib::Request& req) const {
    if (options.api_key.empty()) return true;
    if (req.get_header_value("X-Api-Key") == options.api_key) return true;
    return req.get_header_value("Authorization") == "Bearer " + options.api_key;
  }

  // Runs a JSON endpoint: 401 without the key, 400 for the request's own problem, 500 for ours.
  template <class Answer>
  void handle(const httplib::Request& req, httplib::Response& res, Answer&& answer) {
    const auto start = std::chrono::steady_clock::now();
    json body;
    try {
      if (!authorized(req)) {
        res.status = 401;
        body = json{{"message", "missing or wrong API key (X-Api-Key or Authorization: Bearer)"}};
      } else {
        body = answer(parse_body(req.body));
        res.status = 200;
      }
    } catch (const BadRequest& e) {
      res.status = 400;
      body = json{{"message", e.what()}};
    } catch (const std::exception& e) {
      res.status = 500;
      body = json{{"message", e.what()}};
    }
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    metrics.observe(req.path, res.status, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }

  void routes() {
    http.Post("/recommendations", [this](const httplib::Request& q, httplib::Response& r) {
      handle(q, r, [this](const json& j) { return recommendations(j); });
    });
    http.Post("/personalized-ranking", [this](const httplib::Request& q, httplib::Response& r) {
      handle(q, r, [this](const json& j) { return personalized_ranking(j); });
    });
    http.Post("/events", [this](const httplib::Request& q, httplib::Response& r) {
      handle(q, r, [this](const json& j) { return put_events(j); });
    });
    http.Post("/users", [this](const httplib::Request& q, httplib::Response& r) {
      handle(q, r, [this](const json& j) { return put_records(j, "users", "userId", users_schema, users_log.get()); });
    });
    http.Post("/items", [this](const httplib::Request& q, httplib::Response& r) {
      handle(q, r, [this](const json& j) { return put_records(j, "items", "itemId", items_schema, items_log.get()); });
    });
    http.Get("/health", [this](const httplib::Request& q, httplib::Response& r) {
      const std::shared_ptr<const Loaded> m = model();
      json health{{"status", "ok"}, {"model", m->dir.string()}, {"version", m->version}};
      if (!options.recommenders.empty()) {
        std::lock_guard lock(loaded_mutex);
        for (const auto& [name, loaded] : recommenders) health["recommenders"].push_back(name);
      }
      r.set_content(health.dump(), "application/json");
      metrics.observe(q.path, 200, 0);
    });
    http.Get("/metrics", [this](const httplib::Request& q, httplib::Response& r) {
      if (!authorized(q)) {
        r.status = 401;
        return;
      }
      r.set_content(metrics.text(model()->version), "text/plain; version=0.0.4");
    });
  }

  void watch_current() {
    std::unique_lock lock(watcher_mutex);
    const auto every = std::chrono::duration<double>(options.reload_poll_seconds);
    while (!watcher_wake.wait_for(lock, every, [this] { return stopping; })) {
      std::error_code ec;
      const fs::path now = fs::canonical(options.models / "current", ec);
      if (!ec && now != model()->dir) reload_logged();
    }
  }

  void reload_logged() {
    try {
      if (!options.recommenders.empty()) {
        auto next = load_recommenders(options);
        std::lock_guard lock(loaded_mutex);
        recommenders = std::move(next);
        loaded = recommenders.begin()->second;
      } else {
        std::shared_ptr<const Loaded> next = load(options);
        std::lock_guard lock(loaded_mutex);
        loaded = std::move(next);
      }
      ++metrics.reloads;
      log << fmt::format("serve: now serving {}\n", model()->dir.string()) << std::flush;
    } catch (const std::exception& e) {
      log << fmt::format("serve: reload failed, still serving {}: {}\n", model()->dir.string(), e.what()) << std::flush;
    }
  }
};

Server::Server(ServeOptions options, std::ostream& log) : impl_(std::make_unique<Impl>(std::move(options), log)) {
  Impl& s = *impl_;
  TB_CHECK(!s.options.model.empty() + !s.options.models.empty() + !s.options.recommenders.empty() == 1,
           "serve: give a model directory (--model), a retrain directory (--models) or a recommenders directory (--recommenders)");
  if (!s.options.recommenders.empty()) {
    s.recommenders = load_recommenders(s.options);
    s.loaded = s.recommenders.begin()->second;
  } else {
    s.loaded = load(s.options);
  }
  if (!s.options.filters.empty()) s.filters = read_filters(s.options.filters, s.loaded->context.catalog);
  // cpp-httplib gives a kept-alive connection its thread until the client closes it: the pool is
  // sized for connections, not cores (answers themselves are short and single-threaded).
  const uint32_t threads = s.options.threads > 0 ? s.options.threads : std::max(64u, 8 * std::thread::hardware_concurrency());
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.http.set_payload_max_length(s.options.max_body);
  s.http.set_tcp_nodelay(true);  // a small answer goes out at once, not after the peer's delayed ACK
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server on the
  // same port would start and silently take half the connections.
  s.http.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  s.routes();
  s.port = s.options.port == 0 ? s.http.bind_to_any_port(s.options.host) : s.options.port;
  if (s.options.port != 0 && !s.http.bind_to_port(s.options.host, s.options.port)) s.port = -1;
  if (s.port < 0) throw Error(fmt::format("serve: cannot listen on {}:{}", s.options.host, s.options.port));
  fs::path events = s.options.events;
  if (events.empty()) {
    const fs::path data = s.loaded->model->data;
    TB_CHECK(!data.empty(), "serve: the model names no dataset; give --events DIR for the event log");
    events = data.parent_path() / (data.filename().string() + ".events");
  }
  s.events = std::make_unique<PutEventsLog>(events);
  // PutUsers and PutItems rows in the dataset's own Users and Items columns.
  s.users_schema = read_record_schema(s.loaded->model->data, "users", "USER_ID");
  s.items_schema = read_record_schema(s.loaded->model->data, "items", "ITEM_ID");
  // In subfolders: an import of the events folder reads only its own files.
  if (!s.users_schema.id.empty()) s.users_log = std::make_unique<PutEventsLog>(events / "users", "users", s.users_schema.header());
  if (!s.items_schema.id.empty()) s.items_log = std::make_unique<PutEventsLog>(events / "items", "items", s.items_schema.header());
  if (!s.options.models.empty()) s.watcher = std::thread([&s] { s.watch_current(); });
  log << fmt::format("serve: {} model {} ({} users, {} items) on http://{}:{}; events -> {}\n",
                     to_string(s.loaded->model->kind), s.loaded->dir.string(), s.loaded->model->user_ids.size(),
                     s.loaded->model->item_ids.size(), s.options.host, s.port, s.events->path().string())
      << std::flush;
}

Server::~Server() {
  stop();
  if (impl_->watcher.joinable()) impl_->watcher.join();
}

int Server::port() const { return impl_->port; }
void Server::run() { impl_->http.listen_after_bind(); }

void Server::stop() {
  {
    std::lock_guard lock(impl_->watcher_mutex);
    impl_->stopping = true;
  }
  impl_->watcher_wake.notify_all();
  impl_->http.stop();
}

void Server::reload() { impl_->reload_logged(); }
std::string Server::model_version() const { return impl_->model()->version; }

int serve(const ServeOptions& options, std::ostream& log) {
  // The signals go to one thread that waits for them; every other thread (the server's pool
  // among them) inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Server server(options, log);
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    for (;;) {
      int signal = 0;
      if (sigwait(&signals, &signal) != 0) continue;
      if (done) return;
      if (signal == SIGHUP) {
        server.reload();
        continue;
      }
      log << "serve: stopping (in-flight requests finish, the event log is on disk)\n" << std::flush;
      server.stop();
      return;
    }
  });
  server.run();
  done = true;
  pthread_kill(waiter.native_handle(), SIGTERM);  // the waiter, if the server stopped by itself
  waiter.join();
  return 0;
}

}  // namespace tastebud::host
