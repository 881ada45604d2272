#include "host/training.h"

#include <cmath>
#include <cstdio>
#include <optional>
#include <ostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/distributed_eval.h"
#include "host/features.h"
#include "host/model_dir.h"
#include "host/progress.h"
#include "host/recipes.h"
#include "host/sequence_training.h"
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
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The settings that define the trained model; a resumed run must match them.
json job_to_json(const TrainPlan& plan) {
  const TrainJob& job = plan.job;
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
              {"events", plan.event_rules}};
  // Only when used, so that runs from before these options existed still resume.
  if (!job.exclude_events.empty()) j["exclude_events"] = job.exclude_events;
  if (!job.exclude_events.empty() && job.exclude_latest > 0) j["exclude_latest"] = job.exclude_latest;
  if (job.validation_users > 0 && plan.protocol != EvalProtocol::kNone) {
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
  if (plan.options.precision != Precision::kFp32) j["precision"] = plan.options.precision == Precision::kTf32 ? "tf32" : "bf16";
  if (plan.options.cuda_kernels == CudaKernels::kFused) j["cuda_kernels"] = "fused";
  if (plan.options.rank_exchange == RankExchange::kDevice) j["rank_exchange"] = "device";
  if (plan.options.cuda_graph) j["cuda_graph"] = true;
  return j;
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


// metrics.jsonl: one row per epoch.
std::string metrics_lines(const std::vector<EpochRecord>& history) {
  std::string lines;
  for (const EpochRecord& r : history) lines += epoch_record_json(r).dump() + "\n";
  return lines;
}

// --embedding-updates auto, asked for by name (the default is lazy): dense (every id-table row
// takes Adam's step each step, as torch.optim.Adam on nn.Embedding, which learned faster in the
// first epochs on the synthetic MovieLens-100K layout, not on the real exports) where that costs
// at most kDenseShare of the lazy step's time, by the backend's measured costs
// (measured_step_costs); the sparse (lazy) update otherwise, and always on several ranks and in
// update mode, which train lazily only.
constexpr double kDenseShare = 0.25;

std::string resolve_embedding_updates(const TrainPlan& plan, const datasets::Dataset& dataset, int ranks,
                                      std::ostream& log) {
  const TrainJob& job = plan.job;
  const bool gpu = job.device == "cuda" || (job.device == "auto" && ranks == 1 && cuda_available(nullptr));
  const StepCosts costs = measured_step_costs(gpu);
  const double floats = (static_cast<double>(dataset.num_users()) + dataset.num_items()) * plan.model_config.feature_width();
  const double batch_rows = static_cast<double>(job.batch_size) * (plan.options.loss == LossKind::kBpr ? 2 : 1);
  const double walk_ms = floats * costs.table_float_ns * 1e-6, step_ms = batch_rows * costs.batch_row_ns * 1e-6;
  const double share = dense_walk_share(floats, batch_rows, costs);
  const bool dense = ranks == 1 && !job.update && share <= kDenseShare;
  const std::string chosen = dense ? "dense" : "lazy";
  log << fmt::format("--embedding-updates auto: {} (walking {:.0f} id-table floats costs about {:.3g} ms a step on "
                     "the {}, {:.2f} of the lazy step's {:.3g} ms; dense when at most {}{})\n",
                     chosen, floats, walk_ms, gpu ? "GPU" : "CPU", share, step_ms, kDenseShare,
                     ranks > 1 ? "; several ranks train lazily" : job.update ? "; update mode trains lazily" : "");
  return chosen;
}

// The choices `auto` leaves to the dataset, resolved on it and said in the log (config.json
// records what was chosen): --metadata (the sides the dataset has fields for, host/features.h)
// and --embedding-updates.
void resolve_choices(TrainPlan& plan, const datasets::Dataset& dataset, int ranks, std::ostream& log) {
  TrainJob& job = plan.job;
  if (!plan.metadata) {
    std::string note;
    job.metadata = resolve_metadata(job.metadata, dataset, job.model, &note);
    log << note << "\n";
    plan.metadata = parse_metadata_sides(job.metadata);
  }
  if (job.embedding_updates == "auto") {
    job.embedding_updates = resolve_embedding_updates(plan, dataset, ranks, log);
    const bool dense = job.embedding_updates == "dense";
    plan.options.embedding_updates = dense ? EmbeddingUpdates::kDense : EmbeddingUpdates::kLazy;
  }
}

// What a model trains and is judged on: the test split (judges, never chooses), the validation
// split carved from its training rows (chooses the epoch), and the model's whole config.
struct TrainingInputs {
  Split split;
  std::optional<Split> validation;
  ModelConfig config;
  // Context: each eval user is ranked in the held-out interaction's (a contextual vector per eval
  // user, added to the user's half of the MLP input).
  FeatureInputs eval_context, validation_context;
  // What the model trains on: the validation split's training rows, a subset of the test split's.
  Split& fit() { return validation ? *validation : split; }
};

TrainingInputs training_inputs(const TrainPlan& plan, const datasets::Dataset& dataset) {
  const TrainJob& job = plan.job;
  TrainingInputs in;
  in.split = make_split(dataset, plan.split);
  if (plan.validate) in.validation = make_validation_split(dataset, plan.split, in.split, job.validation_users);
  TrainingSet& train = in.fit().train;
  TB_CHECK(train.size() > 0, fmt::format("{}: no interactions to train on", job.data.string()));
  ModelConfig& config = in.config;
  config = plan.model_config;
  config.num_users = dataset.num_users();
  config.num_items = dataset.num_items();
  const MetadataSides sides = *plan.metadata;
  if (sides.users) {
    config.user_features = make_feature_spec(dataset.users, job.text_buckets, "user");
    train.user_features = encode_features(dataset.users, config.user_features, config.num_users);
  }
  if (sides.items) {
    config.item_features = make_feature_spec(dataset.items, job.text_buckets, "item");
    train.item_features = encode_features(dataset.items, config.item_features, config.num_items);
  }
  if (!job.context.empty()) {
    config.context = make_context_spec(dataset.interactions, job.context);
    train.context = encode_context(dataset.interactions, config.context, in.fit().positive_row);
    in.eval_context = encode_context(dataset.interactions, config.context, in.split.eval_row);
    if (in.validation) {
      in.validation_context = encode_context(dataset.interactions, config.context, in.validation->eval_row);
    }
  }
  config.validate();
  return in;
}

// Where the epoch loop stands: the epochs done and the best of them.
struct RunState {
  TrainResult result;
  uint32_t next_epoch = 1;
  double best_value = -1;
  uint32_t since_best = 0;
};

// A model directory as a training run writes it (rank 0 alone; the writes of models and
// checkpoints are collective on several ranks): what --resume finds there, the files written
// before the first epoch, and each epoch's checkpoint, model and metrics.
class RunDirectory {
 public:
  RunDirectory(const TrainPlan& plan, Communicator& comm)
      : out_(plan.job.out), checkpoint_(out_ / "checkpoint.bin"), job_json_(job_to_json(plan)),
        exclude_events_(plan.job.exclude_events), exclude_latest_(plan.job.exclude_latest), comm_(comm) {}

  bool writer() const { return comm_.root(); }
  const fs::path& checkpoint() const { return checkpoint_; }

  // --resume: the interrupted run's state, whose stored job must match; the run continues after
  // its last finished epoch. Without --resume the directory must hold no run.
  std::optional<TrainState> open(bool resume) {
    if (!resume) {
      if (fs::exists(checkpoint_)) {
        throw Error(fmt::format("{} already holds a training run; pass --resume to continue it or "
                                "choose another --out",
                                out_.string()));
      }
      return std::nullopt;
    }
    if (!fs::exists(checkpoint_)) {
      throw Error(fmt::format("--resume: {} has no checkpoint.bin; start without --resume", out_.string()));
    }
    std::string extra;
    // Several ranks: each reads the file in pieces and keeps its own rows of the id tables.
    TrainState state = comm_.size() > 1 ? load_checkpoint_shard(checkpoint_, &extra, comm_.rank(), comm_.size())
                                        : load_checkpoint(checkpoint_, &extra);
    resumed_ = json::parse(extra);
    const int ranks = resumed_.value("ranks", 1);
    if (ranks != comm_.size()) {
      throw Error(fmt::format("--resume: {} was trained on {} rank(s) but this run has {}; resume with "
                              "{} rank(s)",
                              checkpoint_.string(), ranks, comm_.size(), ranks));
    }
    const json& stored = resumed_.at("job");
    for (auto it = job_json_.begin(); it != job_json_.end(); ++it) {
      if (stored.value(it.key(), json()) != it.value()) {
        throw Error(fmt::format("--resume: {} was {} in the interrupted run but is {} now; resume "
                                "with the same settings",
                                it.key(), stored.value(it.key(), json()).dump(), it.value().dump()));
      }
    }
    return state;
  }

  // The popularity baseline beside the model's curves in `tastebud report` (host/report.h).
  void write_baseline(const Metrics& popularity) {
    if (!writer()) return;
    write_file_atomically(out_ / "baseline.json", json{{"popularity", metrics_json(popularity)}}.dump(2) + "\n");
  }

  // The files a fresh run writes before its first epoch.
  void write_start(const datasets::Dataset& dataset, const ModelConfig& config, const Split& split,
                   const ParentModel* parent) {
    if (!writer()) return;
    write_ids(dataset.user_ids, out_ / "user_ids.json");
    write_ids(dataset.item_ids, out_ / "item_ids.json");
    write_seen(seen_of(split.train), out_ / "seen.bin");  // every training row, the validation's too
    if (!exclude_events_.empty()) write_excluded(dataset, exclude_events_, exclude_latest_, out_ / "excluded.bin");
    write_vocabularies(dataset, config, out_ / "vocabularies.json");
    json config_json = job_json_;
    config_json["model_config"] = json::parse(config_to_json(config));
    config_json["dataset"] = dataset_record(dataset);
    if (parent) config_json["parent"] = parent_record(*parent);
    config_json["checksums"] = file_checksums(out_);
    write_file_atomically(out_ / "config.json", config_file_text(config_json));
  }

  // A resumed run's history and best epoch. The checkpoint is written before model.bin and
  // metrics.jsonl: a kill between them leaves those one epoch behind, and the checkpoint's state
  // is that epoch's, so they are redone here.
  void restore(RunState& run, Backend& backend) {
    for (const json& row : resumed_.at("history")) run.result.history.push_back(record_from_json(row));
    run.next_epoch = resumed_.at("epochs_done").get<uint32_t>() + 1;
    run.result.best_epoch = resumed_.at("best_epoch");
    run.best_value = resumed_.at("best_value");
    if (run.result.best_epoch == run.next_epoch - 1) {
      const TrainState resumed = backend.held_state();
      save_model(comm_, resumed.params, out_ / "model.bin");  // collective on several ranks
    }
    if (writer()) write_file_atomically(out_ / "metrics.jsonl", metrics_lines(run.result.history));
  }

  // The checkpoint first: a kill at any point after it leaves a run that --resume completes (it
  // rewrites model.bin and metrics.jsonl), and before it the previous epoch's state. Both writes
  // are collective on several ranks (rank 0 writes, the others send their rows).
  void write_epoch(const RunState& run, uint32_t epoch, const TrainState& current, bool improved) {
    json history = json::array();
    for (const EpochRecord& r : run.result.history) history.push_back(epoch_record_json(r));
    json extra{{"job", job_json_}, {"epochs_done", epoch}, {"best_epoch", run.result.best_epoch},
               {"best_value", run.best_value}, {"history", history}};
    if (comm_.size() > 1) extra["ranks"] = comm_.size();  // a resume must use as many
    save_checkpoint(comm_, current, extra.dump(), checkpoint_);
    if (improved) save_model(comm_, current.params, out_ / "model.bin");
    if (writer()) write_file_atomically(out_ / "metrics.jsonl", metrics_lines(run.result.history));
  }

 private:
  fs::path out_, checkpoint_;
  json job_json_;
  std::vector<std::string> exclude_events_;
  uint32_t exclude_latest_ = 0;
  json resumed_;  // the checkpoint's record of the interrupted run
  Communicator& comm_;
};

// The parameters and optimizer state the first epoch starts from: drawn from the seed, then the
// parent's rows of a warm start. Several ranks: each draws its own rows of the id tables only (a
// warm start then takes the parent's rows for them, read from the parent's files for this rank alone).
TrainState initial_state(const TrainPlan& plan, const ModelConfig& config, const TrainingSet& train,
                         const ParentModel* parent, const datasets::Dataset& dataset, Communicator& comm,
                         std::ostream& log) {
  const bool shard = comm.size() > 1;
  ModelParams params = shard ? ModelParams::initialize_shard(config, plan.job.seed, comm.rank(), comm.size())
                             : ModelParams::initialize(config, plan.job.seed);
  zero_untrained_rows(params, train);
  TrainState state = TrainState::fresh(params, plan.options.optimizer);
  if (parent) state = start_warm(*parent, std::move(state), dataset, plan.job.optimizer, log);
  return state;
}

// The backend, and on several ranks what each holds.
std::unique_ptr<Backend> start_backend(const TrainPlan& plan, const TrainingSet& train, const TrainOptions& options,
                                       TrainState state, const ModelConfig& config, Communicator& comm,
                                       std::ostream& log) {
  std::string notice;
  if (plan.job.impression_negatives > 0.0f && train.impression_offsets.empty()) {
    log << "--impression-negatives: " << plan.job.data.string()
        << " has no IMPRESSION lists (or the split does not use them); every negative is sampled\n";
  }
  const uint64_t whole_bytes = whole_state_bytes(config);
  std::unique_ptr<Backend> backend = make_backend(plan.job.device, train, options, std::move(state), &notice);
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
  return backend;
}

// One epoch trained; the loss must stay finite.
EpochStats train_epoch(const TrainJob& job, uint32_t epoch, Backend& backend, ProgressLine& progress,
                       const fs::path& checkpoint) {
  const EpochStats stats = backend.train_epoch(epoch - 1, [&](uint64_t done, uint64_t total, double loss) {
    progress.update(fmt::format("epoch {}/{}", epoch, job.epochs), static_cast<double>(done) / std::max<uint64_t>(total, 1),
                    static_cast<double>(done), fmt::format("loss {:.4f}", loss));
    if (job.on_progress) job.on_progress(TrainProgress{epoch, job.epochs, done, total, loss});
  });
  progress.clear();
  if (!stats.finite) {
    throw Error(fmt::format(
        "epoch {}: the loss became NaN or infinite after {} samples; training stopped. The last "
        "good state (epoch {}) is kept in {}. Try a lower `lr` or a smaller `l2`.",
        epoch, stats.samples, epoch - 1, checkpoint.string()));
  }
  return stats;
}

// The epoch's record with its metrics. Evaluation is split across the ranks, each scoring a share
// of the users with its users' rows and the item tables; rank 0 gets the metrics.
EpochRecord evaluate_epoch(const TrainPlan& plan, uint32_t epoch, const EpochStats& stats, const TrainState& current,
                           TrainingInputs& in, Communicator& comm) {
  const TrainJob& job = plan.job;
  EpochRecord record{epoch, stats.mean_loss, stats.samples, stats.seconds, {}, stats.impression_negatives};
  if (plan.protocol == EvalProtocol::kNone) return record;
  const TrainingSet& t = in.fit().train;
  if (job.judge_on_test) {
    record.metrics = evaluate_model(comm, in.split, current.params, t.user_features, t.item_features,
                                    in.eval_context, job.threads);
  }
  if (in.validation) {
    const Metrics chosen_on = evaluate_model(comm, *in.validation, current.params, t.user_features,
                                             t.item_features, in.validation_context, job.threads);
    for (const auto& [k, v] : chosen_on) record.metrics["val." + k] = v;
  }
  return record;
}

// Whether the epoch just recorded is the best so far. Rank 0 broadcasts the value that decides,
// so every rank takes the same decisions (the best epoch, early stopping).
bool take_if_best(const TrainPlan& plan, bool validation, Communicator& comm, RunState& run) {
  const EpochRecord& record = run.result.history.back();
  double value = plan.protocol == EvalProtocol::kNone || !comm.root()
                     ? record.epoch
                     : record.metrics.at(validation ? "val." + plan.metric : plan.metric);
  if (comm.size() > 1) comm.broadcast({reinterpret_cast<std::byte*>(&value), sizeof(value)}, 0);
  if (value <= run.best_value) {
    ++run.since_best;
    return false;
  }
  run.best_value = value;
  run.result.best_epoch = record.epoch;
  run.since_best = 0;
  return true;
}

// The log's line for an epoch: loss, speed, the test metrics and the one that chooses.
std::string epoch_line(const TrainPlan& plan, const EpochStats& stats, const EpochRecord& record, bool validation,
                       Communicator& comm) {
  std::string line = fmt::format("epoch {:3d}  loss {:.4f}  {:.2f}M samples/s  {:.1f}s", record.epoch,
                                 stats.mean_loss, stats.samples / std::max(stats.seconds, 1e-9) / 1e6,
                                 stats.seconds);
  if (comm.size() > 1) {
    const uint64_t steps = (stats.samples + plan.job.batch_size - 1) / plan.job.batch_size;
    line += fmt::format("  {:.2f} MB exchanged per step", stats.exchanged_bytes / std::max<uint64_t>(steps, 1) / 1e6);
  }
  if (stats.graph_steps > 0) line += fmt::format("  {} steps from a CUDA graph", stats.graph_steps);
  for (const auto& [k, v] : record.metrics) {
    if (k != "eval_users" && !is_interval_key(k) && !k.starts_with("val.")) line += fmt::format("  {} {:.4f}", k, v);
  }
  if (validation && comm.root()) {
    line += fmt::format("  val.{} {:.4f}", plan.metric, record.metrics.at("val." + plan.metric));
  }
  return line;
}

// The epochs from run.next_epoch to the job's last, or until early stopping: each trained,
// evaluated, checkpointed and logged.
void run_epochs(const TrainPlan& plan, Backend& backend, TrainingInputs& in, RunDirectory& dir, RunState& run,
                Communicator& comm, std::ostream& log) {
  const TrainJob& job = plan.job;
  ProgressLine progress("samples", job.progress && dir.writer());
  for (uint32_t epoch = run.next_epoch; epoch <= job.epochs; ++epoch) {
    const EpochStats stats = train_epoch(job, epoch, backend, progress, dir.checkpoint());
    // Several ranks: each its own rows of the id tables, streamed to rank 0 for the files.
    const TrainState current = backend.held_state();
    run.result.history.push_back(evaluate_epoch(plan, epoch, stats, current, in, comm));
    const bool improved = take_if_best(plan, in.validation.has_value(), comm, run);
    dir.write_epoch(run, epoch, current, improved);
    const EpochRecord& record = run.result.history.back();
    log << epoch_line(plan, stats, record, in.validation.has_value(), comm) << "\n";
    log.flush();
    if (job.on_epoch) job.on_epoch(record);
    if (job.patience > 0 && run.since_best >= job.patience) {
      log << fmt::format("early stop: {} has not improved for {} epochs\n", plan.metric, job.patience);
      break;
    }
  }
}

// The summary table: the best epoch beside the popularity baseline.
void log_summary(const TrainPlan& plan, const TrainResult& result, std::ostream& log) {
  const TrainJob& job = plan.job;
  if (plan.protocol == EvalProtocol::kNone || result.best_epoch == 0 || !job.judge_on_test) return;
  const EpochRecord& best = *result.kept();
  log << "\n" << metrics_table({fmt::format("{} (ep {})", job.model, best.epoch), "popularity"},
                                {&best.metrics, &result.popularity});
  log << fmt::format("evaluated users: {}; model kept from epoch {} in {}\n",
                     static_cast<uint64_t>(best.metrics.at("eval_users")), best.epoch,
                     (job.out / "model.bin").string());
}

// A neural model trained on the opened dataset: the run directory checked (resume) and started,
// the splits, the initial state and the backend, then the epoch loop.
TrainResult train_model(const TrainPlan& plan, const datasets::Dataset& dataset, Communicator& comm,
                        std::ostream& log) {
  const TrainJob& job = plan.job;
  TrainOptions options = plan.options;
  options.comm = &comm;
  RunDirectory dir(plan, comm);
  std::optional<TrainState> resumed = dir.open(job.resume);
  TrainingInputs in = training_inputs(plan, dataset);
  const ModelConfig& config = in.config;
  const TrainingSet& train = in.fit().train;
  check_training_memory(estimate_training_bytes(config, train.size(), options), physical_memory_bytes(), config,
                        options);
  check_same_training_set(comm, job.data, config, train);
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
  if (job.update) update_set = start_update(*parent, dataset, in.fit().train, options, log);
  TrainState state = resumed ? std::move(*resumed)
                             : initial_state(plan, config, train, parent ? &*parent : nullptr, dataset, comm, log);
  std::unique_ptr<Backend> backend =
      start_backend(plan, update_set ? *update_set : train, options, std::move(state), config, comm, log);

  if (dir.writer()) fs::create_directories(job.out);
  RunState run;
  run.result.backend = backend->name();
  if (job.judge_on_test) run.result.popularity = evaluate_popularity(in.split);
  if (plan.protocol != EvalProtocol::kNone && job.judge_on_test) dir.write_baseline(run.result.popularity);
  if (job.resume) {
    dir.restore(run, *backend);
  } else {
    dir.write_start(dataset, config, in.split, parent ? &*parent : nullptr);
  }
  log << fmt::format("training {} on {} ({} users, {} items, {} positives) with the {} backend, {} "
                     "samples per epoch\n",
                     job.model, job.data.string(), config.num_users, config.num_items, train.size(),
                     backend->name(), backend->samples_per_epoch());
  if (in.validation) {
    log << fmt::format("validation: {} users of the training rows choose the epoch ({} on them); {} test users judge it\n",
                       in.validation->eval_users.size(), plan.metric, in.split.eval_users.size());
  }
  run_epochs(plan, *backend, in, dir, run, comm, log);
  if (dir.writer()) log_summary(plan, run.result, log);
  return std::move(run.result);
}

}  // namespace

TrainResult run_training(const TrainJob& job, std::ostream& log) { return run_training(make_plan(job), log); }

TrainResult run_training(TrainPlan plan, std::ostream& job_log) {
  const TrainJob& job = plan.job;
  Communicator& comm = job.comm != nullptr ? *job.comm : world_communicator();
  datasets::check_outside_dataset(job.out, job.data, "out");
  NullStream quiet;
  std::ostream& log = comm.root() ? job_log : quiet;  // rank 0 speaks for the job
  // The dataset, opened once (recipes open their own).
  std::optional<datasets::Dataset> dataset;
  if (!is_recipe(plan.model) && plan.model != ModelType::kSASRec) {
    dataset.emplace(datasets::Dataset::open(job.data));
    resolve_choices(plan, *dataset, comm.size(), log);
  }
  // One writer per model directory (rank 0 of a job on several); what a killed writer left there
  // goes first.
  std::optional<DirectoryLock> lock;
  if (comm.root()) {
    lock.emplace(job.out, "this training run");
    remove_stale_temporaries(job.out);
  }
  if (plan.model == ModelType::kSASRec) {
    TB_CHECK(comm.size() == 1, "`model` sasrec trains in one process for now; run it without mpirun");
    return train_sequence(plan, log);
  }
  if (!dataset) {
    TB_CHECK(comm.size() == 1, fmt::format("--model {} is a recipe computed in one process; run it without mpirun", job.model));
    return train_recipe(plan, log);
  }
  return train_model(plan, *dataset, comm, log);
}

}  // namespace tastebud::host
