#include "host/sequence_training.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/evaluation.h"
#include "host/features.h"
#include "host/model_dir.h"
#include "host/progress.h"
#include "host/recipes.h"
#include "host/split.h"
#include "host/warm_start.h"
#include "tastebud/atomic_file.h"
#include "tastebud/binary_lists.h"
#include "tastebud/checksum.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/sequence_trainer.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kSequenceMagic[8] = {'T', 'B', 'S', 'E', 'Q', 'M', 'D', '1'};

json config_json(const SequenceConfig& c) {
  json j{{"num_items", c.num_items}, {"hidden", c.hidden},   {"blocks", c.blocks},
         {"heads", c.heads},         {"max_sequence", c.max_sequence}, {"dropout", c.dropout}};
  if (c.has_features()) j["feature_rows"] = c.feature_rows, j["numeric"] = c.numeric;
  return j;
}

// The events a split trains on, as each user's sequence (CSR, oldest first, with weights).
SequenceSet sequences_of(EventLog events, std::vector<float> weights, const RecipeOptions& options) {
  events.weight = std::move(weights);
  ItemNeighbors seq = user_sequences(events, options);
  SequenceSet set;
  set.num_items = events.num_items;
  set.offsets = std::move(seq.offsets);
  set.items = std::move(seq.items);
  set.weights = std::move(seq.scores);
  return set;
}

std::span<const uint32_t> sequence_of(const SequenceSet& set, uint32_t user) {
  return std::span(set.items).subspan(set.offsets[user], set.offsets[user + 1] - set.offsets[user]);
}

// The epoch's metrics: the test split (unless the job is judged on validation alone) and "val.*".
Metrics judge(const TrainPlan& plan, const SequenceInputs& in, const SequenceParams& params) {
  // A model without item metadata answers as it is; one with it, folded (a copy an epoch).
  std::optional<SequenceParams> folded;
  if (params.config.has_features()) folded = fold_item_features(params, in.train.item_features);
  const SequenceEncoder encoder(folded ? *folded : params);
  const auto scorer = [&](const SequenceSet& input) -> ScoreFn {
    return [&](uint32_t u, std::span<const uint32_t> items, std::span<float> out) {
      encoder.score_sequence(sequence_of(input, u), items, out);
    };
  };
  Metrics metrics;
  if (plan.job.judge_on_test) metrics = evaluate(*in.test, scorer(in.test_sequences()), plan.job.threads);
  if (in.validation)
    for (const auto& [k, v] : evaluate(*in.validation, scorer(in.train), plan.job.threads)) metrics["val." + k] = v;
  return metrics;
}

std::string epoch_line(const EpochRecord& r, const EpochStats& stats) {
  std::string line = fmt::format("epoch {:3d}  loss {:.4f}  {:.0f} positions/s  {:.1f}s", r.epoch, r.loss,
                                 stats.samples / std::max(stats.seconds, 1e-9), stats.seconds);
  for (const auto& [k, v] : r.metrics)
    if (k != "eval_users" && k != "val.eval_users" && !is_interval_key(k)) line += fmt::format("  {} {:.4f}", k, v);
  return line;
}

// The answers' tables: every user's seen items, popularity and latest max_sequence items (from
// every event the rules keep, nothing held out) and the id files.
void write_answer_tables(const TrainPlan& plan, const datasets::Dataset& dataset, const EventLog& events,
                         const RecipeOptions& options) {
  const fs::path& out = plan.job.out;
  RecipeData data;
  data.kind = "sasrec";
  data.popularity = popularity_scores(events, options);
  const SequenceSet all = sequences_of(events, {}, options);
  const uint32_t keep = plan.sequence_config.max_sequence;
  data.latest.offsets.push_back(0);
  for (uint32_t u = 0; u < all.num_users(); ++u) {
    const auto seq = sequence_of(all, u);
    const auto kept = seq.subspan(seq.size() > keep ? seq.size() - keep : 0);
    data.latest.items.insert(data.latest.items.end(), kept.begin(), kept.end());
    data.latest.scores.insert(data.latest.scores.end(), kept.size(), 1.0f);
    data.latest.offsets.push_back(data.latest.items.size());
  }
  write_ids(dataset.user_ids, out / "user_ids.json");
  write_ids(dataset.item_ids, out / "item_ids.json");
  write_seen(seen_items_of(events), out / "seen.bin");
  if (!plan.job.exclude_events.empty())
    write_excluded(dataset, plan.job.exclude_events, plan.job.exclude_latest, out / "excluded.bin");
  write_recipe(data, out / "recipe.bin");
}

json settings_json(const TrainPlan& plan) {
  const TrainJob& job = plan.job;
  return json{{"events", plan.event_rules}, {"batch_size", job.batch_size}, {"negatives", job.negatives},
              {"gbce_t", job.gbce_t},       {"lr", job.lr},                 {"sampler", job.sampler},
              {"sampler_alpha", job.sampler_alpha}, {"seed", job.seed},      {"epochs", job.epochs},
              {"eval", job.eval},           {"metadata", job.metadata},     {"text_buckets", job.text_buckets}};
}

// dataset: dataset_record's, whose last_timestamp an update of this model compares against.
void write_model(const TrainPlan& plan, const SequenceParams& params, uint32_t epoch, const json& dataset) {
  const fs::path& out = plan.job.out;
  write_sequence_params(params, out / "sequence.bin");
  json checksums = file_checksums(out);
  json config{{"model", "sasrec"},
              {"data", fs::absolute(plan.job.data).string()},
              {"dataset", dataset},
              {"sequence", config_json(params.config)},
              {"training", settings_json(plan)},
              {"best_epoch", epoch},
              {"checksums", checksums}};
  if (plan.job.update) config["update"] = true;
  write_file_atomically(out / "config.json", config_file_text(config));
}

// --warm-start: the parent sasrec's dense tensors, and its item rows for the items it knew (matched
// by id); new items keep their fresh rows. The shapes must agree. Adam starts afresh.
void warm_start_sequence(const fs::path& parent, const datasets::Dataset& dataset, SequenceParams& params,
                         std::ostream& log) {
  const json config = json::parse(read_file(parent / "config.json"));
  check_file_checksums(config, parent);
  const std::string kind = config.value("model", std::string());
  TB_CHECK(kind == "sasrec", fmt::format("`warm_start` {}: a {} model cannot start a sasrec", parent.string(), kind));
  const std::vector<std::string> items = read_ids(parent / "item_ids.json");
  const SequenceParams from = read_sequence_params(parent / "sequence.bin", static_cast<uint32_t>(items.size()));
  const SequenceConfig& a = from.config;
  const SequenceConfig& b = params.config;
  for (const auto& [name, x, y] : {std::tuple{"hidden", a.hidden, b.hidden}, std::tuple{"blocks", a.blocks, b.blocks},
                                   std::tuple{"heads", a.heads, b.heads},
                                   std::tuple{"max_sequence", a.max_sequence, b.max_sequence}})
    TB_CHECK(x == y, fmt::format("`warm_start` {}: its `{}` is {}, this run's {}", parent.string(), name, x, y));
  const SequenceLayout to_layout(b), from_layout(a);
  std::copy(from.values.begin() + static_cast<int64_t>(from_layout.dense_begin()), from.values.end(),
            params.values.begin() + static_cast<int64_t>(to_layout.dense_begin()));
  const std::unordered_map<std::string, uint32_t> known = index_ids(items);
  const size_t d = b.hidden;
  uint32_t matched = 0;
  for (uint32_t i = 0; i < dataset.num_items(); ++i) {
    const auto it = known.find(std::string(dataset.item_ids[i]));
    if (it == known.end()) continue;
    std::copy_n(from.values.begin() + static_cast<int64_t>(from_layout.items + it->second * d), d,
                params.values.begin() + static_cast<int64_t>(to_layout.items + i * d));
    ++matched;
  }
  log << fmt::format("warm start from {}: {} of {} items and every dense tensor carried over, {} items fresh\n",
                     parent.string(), matched, dataset.num_items(), dataset.num_items() - matched);
}

// --update: the changed users' whole sequences train the changed items' rows alone (new items and
// items with interactions after the parent's dataset end: changed_rows' rule, as for the NeuMF
// family), the positions, blocks and final norm frozen. It trains the parent's folded model, whose
// item rows already hold their metadata, so the run has no metadata rows. `trained`: the changed
// users' sequences of `train` (the epochs are still judged on every user's). False: nothing changed.
bool start_sequence_update(const TrainJob& job, const datasets::Dataset& dataset, const SequenceSet& train,
                           SequenceConfig& config, SequenceTrainOptions& options, SequenceSet& trained,
                           std::ostream& log) {
  TB_CHECK(!job.warm_start.empty(), "`update` needs `warm_start`: the model it refreshes");
  ParentModel parent;
  parent.dir = job.warm_start;
  parent.config = json::parse(read_file(parent.dir / "config.json"));
  parent.user_ids = read_ids(parent.dir / "user_ids.json");
  parent.item_ids = read_ids(parent.dir / "item_ids.json");
  const ChangedRows changed = changed_rows(parent, dataset);
  if (changed.none()) return false;
  SequenceSet& kept = trained;
  kept.num_items = train.num_items;
  kept.offsets.push_back(0);
  for (uint32_t u = 0; u < train.num_users(); ++u) {
    if (changed.users[u]) {
      kept.items.insert(kept.items.end(), train.items.begin() + static_cast<int64_t>(train.offsets[u]),
                        train.items.begin() + static_cast<int64_t>(train.offsets[u + 1]));
      kept.weights.insert(kept.weights.end(), train.weights.begin() + static_cast<int64_t>(train.offsets[u]),
                          train.weights.begin() + static_cast<int64_t>(train.offsets[u + 1]));
    }
    kept.offsets.push_back(kept.items.size());
  }
  config.feature_rows = config.numeric = 0;
  options.trainable_items = changed.items;
  options.freeze_dense = true;
  options.embedding_updates = EmbeddingUpdates::kLazy;
  const uint32_t new_items = static_cast<uint32_t>(std::count(changed.new_items.begin(), changed.new_items.end(), 1));
  log << fmt::format("update: the sequences of {} changed users train the rows of {} changed items ({} new); the "
                     "other rows, the positions and the blocks stay the parent's{}\n",
                     changed.changed_users, changed.changed_items, new_items,
                     changed.dataset_end_known ? "" : " (the parent records no dataset end: new ids only)");
  return true;
}

// Item metadata (--metadata auto: the Items fields when there are any): the items' encoded
// fields, with the model's F and N rows sized to them in config; none: empty inputs.
FeatureInputs sequence_item_features(const TrainJob& job, const datasets::Dataset& dataset, SequenceConfig& config,
                                     std::ostream& log) {
  std::string note;
  const std::string metadata = resolve_metadata(job.metadata, dataset, job.model, &note);
  if (!note.empty()) log << note << "\n";
  const MetadataSides sides = parse_metadata_sides(metadata);
  TB_CHECK(!sides.users, fmt::format("`metadata` {}: the sequence model reads item metadata only (items or none)", metadata));
  if (!sides.items) return {};
  const FeatureSpec spec = make_feature_spec(dataset.items, job.text_buckets, "item");
  config.feature_rows = static_cast<uint32_t>(spec.table_rows());
  config.numeric = static_cast<uint32_t>(spec.numerical.size());
  return encode_features(dataset.items, spec, config.num_items);
}

constexpr char kCheckpointMagic[8] = {'T', 'B', 'S', 'E', 'Q', 'C', 'K', '1'};

// Where a run stands after its last finished epoch: what sequence_checkpoint.bin holds beside the
// trainer's state, so that --resume continues to the same model an uninterrupted run reaches.
struct RunProgress {
  uint32_t epoch = 0;  // finished epochs
  double best = -std::numeric_limits<double>::infinity();
  uint32_t best_epoch = 0, since_best = 0;
  std::string metrics;  // metrics.jsonl's text so far
};

// What a resumed run must share with the one that wrote its checkpoint: every setting but the
// epoch count (a resumed run continues up to its own).
json resume_settings(const TrainPlan& plan) {
  json settings = settings_json(plan);
  settings.erase("epochs");
  return settings;
}

// sequence_checkpoint.bin: a JSON header (progress, settings, shape), the parameters and Adam's two
// moments, the checksum trailer.
void write_checkpoint(const fs::path& path, const RunProgress& run, const SequenceState& state, const json& settings) {
  const json header{{"epoch", run.epoch},   {"best", run.best},         {"best_epoch", run.best_epoch},
                    {"since_best", run.since_best}, {"step", state.step}, {"settings", settings},
                    {"sequence", config_json(state.params.config)},    {"metrics", run.metrics}};
  std::string bytes(kCheckpointMagic, sizeof(kCheckpointMagic));
  const std::string text = header.dump();
  append_list(bytes, std::span<const char>(text));
  for (const auto* v : {&state.params.values, &state.m, &state.v}) append_list(bytes, *v);
  append_checksum(bytes);
  write_file_atomically(path, bytes);
}

// Reads a checkpoint of this run's shape and settings (an Error names what differs).
std::pair<RunProgress, SequenceState> read_checkpoint(const fs::path& path, const SequenceConfig& shape,
                                                      const json& settings) {
  const std::string file = read_file(path);
  auto bad = [&](const std::string& what) { return Error(fmt::format("corrupt: {}: {}", path.string(), what)); };
  if (file.size() < 8 || std::memcmp(file.data(), kCheckpointMagic, 8) != 0)
    throw Error(fmt::format("{}: not a tastebud sequence checkpoint", path.string()));
  const std::string_view bytes = checked_payload(file, path);
  size_t at = 8;
  const std::vector<char> text = take_list<char>(bytes, at, path);
  const json header = json::parse(text.begin(), text.end());
  TB_CHECK(header.at("sequence") == config_json(shape) && header.at("settings") == settings,
           fmt::format("--resume: {} was written by a run of other settings or another dataset ({} now, {} then); "
                       "start without --resume in a new directory",
                       path.string(), settings.dump(), header.at("settings").dump()));
  RunProgress run{header.at("epoch"), header.at("best"), header.at("best_epoch"), header.at("since_best"),
                  header.at("metrics")};
  SequenceState state;
  state.params.config = shape;
  state.step = header.at("step");
  state.params.values = take_list<float>(bytes, at, path);
  state.m = take_list<float>(bytes, at, path);
  state.v = take_list<float>(bytes, at, path);
  if (state.params.values.size() != SequenceLayout(shape).total || state.m.size() != state.params.values.size() ||
      state.v.size() != state.params.values.size())
    throw bad("its tensors do not fit the model's shape");
  return {run, std::move(state)};
}

// The run's first state: a checkpoint to continue (--resume), a warm start, or a fresh init.
std::pair<RunProgress, SequenceState> start_state(const TrainPlan& plan, const SequenceConfig& config,
                                                  const datasets::Dataset& dataset, std::ostream& log) {
  const TrainJob& job = plan.job;
  const fs::path checkpoint = job.out / "sequence_checkpoint.bin";
  if (job.resume) {
    TB_CHECK(fs::exists(checkpoint), fmt::format("--resume: {} has no sequence_checkpoint.bin; start without --resume",
                                                 job.out.string()));
    auto resumed = read_checkpoint(checkpoint, config, resume_settings(plan));
    log << fmt::format("resuming {} after epoch {}\n", job.out.string(), resumed.first.epoch);
    return resumed;
  }
  TB_CHECK(!fs::exists(checkpoint), fmt::format("{} already holds a training run; pass --resume to continue it or "
                                                "choose another --out", job.out.string()));
  SequenceState state;
  state.params = SequenceParams::initialize(config, job.seed);
  if (!job.warm_start.empty()) warm_start_sequence(job.warm_start, dataset, state.params, log);
  return {RunProgress{}, std::move(state)};
}

}  // namespace

SequenceInputs sequence_inputs(const TrainPlan& plan, const datasets::Dataset& dataset, const EventLog& events,
                               const RecipeOptions& options) {
  SequenceInputs in;
  std::vector<double> base = event_weights(events, options);
  if (plan.protocol == EvalProtocol::kNone) {
    in.train = sequences_of(events, std::vector<float>(base.begin(), base.end()), options);
    return in;
  }
  in.test = make_split(dataset, plan.split);
  if (plan.validate) {
    in.validation = make_validation_split(dataset, plan.split, *in.test, plan.job.validation_users);
    in.test_input = sequences_of(events, split_event_weights(*in.test, events, base), options);
    for (uint64_t r = 0; r < base.size(); ++r)
      if (in.test->held_out_rows[r]) base[r] = 0;  // the test split's held-out rows do not exist here
  }
  const Split& trains = in.validation ? *in.validation : *in.test;
  in.train = sequences_of(events, split_event_weights(trains, events, base), options);
  return in;
}


Metrics evaluate_sequence_dir(const fs::path& dir, const TrainPlan& plan, const datasets::Dataset& dataset,
                              const Split& split, uint32_t threads) {
  const std::vector<std::string> ids = read_ids(dir / "item_ids.json");
  SequenceConfig config = read_sequence_params(dir / "sequence.bin", static_cast<uint32_t>(ids.size())).config;
  config.num_items = dataset.num_items();
  SequenceParams params = SequenceParams::initialize(config, 0);
  const SequenceLayout layout(config);
  std::fill_n(params.values.begin() + static_cast<int64_t>(layout.items), size_t{config.num_items} * config.hidden, 0.0f);
  std::ostringstream quiet;
  warm_start_sequence(dir, dataset, params, quiet);
  const RecipeOptions options = RecipeOptions::from_job(plan.job);
  const EventLog events = weighted_events(plan, dataset);
  const SequenceSet input = sequences_of(events, split_event_weights(split, events, event_weights(events, options)), options);
  const SequenceEncoder encoder(params);
  return evaluate(
      split,
      [&](uint32_t u, std::span<const uint32_t> items, std::span<float> out) {
        encoder.score_sequence(sequence_of(input, u), items, out);
      },
      threads);
}

TrainResult train_sequence(const TrainPlan& plan, std::ostream& log) {
  const TrainJob& job = plan.job;
  const datasets::Dataset dataset = datasets::Dataset::open(job.data);
  const RecipeOptions options = RecipeOptions::from_job(job);
  const EventLog events = weighted_events(plan, dataset);
  SequenceInputs in = sequence_inputs(plan, dataset, events, options);
  SequenceConfig config = plan.sequence_config;
  config.num_items = dataset.num_items();
  const FeatureInputs item_features = sequence_item_features(job, dataset, config, log);
  in.train.item_features = item_features.view();
  SequenceTrainOptions train_options = plan.sequence_options;
  SequenceSet update_set;
  if (job.update && !start_sequence_update(job, dataset, in.train, config, train_options, update_set, log)) {
    log << "update: nothing changed since the parent model; nothing to train\n";
    TrainResult unchanged;
    unchanged.unchanged = true;
    return unchanged;
  }
  fs::create_directories(job.out);
  write_answer_tables(plan, dataset, events, options);

  // auto: every item row steps each batch (as torch's Adam on an embedding: +0.02 HR@10 on
  // ml-latest-small, level on online-retail) while the catalog has at most 16 rows per position
  // of a full batch; lazily beyond, where walking every row would cost more than the batch.
  if (job.embedding_updates == "auto" && !job.update)
    train_options.embedding_updates = config.num_items <= uint64_t{16} * job.batch_size * config.max_sequence
                                     ? EmbeddingUpdates::kDense : EmbeddingUpdates::kLazy;
  auto [run, state] = start_state(plan, config, dataset, log);
  if (job.update) in.train.item_features = {};  // the folded model: no metadata rows
  SequenceTrainer trainer(job.update ? update_set : in.train, train_options, std::move(state));
  log << fmt::format("sasrec on the {}: {} users' sequences, {} positions an epoch, {} blocks x {} heads, hidden {}, up "
                     "to {} items each, {} item-row updates\n",
                     train_options.cuda ? "GPU" : "CPU (`--device cuda` trains it on the GPU)", in.train.num_users(),
                     trainer.positions_per_epoch(), config.blocks, config.heads, config.hidden, config.max_sequence,
                     train_options.embedding_updates == EmbeddingUpdates::kDense ? "dense" : "lazy");
  TrainResult result;
  result.backend = train_options.cuda ? "cuda" : "cpu";
  const json dataset_json = dataset_record(dataset);
  if (in.test) result.popularity = evaluate_popularity(*in.test);
  const std::string chosen_by = in.validation ? "val." + plan.metric : plan.metric;
  result.best_epoch = run.best_epoch;
  ProgressLine progress("positions", job.progress);
  for (uint32_t epoch = run.epoch + 1; epoch <= job.epochs && (job.patience == 0 || run.since_best < job.patience); ++epoch) {
    const EpochStats stats = trainer.train_epoch(epoch - 1, [&](uint64_t done, uint64_t total, double loss) {
      progress.update(fmt::format("epoch {}/{}", epoch, job.epochs), static_cast<double>(done) / std::max<uint64_t>(total, 1),
                      static_cast<double>(done), fmt::format("loss {:.4f}", loss));
      if (job.on_progress) job.on_progress(TrainProgress{epoch, job.epochs, done, total, loss});
    });
    progress.clear();
    TB_CHECK(stats.finite, fmt::format("epoch {}: the loss became NaN or infinite; training stopped. Try a lower `lr`.", epoch));
    EpochRecord record{epoch, stats.mean_loss, stats.samples, stats.seconds, {}, 0};
    const SequenceState& now = trainer.state();  // copied out of the trainer once an epoch
    if (in.test) record.metrics = judge(plan, in, now.params);
    const double value = in.test ? record.metrics.at(chosen_by) : epoch;
    const bool better = value > run.best;
    run.epoch = epoch;
    run.metrics += epoch_record_json(record).dump() + "\n";
    run.since_best = better ? 0 : run.since_best + 1;
    if (better) run.best = value, run.best_epoch = epoch, result.best_epoch = epoch;
    // Checkpoint, model, metrics, in that order: a kill at any moment leaves a run --resume completes.
    write_checkpoint(job.out / "sequence_checkpoint.bin", run, now, resume_settings(plan));
    if (better) write_model(plan, fold_item_features(now.params, in.train.item_features), epoch, dataset_json);
    write_file_atomically(job.out / "metrics.jsonl", run.metrics);
    log << epoch_line(record, stats) << std::endl;  // a line as each epoch ends, also into a file
    result.history.push_back(record);
    if (job.on_epoch) job.on_epoch(record);
    if (job.patience > 0 && run.since_best >= job.patience)
      log << fmt::format("no better {} for {} epochs: stopping\n", chosen_by, job.patience);
  }
  log << fmt::format("best epoch {} ({}); model written to {}\n", result.best_epoch, chosen_by, job.out.string());
  return result;
}

void write_sequence_params(const SequenceParams& params, const fs::path& path) {
  std::string bytes(kSequenceMagic, sizeof(kSequenceMagic));
  const std::string header = config_json(params.config).dump();
  const uint64_t header_size = header.size(), count = params.values.size();
  bytes.append(reinterpret_cast<const char*>(&header_size), sizeof(header_size));
  bytes.append(header);
  bytes.append(reinterpret_cast<const char*>(&count), sizeof(count));
  bytes.append(reinterpret_cast<const char*>(params.values.data()), count * sizeof(float));
  append_checksum(bytes);
  write_file_atomically(path, bytes);
}

SequenceParams read_sequence_params(const fs::path& path, uint32_t num_items) {
  const std::string file = read_file(path);
  auto bad = [&](const std::string& what) { return Error(fmt::format("corrupt: {}: {}", path.string(), what)); };
  if (file.size() < 8 || std::memcmp(file.data(), kSequenceMagic, 8) != 0)
    throw Error(fmt::format("{}: not a tastebud sequence model file", path.string()));
  const std::string_view bytes = checked_payload(file, path);
  size_t at = 8;
  auto take_u64 = [&] {
    uint64_t n;
    if (at + 8 > bytes.size()) throw bad("shorter than its header");
    std::memcpy(&n, bytes.data() + at, 8);
    at += 8;
    return n;
  };
  const uint64_t header_size = take_u64();
  if (header_size > bytes.size() - at) throw bad("a header larger than the file");
  SequenceParams p;
  try {
    const json h = json::parse(bytes.substr(at, header_size));
    p.config = SequenceConfig{h.at("num_items"), h.at("hidden"), h.at("blocks"),
                              h.at("heads"),     h.at("max_sequence"), h.at("dropout")};
    p.config.check();
  } catch (const std::exception& e) {
    throw bad(fmt::format("its header: {}", e.what()));
  }
  at += header_size;
  if (p.config.num_items != num_items) throw bad(fmt::format("covers {} items, the model has {}", p.config.num_items, num_items));
  const uint64_t count = take_u64();
  if (count != SequenceLayout(p.config).total || count * sizeof(float) != bytes.size() - at)
    throw bad(fmt::format("{} parameters where its shape needs {}", count, SequenceLayout(p.config).total));
  p.values.resize(count);
  std::memcpy(p.values.data(), bytes.data() + at, count * sizeof(float));
  return p;
}

}  // namespace tastebud::host
