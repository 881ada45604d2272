#include "host/retrain.h"

#include <unistd.h>

#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <map>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <memory>
#include <ostream>

#include "host/event_log.h"
#include "host/features.h"
#include "host/scrub_model.h"
#include "host/sequence_training.h"
#include "host/split.h"
#include "host/warm_start.h"
#include "tastebud/atomic_file.h"
#include "tastebud/datasets/delete_users.h"
#include "tastebud/datasets/import.h"
#include "tastebud/directory_lock.h"
#include "tastebud/directory_swap.h"
#include "tastebud/engine/scorer.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

json metrics_json(const Metrics& m) {
  json j = json::object();
  for (const auto& [k, v] : m) {
    if (!is_interval_key(k)) j[k] = v;
  }
  return j;
}

using GivenFn = std::function<bool(const std::string&)>;

// field = from[key] where the caller did not give `flag` and the current model recorded `key`.
template <class Field>
void take_setting(const json& from, const GivenFn& given, const char* flag, const char* key, Field& field) {
  if (given && !given(flag) && from.contains(key)) field = from[key].get<Field>();
}

// A sasrec model's: its shape ("sequence") and its training settings ("training").
void inherit_sequence_settings(TrainJob& job, const json& config, const GivenFn& given) {
  const json& shape = config.at("sequence");
  take_setting(shape, given, "hidden", "hidden", job.hidden);
  take_setting(shape, given, "blocks", "blocks", job.blocks);
  take_setting(shape, given, "heads", "heads", job.heads);
  take_setting(shape, given, "max-sequence", "max_sequence", job.max_sequence);
  take_setting(shape, given, "dropout", "dropout", job.dropout);
  const json& training = config.at("training");
  take_setting(training, given, "batch-size", "batch_size", job.batch_size);
  take_setting(training, given, "negatives", "negatives", job.negatives);
  take_setting(training, given, "gbce-t", "gbce_t", job.gbce_t);
  take_setting(training, given, "lr", "lr", job.lr);
  take_setting(training, given, "eval", "eval", job.eval);
  take_setting(training, given, "event", "events", job.events);
  take_setting(training, given, "metadata", "metadata", job.metadata);
  take_setting(training, given, "text-buckets", "text_buckets", job.text_buckets);
}

// Settings of the current model (config.json, written by the training job) that the caller left
// unset: a warm start must keep the model's shape, and a refresh its recipe.
void inherit_settings(TrainJob& job, const json& config, const GivenFn& given) {
  const auto take = [&](const char* flag, const char* key, auto& field) { take_setting(config, given, flag, key, field); };
  take("model", "model", job.model);
  if (parse_model_type(config.value("model", std::string("neumf"))) == ModelType::kSASRec) {
    inherit_sequence_settings(job, config, given);
    return;
  }
  take("factors", "factors", job.factors);
  take("layers", "layers", job.layers);
  take("batch-size", "batch_size", job.batch_size);
  take("negatives", "negatives", job.negatives);
  take("lr", "lr", job.lr);
  take("optimizer", "optimizer", job.optimizer);
  take("l2", "l2", job.l2);
  take("loss", "loss", job.loss);
  take("eval", "eval", job.eval);
  take("event", "events", job.events);
  take("metadata", "metadata", job.metadata);
  // config.json leaves out metadata when it is none (and so do models from before the option):
  // missing means none, not the default `auto`, which a dataset with metadata resolves otherwise.
  if (given && !given("metadata") && !config.contains("metadata")) job.metadata = "none";
  take("text-buckets", "text_buckets", job.text_buckets);
  take("context", "context", job.context);
}

// A serve event log's events, users and items that no retrain took yet: one part each, imported
// together, marked taken after the import.
json import_event_log(const RetrainJob& job, std::ostream& log) {
  // The events in DIR, PutUsers' and PutItems' rows in DIR/users and DIR/items.
  std::map<std::string, fs::path> parts, dirs;
  std::map<std::string, EventBacklog> taken;
  std::map<std::string, uint64_t> rows;
  for (const char* kind : {"events", "users", "items"}) {
    dirs[kind] = std::string_view(kind) == "events" ? job.events : job.events / kind;
    if (!fs::is_directory(dirs[kind])) continue;
    parts[kind] = dirs[kind] / fmt::format(".backlog-{}.csv", ::getpid());
    taken[kind] = collect_event_backlog(dirs[kind], parts[kind], kind);
    rows[kind] = taken[kind].rows;
  }
  const auto remove_parts = [&] {
    for (const auto& [kind, part] : parts) fs::remove(part);
  };
  try {
    datasets::ImportOptions options;
    if (rows["events"] > 0) options.interactions = parts["events"];
    if (rows["users"] > 0) options.users = parts["users"];
    if (rows["items"] > 0) options.items = parts["items"];
    options.out = job.data;
    options.mode = fs::exists(job.data / "meta.json") ? datasets::ImportMode::Incremental : datasets::ImportMode::Full;
    if (rows["events"] + rows["users"] + rows["items"] > 0) datasets::import_dataset(options);
  } catch (...) {
    remove_parts();
    throw;
  }
  remove_parts();
  for (const auto& [kind, backlog] : taken) commit_event_backlog(dirs[kind], backlog);
  log << fmt::format("events: {} events, {} users, {} items from {}\n", rows["events"], rows["users"], rows["items"],
                     job.events.string());
  return json{{"dir", job.events.string()}, {"events", rows["events"]}, {"users", rows["users"]}, {"items", rows["items"]}};
}

void import_files(const RetrainJob& job, json& record, std::ostream& log) {
  json imported = json::array();
  const auto one = [&](const fs::path& interactions, bool with_metadata) {
    datasets::ImportOptions options;
    options.interactions = interactions;
    if (with_metadata) {
      options.users = job.users;
      options.items = job.items;
    }
    options.out = job.data;
    options.mode = fs::exists(job.data / "meta.json") ? datasets::ImportMode::Incremental
                                                      : datasets::ImportMode::Full;
    const datasets::ImportReport report = datasets::import_dataset(options);
    log << fmt::format("imported {} ({}): {} rows, {} new users, {} new items\n",
                       interactions.string(),
                       options.mode == datasets::ImportMode::Full ? "full" : "incremental",
                       report.rows_read, report.new_users, report.new_items);
    imported.push_back({{"interactions", interactions.string()},
                        {"rows", report.rows_read},
                        {"new_users", report.new_users},
                        {"new_items", report.new_items}});
  };
  for (size_t k = 0; k < job.interactions.size(); ++k) one(job.interactions[k], k == 0);
  if (job.interactions.empty() && (!job.users.empty() || !job.items.empty())) one({}, true);
  if (!job.events.empty()) record["events"] = import_event_log(job, log);
  record["imported"] = imported;
}

// The next version's name: one more than the highest number under versions/ and than the runs in
// retrain.jsonl, so a refused or failed candidate's number is not given to another.
std::string next_version(const fs::path& models) {
  const fs::path versions = models / "versions";
  uint64_t highest = 0;
  if (fs::exists(models / "retrain.jsonl")) {
    const std::string log = read_file(models / "retrain.jsonl");
    highest = static_cast<uint64_t>(std::count(log.begin(), log.end(), '\n'));
  }
  if (fs::exists(versions)) {
    for (const auto& entry : fs::directory_iterator(versions)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_directory() || name.empty() ||
          !std::all_of(name.begin(), name.end(), ::isdigit))
        continue;
      highest = std::max<uint64_t>(highest, std::stoull(name));
    }
  }
  return fmt::format("{:06d}", highest + 1);
}

// DIR/current -> versions/NAME in one step (directory_swap.h: a new symlink renamed over the old).
void switch_current(const fs::path& models, const std::string& version) {
  replace_symlink(models / "current", fs::path("versions") / version);
}

// Removes the oldest versions beyond `keep`, never the one `current` points to.
void prune_versions(const fs::path& models, uint32_t keep, std::ostream& log) {
  const fs::path versions = models / "versions";
  const fs::path current =
      fs::exists(models / "current") ? fs::canonical(models / "current") : fs::path();
  std::vector<fs::path> all;
  for (const auto& entry : fs::directory_iterator(versions)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && !name.empty() && std::all_of(name.begin(), name.end(), ::isdigit))
      all.push_back(entry.path());
  }
  std::sort(all.begin(), all.end(), std::greater<>());
  for (size_t k = std::max<size_t>(keep, 1); k < all.size(); ++k) {
    if (fs::canonical(all[k]) == current) continue;
    // Out of sight first: a kill while removing leaves a temporary that the next run clears,
    // never a numbered version without its model.
    const fs::path doomed = temporary_name(all[k]);
    fs::rename(all[k], doomed);
    fs::remove_all(doomed);
    log << fmt::format("removed {} (keeping the newest {})\n", all[k].string(), keep);
  }
}

void append_record(const fs::path& models, const json& record) {
  const fs::path path = models / "retrain.jsonl";
  std::string text = fs::exists(path) ? read_file(path) : std::string();
  if (!text.empty() && text.back() != '\n') text += '\n';  // a line someone left unfinished
  text += record.dump() + "\n";
  write_file_atomically(path, text);
}

// The metric that decides, checked against what the candidate's protocol reports.
std::string chosen_metric(const RetrainJob& job, const TrainPlan& plan) {
  const TrainJob& train = plan.job;
  const EvalProtocol protocol = plan.protocol;
  TB_CHECK(protocol != EvalProtocol::kNone,
           "retrain: the candidate must be evaluated (--eval none cannot decide a promotion)");
  TB_CHECK(train.context.empty(),
           "retrain: models with --context are not evaluated by retrain yet");
  const std::string metric = !job.metric.empty() ? job.metric : plan.metric;
  const std::vector<std::string> known = metric_names(protocol);
  TB_CHECK(std::find(known.begin(), known.end(), metric) != known.end(),
           fmt::format("retrain: unknown --metric '{}' for --eval {}: expected one of {}", metric,
                       train.eval, fmt::join(known, ", ")));
  return metric;
}

// The candidate's training settings: the current model's where not given, each checked.
TrainPlan candidate_settings(const RetrainJob& job, const fs::path& current) {
  TB_CHECK(std::isfinite(job.max_regression),
           fmt::format("--max-regression must be a finite number, not {}", job.max_regression));
  TrainJob train = job.train;
  if (!current.empty()) {
    inherit_settings(train, json::parse(read_file(current / "config.json")), job.given);
    train.warm_start = current;
    if (job.warm_epochs > 0) train.epochs = job.warm_epochs;
  } else {
    train.update = false;  // nothing to refresh: the first model trains from scratch
  }
  return make_plan(train);
}

double metric_of(const Metrics& m, const std::string& metric, const fs::path& dir) {
  const auto it = m.find(metric);
  TB_CHECK(it != m.end(),
           fmt::format("retrain: {} has no metric '{}' on this split", dir.string(), metric));
  return it->second;
}

// An update that found nothing changed since the current model: nothing trained, `current` stays.
RetrainResult leave_unchanged(const fs::path& models, const fs::path& candidate, json& record,
                              std::chrono::steady_clock::time_point started) {
  std::error_code ignored;
  fs::remove_all(candidate, ignored);
  RetrainResult result;
  result.decision = "unchanged";
  result.candidate = fs::canonical(models / "current");
  record.erase("candidate");
  record["decision"] = result.decision;
  record["seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  append_record(models, record);
  return result;
}

// Users deleted from the dataset (delete-users) after the candidate's training read it.
void drop_deleted_users(const fs::path& candidate, const fs::path& data, std::ostream& log) {
  const ScrubReport scrubbed = scrub_users_missing_from(candidate, datasets::Dataset::open(data));
  if (scrubbed.users_removed > 0)
    log << fmt::format("removed {} users deleted from {} while the candidate trained\n",
                       scrubbed.users_removed, data.string());
}

// A model directory of either kind judged on the split: the sequence model reads each user's events
// before the held-out ones (the plan's rules), the NeuMF family scores from its rows.
Metrics evaluate_any_model_dir(const fs::path& dir, const TrainPlan& plan, const datasets::Dataset& dataset,
                               const Split& split) {
  const json config = json::parse(read_file(dir / "config.json"));
  if (parse_model_type(config.value("model", std::string("neumf"))) == ModelType::kSASRec)
    return evaluate_sequence_dir(dir, plan, dataset, split, plan.job.threads);
  return evaluate_model_dir(dir, dataset, split, plan.job.threads);
}

}  // namespace

Metrics evaluate_model_dir(const fs::path& model_dir, const datasets::Dataset& dataset,
                           const Split& split, uint32_t threads) {
  const ParentModel model = load_parent_model(model_dir);
  ModelConfig config = model.state.params.config;
  TB_CHECK(
      !config.has_context(),
      fmt::format("{}: models with context are not evaluated by retrain yet", model_dir.string()));
  config.num_users = dataset.num_users();
  config.num_items = dataset.num_items();
  ModelParams zero = ModelParams::initialize(config, 0);
  for (Tensor* t : {&zero.user_gmf, &zero.item_gmf, &zero.user_mlp, &zero.item_mlp})
    std::fill(t->values.begin(), t->values.end(), 0.0f);
  const TrainState state = warm_start_state(model, TrainState::fresh(zero, OptimizerParams{}),
                                            dataset, model.optimizer, nullptr, nullptr);
  const ModelParams& params = state.params;
  FeatureInputs users, items;
  if (config.user_features.enabled())
    users = encode_features(dataset.users, config.user_features, config.num_users);
  if (config.item_features.enabled())
    items = encode_features(dataset.items, config.item_features, config.num_items);
  const auto scorer = config.has_metadata() ? std::make_unique<Scorer>(params, users, items)
                                            : std::make_unique<Scorer>(params);
  return evaluate(
      split,
      [&](uint32_t u, std::span<const uint32_t> candidates, std::span<float> out) {
        if (candidates.empty())
          scorer->score_all(u, out);
        else
          scorer->score(u, candidates, out);
      },
      threads);
}

RetrainResult run_retrain(const RetrainJob& job, std::ostream& log) {
  const auto step = [&](const char* name) {
    if (job.before_step) job.before_step(name);
  };
  datasets::check_outside_dataset(job.models, job.data, "models");
  fs::create_directories(job.models / "versions");
  const DirectoryLock lock(job.models, "this retrain");
  remove_stale_temporaries(job.models);
  remove_stale_temporaries(job.models / "versions");
  const fs::path current = job.models / "current";
  TB_CHECK(!fs::exists(fs::symlink_status(current)) || fs::is_symlink(fs::symlink_status(current)),
           fmt::format("{}: exists and is not a symlink; retrain manages it as a link to a version",
                       current.string()));
  const bool has_current = fs::exists(current);  // a dangling link counts as none

  json record{{"time", utc_now()}, {"dataset", fs::absolute(job.data).lexically_normal().string()}};
  RetrainResult result;
  fs::path candidate;
  const auto started = std::chrono::steady_clock::now();
  // Every setting is checked before anything is imported or trained.
  TrainPlan plan = candidate_settings(job, has_current ? fs::canonical(current) : fs::path());
  TrainJob& train = plan.job;  // where the candidate trains: set below
  result.metric = chosen_metric(job, plan);
  try {
    step("import");
    import_files(job, record, log);
    if (has_current) record["parent"] = train.warm_start.string();
    const std::string version = next_version(job.models);
    // The candidate trains under a temporary name (".NNNNNN.tmp-PID-N") and takes its version's
    // name only when promoted: a killed retrain leaves no half-trained version, and the next run
    // removes what it left (remove_stale_temporaries).
    const fs::path version_dir = job.models / "versions" / version;
    candidate = temporary_name(version_dir);
    train.data = job.data;
    train.out = candidate;
    train.resume = false;
    record["candidate"] = version_dir.string();
    record["mode"] = !has_current ? "scratch" : train.update ? "update" : "warm-start";
    step("train");
    const auto train_started = std::chrono::steady_clock::now();
    const bool unchanged = run_training(plan, log).unchanged;
    record["train_seconds"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - train_started).count();
    if (unchanged) return leave_unchanged(job.models, candidate, record, started);

    step("evaluate");
    const datasets::Dataset dataset = datasets::Dataset::open(job.data);
    SplitOptions split_options = plan.split;
    split_options.record_held_out_rows = false;
    const Split split = make_split(dataset, split_options);
    result.candidate_metrics = evaluate_any_model_dir(candidate, plan, dataset, split);
    if (has_current) result.current_metrics = evaluate_any_model_dir(current, plan, dataset, split);
    const double mine = metric_of(result.candidate_metrics, result.metric, candidate);
    const double theirs =
        has_current ? metric_of(result.current_metrics, result.metric, current) : 0.0;
    const bool promote = !has_current || mine >= theirs - job.max_regression;
    result.decision = promote ? "promoted" : "refused";
    result.candidate = version_dir;
    log << fmt::format(
        "candidate {} {:.4f}, current {}; {}\n", result.metric, mine,
        has_current ? fmt::format("{:.4f}", theirs) : "none",
        promote ? "promoted" : fmt::format("refused: worse by more than {}", job.max_regression));
    if (promote) {
      step("promote");
      // No deletion lands between this check and the switch; one that landed while the
      // candidate trained on the older dataset is applied to it here.
      const DirectoryLock data_lock(job.data, "this retrain's promotion");
      drop_deleted_users(candidate, job.data, log);
      fs::rename(candidate, version_dir);
      candidate = version_dir;
      fsync_directory(job.models / "versions");
      switch_current(job.models, version);
    } else {
      fs::remove_all(candidate);
    }
    prune_versions(job.models, job.keep, log);
  } catch (const std::exception& e) {
    // `current` has not moved (switching it is the last step that can fail): the candidate goes.
    if (!candidate.empty() &&
        (!fs::exists(current) || fs::canonical(current) != fs::weakly_canonical(candidate))) {
      std::error_code ignored;
      fs::remove_all(candidate, ignored);
    }
    record["decision"] = "failed";
    record["error"] = e.what();
    record["seconds"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    append_record(job.models, record);
    throw;
  }
  record["metric"] = result.metric;
  record["max_regression"] = job.max_regression;
  record["candidate_metrics"] = metrics_json(result.candidate_metrics);
  record["current_metrics"] = has_current ? metrics_json(result.current_metrics) : json(nullptr);
  record["decision"] = result.decision;
  record["seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  append_record(job.models, record);
  return result;
}

}  // namespace tastebud::host
