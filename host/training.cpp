#include "host/training.h"


#include <optional>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "host/distributed_eval.h"
#include "host/features.h"
#include "host/model_dir.h"
#include "host/progress.h"
#include "host/recipes.h"
#include "host/split.h"
#include "host/warm_start.h"
#include "tastebud/atomic_file.h"
#include "tastebud/datasets/delete_users.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/directory_lock.h"
#include "tastebud/engine/backends.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/engine/scorer.h"
#include "tastebud/engine/train_options.h"
#include "tastebud/error.h"

namespace tastebud::host {

// The --event rules, then the job file's [[events]] tables, as TYPE[:THRESHOLD[:WEIGHT]].
std::vector<std::string> job_events(const TrainJob& job) {
  std::vector<std::string> rules = job.events;
  if (job.config_file.empty() || !rules.empty()) return rules;
  toml::table config;
  try {
    config = toml::parse_file(job.config_file.string());
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}: {}", job.config_file.string(), e.source().begin.line, e.description()));
  }
  const toml::array* events = config["events"].as_array();
  if (!events) return rules;
  for (size_t k = 0; k < events->size(); ++k) {
    const toml::table* t = events->get(k)->as_table();
    const auto type = t ? (*t)["event_type"].value<std::string>() : std::nullopt;
    if (!type) {
      throw Error(fmt::format("{}: [[events]] entry {} needs event_type = \"...\"", job.config_file.string(), k + 1));
    }
    const auto threshold = (*t)["value_threshold"].value<double>();
    const auto weight = (*t)["weight"].value<double>();
    rules.push_back(fmt::format("{}:{}:{}", *type, threshold ? fmt::format("{}", *threshold) : "",
                                weight ? *weight : 1.0));
  }
  return rules;
}

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The settings that define the trained model; a resumed run must match them.
json job_to_json(const TrainJob& job) {
  json j{{"data", fs::absolute(job.data).string()},
              {"model", job.model},
              {"factors", job.factors},
              {"layers", job.layers},
              {"batch_size", job.batch_size},
              {"negatives", job.negatives},
              {"lr", job.lr},
              {"optimizer", job.optimizer},
              {"l2", job.l2},
              {"loss", job.loss},
              {"sampler", job.sampler},
              {"sampler_alpha", job.sampler_alpha},
              {"seed", job.seed},
              {"eval", job.eval},
              {"eval_users", job.eval_users},
              {"impression_negatives", job.impression_negatives},
              {"events", job_events(job)}};
  // Only when used, so that runs from before these options existed still resume.
  if (job.validation_users > 0 && parse_eval_protocol(job.eval) != EvalProtocol::kNone) {
    j["validation_users"] = job.validation_users;
  }
  if (job.metadata != "none") {
    j["metadata"] = job.metadata;
    j["text_buckets"] = job.text_buckets;
  }
  if (!job.context.empty()) j["context"] = job.context;
  if (!job.warm_start.empty()) j["warm_start"] = fs::absolute(job.warm_start).lexically_normal().string();
  if (job.update) j["update"] = true;
  if (job.embedding_updates != "lazy") j["embedding_updates"] = job.embedding_updates;
  return j;
}

OptimizerKind parse_optimizer(const std::string& name) {
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "adagrad") return OptimizerKind::kAdagrad;
  if (name == "sgd") return OptimizerKind::kSgd;
  throw Error(fmt::format("unknown --optimizer '{}': expected adam, adagrad or sgd", name));
}

EmbeddingUpdates parse_embedding_updates(const std::string& name) {
  if (name == "lazy") return EmbeddingUpdates::kLazy;
  if (name == "dense") return EmbeddingUpdates::kDense;
  throw Error(fmt::format("unknown --embedding-updates '{}': expected auto, lazy or dense", name));
}

LossKind parse_loss(const std::string& name) {
  if (name == "bce") return LossKind::kBce;
  if (name == "bpr") return LossKind::kBpr;
  throw Error(fmt::format("unknown --loss '{}': expected bce or bpr", name));
}

SamplerKind parse_sampler(const std::string& name) {
  if (name == "uniform") return SamplerKind::kUniform;
  if (name == "popularity") return SamplerKind::kPopularity;
  throw Error(fmt::format("unknown --sampler '{}': expected uniform or popularity", name));
}

json metrics_json(const Metrics& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}

Metrics metrics_from_json(const json& j) {
  Metrics m;
  for (auto it = j.begin(); it != j.end(); ++it) m[it.key()] = it.value().get<double>();
  return m;
}

json record_json(const EpochRecord& r) {
  return json{{"epoch", r.epoch},
              {"loss", r.loss},
              {"samples", r.samples},
              {"seconds", r.seconds},
              {"samples_per_second", r.seconds > 0 ? r.samples / r.seconds : 0.0},
              {"metrics", metrics_json(r.metrics)},
              {"impression_negatives", r.impression_negatives}};
}

EpochRecord record_from_json(const json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch");
  r.loss = j.at("loss");
  r.samples = j.at("samples");
  r.seconds = j.at("seconds");
  r.metrics = metrics_from_json(j.at("metrics"));
  r.impression_negatives = j.value("impression_negatives", uint64_t{0});
  return r;
}

SeenItems seen_of(const TrainingSet& train) {
  return SeenItems{train.user_offsets, train.item};
}

// Discards what is written to it: the log of ranks other than 0.
struct NullStream : std::ostream {
  NullStream() : std::ostream(nullptr) {}
};

// FNV-1a over what every rank must agree on before the first step: the model's shape and the
// training positives in order.
uint64_t training_fingerprint(const ModelConfig& config, const TrainingSet& train) {
  uint64_t h = 1469598103934665603ull;
  const auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  mix(config.num_users);
  mix(config.num_items);
  mix(train.size());
  for (size_t k = 0; k < train.size(); ++k) mix((static_cast<uint64_t>(train.user[k]) << 32) | train.item[k]);
  return h;
}

// Several ranks must read the same dataset the same way; a rank that differs from rank 0 stops.
void check_same_training_set(Communicator& comm, const fs::path& data, const ModelConfig& config,
                             const TrainingSet& train) {
  if (comm.size() == 1) return;
  const uint64_t mine = training_fingerprint(config, train);
  uint64_t root = mine;
  comm.broadcast({reinterpret_cast<std::byte*>(&root), sizeof(root)}, 0);
  if (root != mine) {
    throw Error(fmt::format("rank {} reads another dataset than rank 0 at {} ({} users, {} items, {} "
                            "positives here): every rank must see the same dataset directory",
                            comm.rank(), data.string(), config.num_users, config.num_items, train.size()));
  }
}

// The parameters and both optimizer states of the whole model, whoever holds them.
uint64_t whole_state_bytes(const ModelConfig& config) {
  const ParamLayout layout(config);
  uint64_t floats = 0;
  for (const TensorSlot& slot : layout.slots()) floats += slot.size();
  return 3 * floats * sizeof(float);
}

}  // namespace

SplitOptions split_options_of(const TrainJob& job) {
  SplitOptions o;
  for (const std::string& rule : job_events(job)) o.events.push_back(parse_event_rule(rule));
  o.protocol = parse_eval_protocol(job.eval);
  o.impressions = job.impression_negatives > 0.0f;
  o.positive_rows = !job.context.empty();
  o.max_eval_users = job.eval_users > 0 ? job.eval_users : o.protocol == EvalProtocol::kHoldout ? 10000 : 0;
  return o;
}

namespace {

// metrics.jsonl: one row per epoch.
std::string metrics_lines(const std::vector<EpochRecord>& history) {
  std::string lines;
  for (const EpochRecord& r : history) lines += record_json(r).dump() + "\n";
  return lines;
}

// --embedding-updates auto, asked for by name (the default is lazy): dense (every id-table row
// takes Adam's step each step, as torch.optim.Adam on nn.Embedding, which learned faster in the
// first epochs on the synthetic MovieLens-100K layout, not on the real exports) where that costs
// at most kDenseRowsPerBatchRow rows per batch row; the sparse (lazy) update otherwise, and always
// on several ranks and in update mode, which train lazily only.
constexpr uint64_t kDenseRowsPerBatchRow = 16;

std::string resolve_embedding_updates(const TrainJob& job, const datasets::Dataset& dataset, int ranks,
                                      std::ostream& log) {
  const uint64_t rows = uint64_t{dataset.num_users()} + dataset.num_items();
  const bool dense = ranks == 1 && !job.update && rows <= kDenseRowsPerBatchRow * job.batch_size;
  const std::string chosen = dense ? "dense" : "lazy";
  log << fmt::format("--embedding-updates auto: {} ({} id rows {} {} x the batch of {}{})\n", chosen, rows,
                     dense ? "<=" : ">", kDenseRowsPerBatchRow, job.batch_size,
                     ranks > 1 ? "; several ranks train lazily" : job.update ? "; update mode trains lazily" : "");
  return chosen;
}

// The choices `auto` leaves to the dataset, resolved on it and said in the log (config.json
// records what was chosen): --metadata (the sides the dataset has fields for, host/features.h)
// and --embedding-updates.
TrainJob with_resolved_choices(const TrainJob& job, const datasets::Dataset& dataset, int ranks, std::ostream& log) {
  TrainJob resolved = job;
  if (job.metadata == "auto") {
    std::string note;
    resolved.metadata = resolve_metadata(job.metadata, dataset, job.model, &note);
    log << note << "\n";
  }
  if (job.embedding_updates == "auto") resolved.embedding_updates = resolve_embedding_updates(job, dataset, ranks, log);
  return resolved;
}

// The backend's options of a job whose `auto` choices are resolved, each setting checked.
TrainOptions train_options_of(const TrainJob& job) {
  TrainOptions options;
  options.batch_size = job.batch_size;
  options.negatives = job.negatives;
  options.loss = parse_loss(job.loss);
  options.sampler = parse_sampler(job.sampler);
  options.sampler_alpha = job.sampler_alpha;
  options.optimizer.kind = parse_optimizer(job.optimizer);
  options.optimizer.lr = job.lr;
  options.optimizer.l2 = job.l2;
  options.embedding_updates = parse_embedding_updates(job.embedding_updates);
  options.seed = job.seed;
  options.threads = job.threads;
  options.tf32 = job.tf32;
  TB_CHECK(job.impression_negatives >= 0.0f && job.impression_negatives <= 1.0f,
           "--impression-negatives is a share of the negatives, from 0 to 1");
  options.impression_share = job.impression_negatives;
  TB_CHECK(job.epochs > 0, "--epochs must be positive");
  TB_CHECK(job.text_buckets > 0, "--text-buckets must be positive");
  validate_train_options(options);
  return options;
}

}  // namespace

void check_training_settings(const TrainJob& job) {
  TrainJob resolved = job;
  if (resolved.embedding_updates == "auto") resolved.embedding_updates = "lazy";
  if (!is_recipe(job.model)) train_options_of(resolved);
  parse_eval_protocol(job.eval);
}

void apply_model_defaults(TrainJob& job, const std::function<bool(const std::string&)>& given) {
  // A long tail of following items: an item any of the user's latest items led to, however
  // rarely, ranks above one none led to (on online-retail, 100 kept 0.79 validation HR@10, 1000 0.85).
  if (job.model == "transitions" && !given("neighbors")) job.neighbors = 1000;
  if (job.model != "mf") return;
  if (!given("factors")) job.factors = 64;
  if (!given("negatives")) job.negatives = 8;
  if (!given("lr")) job.lr = 0.002f;
  if (!given("l2")) job.l2 = 0.005f;
}

TrainResult run_training(const TrainJob& requested, std::ostream& job_log) {
  Communicator& comm = requested.comm != nullptr ? *requested.comm : world_communicator();
  datasets::check_outside_dataset(requested.out, requested.data, "--out");
  NullStream quiet;
  std::ostream& log = comm.root() ? job_log : quiet;  // rank 0 speaks for the job
  // The dataset, opened once (recipes open their own).
  std::optional<datasets::Dataset> opened;
  if (!is_recipe(requested.model)) opened.emplace(datasets::Dataset::open(requested.data));
  const TrainJob job = opened ? with_resolved_choices(requested, *opened, comm.size(), log) : requested;
  // One writer per model directory (rank 0 of a job on several); what a killed writer left there
  // goes first.
  std::optional<DirectoryLock> lock;
  if (comm.root()) {
    lock.emplace(job.out, "this training run");
    remove_stale_temporaries(job.out);
  }
  if (is_recipe(job.model)) {
    TB_CHECK(comm.size() == 1, fmt::format("--model {} is a recipe computed in one process; run it without mpirun", job.model));
    return train_recipe(job, log);
  }
  const EvalProtocol protocol = parse_eval_protocol(job.eval);
  TrainOptions options = train_options_of(job);
  options.comm = &comm;

  const std::string metric = !job.early_stop_metric.empty() ? job.early_stop_metric
                             : holds_out_newest(protocol) ? "ndcg@10" : "hr@10";
  const fs::path checkpoint_path = job.out / "checkpoint.bin";
  const json job_json = job_to_json(job);

  // Resume: the stored job must match, and the run continues after the last finished epoch.
  std::optional<TrainState> resumed;
  json resumed_extra;
  if (job.resume) {
    if (!fs::exists(checkpoint_path)) {
      throw Error(fmt::format("--resume: {} has no checkpoint.bin; start without --resume", job.out.string()));
    }
    std::string extra;
    // Several ranks: each reads the file in pieces and keeps its own rows of the id tables.
    resumed = comm.size() > 1 ? load_checkpoint_shard(checkpoint_path, &extra, comm.rank(), comm.size())
                              : load_checkpoint(checkpoint_path, &extra);
    resumed_extra = json::parse(extra);
    const int ranks = resumed_extra.value("ranks", 1);
    if (ranks != comm.size()) {
      throw Error(fmt::format("--resume: {} was trained on {} rank(s) but this run has {}; resume with "
                              "{} rank(s)",
                              checkpoint_path.string(), ranks, comm.size(), ranks));
    }
    const json& stored = resumed_extra.at("job");
    for (auto it = job_json.begin(); it != job_json.end(); ++it) {
      if (stored.value(it.key(), json()) != it.value()) {
        throw Error(fmt::format("--resume: {} was {} in the interrupted run but is {} now; resume "
                                "with the same settings",
                                it.key(), stored.value(it.key(), json()).dump(), it.value().dump()));
      }
    }
  } else if (fs::exists(checkpoint_path)) {
    throw Error(fmt::format("{} already holds a training run; pass --resume to continue it or "
                            "choose another --out",
                            job.out.string()));
  }

  const datasets::Dataset& dataset = *opened;
  SplitOptions split_options = split_options_of(job);
  const bool validate = protocol != EvalProtocol::kNone && job.validation_users > 0;
  TB_CHECK(job.judge_on_test || validate, "a job that is not judged on the test split needs a validation split");
  split_options.record_held_out_rows = validate;
  Split split = make_split(dataset, split_options);  // the test split: judges, never chooses
  std::optional<Split> validation;
  if (validate) validation = make_validation_split(dataset, split_options, split, job.validation_users);
  // What the model trains on: the validation split's training rows, a subset of the test split's.
  Split& fit = validation ? *validation : split;
  TB_CHECK(fit.train.size() > 0, fmt::format("{}: no interactions to train on", job.data.string()));

  ModelConfig config;
  config.kind = parse_model_kind(job.model);
  config.num_users = dataset.num_users();
  config.num_items = dataset.num_items();
  // MF's rows carry its two bias columns beside the factors (model.h).
  config.factors = job.factors + (config.kind == ModelKind::kMF ? ModelConfig::kMfBiasColumns : 0);
  config.layers = job.layers;
  const MetadataSides sides = parse_metadata_sides(job.metadata);
  if (sides.users) {
    config.user_features = make_feature_spec(dataset.users, job.text_buckets, "user");
    fit.train.user_features = encode_features(dataset.users, config.user_features, config.num_users);
  }
  if (sides.items) {
    config.item_features = make_feature_spec(dataset.items, job.text_buckets, "item");
    fit.train.item_features = encode_features(dataset.items, config.item_features, config.num_items);
  }
  // Context: each positive carries its interaction's, and each eval user is ranked in the held-out
  // interaction's (a contextual vector per eval user, added to the user's half of the MLP input).
  FeatureInputs eval_context_rows, validation_context_rows;
  if (!job.context.empty()) {
    config.context = make_context_spec(dataset.interactions, job.context);
    fit.train.context = encode_context(dataset.interactions, config.context, fit.positive_row);
    eval_context_rows = encode_context(dataset.interactions, config.context, split.eval_row);
    if (validation) validation_context_rows = encode_context(dataset.interactions, config.context, validation->eval_row);
  }
  config.validate();
  check_training_memory(estimate_training_bytes(config, fit.train.size(), options), physical_memory_bytes(),
                        config, options);
  check_same_training_set(comm, job.data, config, fit.train);
  // Warm start: the parent's rows by external id; update mode trains the changed rows alone.
  std::optional<ParentModel> parent;
  if (!job.warm_start.empty()) {
    parent = load_parent_model(job.warm_start, &dataset, static_cast<uint32_t>(comm.rank()),
                               static_cast<uint32_t>(comm.size()));
  }
  TB_CHECK(!job.update || parent, "--update needs --warm-start MODEL_DIR: the model it refreshes");
  if (parent) check_same_shape(*parent, config);
  if (job.update && changed_rows(*parent, dataset).none()) {
    log << "update: nothing changed since the parent model; nothing to train\n";
    TrainResult unchanged;
    unchanged.unchanged = true;
    return unchanged;
  }
  std::optional<TrainingSet> update_set;
  if (job.update) update_set = start_update(*parent, dataset, fit.train, options, log);

  TrainState state;
  if (resumed) {
    state = std::move(*resumed);
  } else {
    // Several ranks: each draws its own rows of the id tables only (a warm start then takes the
    // parent's rows for them, read from the parent's files for this rank alone).
    const bool shard = comm.size() > 1;
    ModelParams params = shard ? ModelParams::initialize_shard(config, job.seed, comm.rank(), comm.size())
                               : ModelParams::initialize(config, job.seed);
    zero_untrained_rows(params, fit.train);
    state = TrainState::fresh(params, options.optimizer);
    if (parent) state = start_warm(*parent, std::move(state), dataset, job.optimizer, log);
  }
  std::string notice;
  if (job.impression_negatives > 0.0f && fit.train.impression_offsets.empty()) {
    log << "--impression-negatives: " << job.data.string()
        << " has no IMPRESSION lists (or the split does not use them); every negative is sampled\n";
  }
  const uint64_t whole_bytes = whole_state_bytes(config);
  std::unique_ptr<Backend> backend =
      make_backend(job.device, update_set ? *update_set : fit.train, options, std::move(state), &notice);
  if (!notice.empty()) log << notice << "\n";
  if (comm.size() > 1) {
    double held[1] = {static_cast<double>(backend->held_bytes())};
    const double mine = held[0];
    comm.allreduce_sum(held);
    log << fmt::format("{} ranks: rank 0 holds {:.2f} MiB of parameters and optimizer state, {:.2f} MiB "
                       "on average, of {:.2f} MiB for the whole model (id tables sharded by row, dense "
                       "layers and metadata tables replicated); each trains 1/{} of every batch\n",
                       comm.size(), mine / 1048576.0, held[0] / comm.size() / 1048576.0,
                       whole_bytes / 1048576.0, comm.size());
  }
  const bool writer = comm.root();  // the one rank that writes the model directory

  if (writer) fs::create_directories(job.out);
  TrainResult result;
  result.backend = backend->name();
  if (job.judge_on_test) result.popularity = evaluate_popularity(split);
  // The baseline beside the model's curves in `tastebud report` (host/report.h).
  if (writer && protocol != EvalProtocol::kNone && job.judge_on_test) {
    write_file_atomically(job.out / "baseline.json", json{{"popularity", metrics_json(result.popularity)}}.dump(2) + "\n");
  }
  uint32_t first_epoch = 1;
  double best_value = -1;
  if (job.resume) {
    for (const json& row : resumed_extra.at("history")) result.history.push_back(record_from_json(row));
    first_epoch = resumed_extra.at("epochs_done").get<uint32_t>() + 1;
    result.best_epoch = resumed_extra.at("best_epoch");
    best_value = resumed_extra.at("best_value");
    // The checkpoint is written before model.bin and metrics.jsonl: a kill between them leaves
    // those one epoch behind, and the checkpoint's state is that epoch's, so they are redone here.
    if (result.best_epoch == first_epoch - 1) {
      const TrainState resumed = backend->held_state();
      save_model(comm, resumed.params, job.out / "model.bin");  // collective on several ranks
    }
    if (writer) write_file_atomically(job.out / "metrics.jsonl", metrics_lines(result.history));
  } else if (writer) {
    write_ids(dataset.user_ids, job.out / "user_ids.json");
    write_ids(dataset.item_ids, job.out / "item_ids.json");
    write_seen(seen_of(split.train), job.out / "seen.bin");  // every training row, the validation's too
    write_vocabularies(dataset, config, job.out / "vocabularies.json");
    json config_json = job_json;
    config_json["model_config"] = json::parse(config_to_json(config));
    config_json["dataset"] = dataset_record(dataset);
    if (parent) config_json["parent"] = parent_record(*parent);
    config_json["checksums"] = file_checksums(job.out);
    write_file_atomically(job.out / "config.json", config_file_text(config_json));
  }

  log << fmt::format("training {} on {} ({} users, {} items, {} positives) with the {} backend, {} "
                     "samples per epoch\n",
                     job.model, job.data.string(), config.num_users, config.num_items,
                     fit.train.size(), backend->name(), backend->samples_per_epoch());
  if (validation) {
    log << fmt::format("validation: {} users of the training rows choose the epoch ({} on them); {} test users judge it\n",
                       validation->eval_users.size(), metric, split.eval_users.size());
  }

  ProgressLine progress("samples", job.progress && writer);
  uint32_t since_best = 0;
  for (uint32_t epoch = first_epoch; epoch <= job.epochs; ++epoch) {
    const EpochStats stats = backend->train_epoch(epoch - 1, [&](uint64_t done, uint64_t total, double loss) {
      progress.update(fmt::format("epoch {}/{}", epoch, job.epochs), static_cast<double>(done) / std::max<uint64_t>(total, 1),
                      static_cast<double>(done), fmt::format("loss {:.4f}", loss));
      if (job.on_progress) job.on_progress(TrainProgress{epoch, job.epochs, done, total, loss});
    });
    progress.clear();
    if (!stats.finite) {
      throw Error(fmt::format(
          "epoch {}: the loss became NaN or infinite after {} samples; training stopped. The last "
          "good state (epoch {}) is kept in {}. Try a lower --lr or a smaller --l2.",
          epoch, stats.samples, epoch - 1, checkpoint_path.string()));
    }
    // Several ranks: each its own rows of the id tables, streamed to rank 0 for the files.
    const TrainState current = backend->held_state();
    EpochRecord record{epoch, stats.mean_loss, stats.samples, stats.seconds, {}, stats.impression_negatives};
    // Evaluation is split across the ranks, each scoring a share of the users with its users'
    // rows and the item tables; rank 0 gets the metrics and broadcasts the value that decides the
    // best epoch and early stopping, so every rank takes the same decisions.
    if (protocol != EvalProtocol::kNone) {
      const TrainingSet& t = fit.train;
      if (job.judge_on_test) {
        record.metrics = evaluate_model(comm, split, current.params, t.user_features, t.item_features,
                                        eval_context_rows, job.threads);
      }
      if (validation) {
        const Metrics chosen_on = evaluate_model(comm, *validation, current.params, t.user_features, t.item_features,
                                                 validation_context_rows, job.threads);
        for (const auto& [k, v] : chosen_on) record.metrics["val." + k] = v;
      }
    }
    result.history.push_back(record);
    double value = protocol == EvalProtocol::kNone || !writer ? epoch
                   : record.metrics.at(validation ? "val." + metric : metric);
    if (comm.size() > 1) comm.broadcast({reinterpret_cast<std::byte*>(&value), sizeof(value)}, 0);
    const bool improved = value > best_value;
    if (improved) {
      best_value = value;
      result.best_epoch = epoch;
      since_best = 0;
    } else {
      ++since_best;
    }
    json history = json::array();
    for (const EpochRecord& r : result.history) history.push_back(record_json(r));
    json extra{{"job", job_json}, {"epochs_done", epoch}, {"best_epoch", result.best_epoch},
               {"best_value", best_value}, {"history", history}};
    if (comm.size() > 1) extra["ranks"] = comm.size();  // a resume must use as many
    // The checkpoint first: a kill at any point after it leaves a run that --resume completes
    // (it rewrites model.bin and metrics.jsonl), and before it the previous epoch's state. Both
    // writes are collective on several ranks (rank 0 writes, the others send their rows).
    save_checkpoint(comm, current, extra.dump(), checkpoint_path);
    if (improved) save_model(comm, current.params, job.out / "model.bin");
    if (writer) write_file_atomically(job.out / "metrics.jsonl", metrics_lines(result.history));

    std::string line = fmt::format("epoch {:3d}  loss {:.4f}  {:.2f}M samples/s  {:.1f}s", epoch,
                                   stats.mean_loss, stats.samples / std::max(stats.seconds, 1e-9) / 1e6,
                                   stats.seconds);
    if (comm.size() > 1) {
      const uint64_t steps = (stats.samples + job.batch_size - 1) / job.batch_size;
      line += fmt::format("  {:.2f} MB exchanged per step", stats.exchanged_bytes / std::max<uint64_t>(steps, 1) / 1e6);
    }
    for (const auto& [k, v] : record.metrics) {
      if (k != "eval_users" && !is_interval_key(k) && !k.starts_with("val.")) line += fmt::format("  {} {:.4f}", k, v);
    }
    if (validation && writer) line += fmt::format("  val.{} {:.4f}", metric, record.metrics.at("val." + metric));
    log << line << "\n";
    log.flush();
    if (job.on_epoch) job.on_epoch(record);
    if (job.patience > 0 && since_best >= job.patience) {
      log << fmt::format("early stop: {} has not improved for {} epochs\n", metric, job.patience);
      break;
    }
  }

  // Summary table: the best epoch beside the popularity baseline.
  if (writer && protocol != EvalProtocol::kNone && result.best_epoch > 0 && job.judge_on_test) {
    const EpochRecord& best = result.history.at(result.best_epoch - 1);
    log << "\n" << metrics_table({fmt::format("{} (ep {})", job.model, best.epoch), "popularity"},
                                  {&best.metrics, &result.popularity});
    log << fmt::format("evaluated users: {}; model kept from epoch {} in {}\n",
                       static_cast<uint64_t>(best.metrics.at("eval_users")), best.epoch,
                       (job.out / "model.bin").string());
  }
  return result;
}

}  // namespace tastebud::host
