// A training job as the front ends fill it (TrainJob: the command line, a job file, Python keyword
// options, retrain, tune) and as it runs (TrainPlan: every choice parsed and every setting checked,
// once, by make_plan), and what a run returns.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/evaluation.h"
#include "host/features.h"
#include "host/model_type.h"
#include "host/split.h"
#include "tastebud/engine/model.h"
#include "tastebud/engine/sequence_trainer.h"
#include "tastebud/engine/trainer.h"

namespace tastebud {
class Communicator;  // tastebud/engine/comm.h
}

namespace tastebud::host {

struct EpochRecord;

// Where an epoch is: samples done of its total and the mean loss so far.
struct TrainProgress {
  uint32_t epoch = 0, epochs = 0;  // 1-based epoch of how many
  uint64_t done = 0, total = 0;
  double loss = 0;
};

struct TrainJob {
  std::filesystem::path data;
  std::filesystem::path out;
  std::string model = "neumf";
  uint32_t factors = 8;
  std::vector<uint32_t> layers{64, 32, 16, 8};
  uint32_t epochs = 20;
  uint32_t batch_size = 256;
  uint32_t negatives = 4;
  float lr = 0.001f;
  std::string optimizer = "adam";
  // lazy | dense | auto (EmbeddingUpdates); auto: dense when the id tables have at most 16 rows per
  // batch row, in one process and outside update mode, else lazy. Lazy by default: on the real
  // exports dense learned no better and cost up to twice the epoch (bench/RESULTS.md, issue 25).
  std::string embedding_updates = "lazy";
  float l2 = 0.0f;
  std::string loss = "bce";
  std::string sampler = "uniform";
  float sampler_alpha = 0.75f;
  std::string device = "auto";
  std::string precision = "fp32";  // fp32, tf32 or bf16 (CUDA's dense layers)
  bool tf32 = false;               // --tf32: precision tf32, as before --precision existed
  std::string cuda_kernels = "separate";  // separate or fused (CUDA's step kernels)
  std::string rank_exchange = "host";     // host or device (where CUDA ranks keep the id-table shards)
  bool cuda_graph = false;                // CUDA: replay each full step from a captured graph
  float impression_negatives = 0.0f;  // share of negatives from the user's ignored impressions
  uint32_t threads = 0;
  uint64_t seed = 1;
  std::string eval = "loo";
  uint32_t eval_users = 0;         // 0: every user for loo, 10000 for holdout
  // Users of the validation split carved from the training rows, on which the epoch kept in
  // model.bin and early stopping are chosen (the test rows only judge); 0: none, the test split
  // chooses (optimistic, as most papers do).
  uint32_t validation_users = 1000;
  // False: the test split only holds its rows out and is never evaluated (tastebud tune's trials,
  // judged on the validation split alone); needs validation users.
  bool judge_on_test = true;
  std::string early_stop_metric;   // empty: hr@10 (loo) or ndcg@10 (holdout)
  uint32_t patience = 0;           // epochs without improvement before stopping; 0: never stop early
  bool resume = false;
  // A previous model directory to start from (host/warm_start.h): its rows for the ids it knew,
  // fresh rows for new ids, its optimizer state where its checkpoint has one. Empty: from scratch.
  std::filesystem::path warm_start;
  // Update mode (needs warm_start): only new users and items and those with interactions newer
  // than the parent's dataset train, on their positives; every other row and the dense layers stay.
  bool update = false;
  bool progress = true;            // a progress line on stderr when it is a terminal
  // The ranks this job trains on (null: world_communicator(), one process unless a launcher
  // started several). Rank 0 writes the model directory and logs; every rank trains its slice.
  Communicator* comm = nullptr;
  // Told as each epoch goes and when it ends (the Python package draws its progress bar with
  // these); either may be empty, and either may throw to stop the run (the checkpoint stays).
  std::function<void(const TrainProgress&)> on_progress;
  std::function<void(const EpochRecord&)> on_epoch;
  // Events that train the model, TYPE[:THRESHOLD[:WEIGHT]] each (see EventRule in split.h); from
  // --event flags or the job file's [[events]] tables. Empty: every event counts once.
  std::vector<std::string> events;
  // Event types whose items a user's answers leave out (excluded.bin, host/model_dir.h), over every
  // row of the dataset; empty: the items of seen.bin (every item the model trained on for the user).
  std::vector<std::string> exclude_events;
  // With exclude_events: only each user's this many newest events of each type are left out (the
  // service's automatic exclusions look at the latest 100); 0: every one.
  uint32_t exclude_latest = 0;
  // A domain recommender of the service (host/use_cases.h): it fixes the model, the events, the
  // exclusions and the recipe's settings; empty: none.
  std::string use_case;
  // Which of the dataset's event types play the service's roles for a use case, ROLE=TYPE[,TYPE]
  // (roles view, purchase, watch, click); a role not named takes the types spelled as it is.
  std::vector<std::string> event_map;
  // A use case that picks "the best model for the data" trains these and keeps the best on the
  // validation split; empty: its defaults (host/use_cases.h).
  std::vector<std::string> candidates;
  std::filesystem::path config_file;  // the TOML job file, for its [[events]] tables
  // Metadata in the model: auto (items when the dataset has Items fields; none for mf), none, items,
  // users or both (host/features.h); the textual field's token hashes are folded to text_buckets rows.
  std::string metadata = "auto";
  uint32_t text_buckets = 1u << 16;
  // Contextual categorical fields of the interactions that feed the MLP branch (names, or `all`);
  // empty: none. Evaluation ranks each user in the context of the held-out interaction.
  std::vector<std::string> context;

  // Recipes (--model popularity, sims, trending or transitions; host/recipes.h); they weight events by `events`.
  double half_life_days = 0;               // popularity: an event loses half its weight per this many days; 0: no decay
  std::string popularity_count = "users";  // popularity: users (distinct users per item) or events (summed weights)
  double popularity_window_days = 0;       // popularity: only the latest this many days count; 0: all time
  uint32_t min_co_count = 2;               // sims: fewest users that must share two items
  float popularity_discount = 0.5f;        // sims: score = co-count / (count_i * count_j)^discount
  uint32_t neighbors = 100;                // sims, transitions (1000 unless set): related (following) items kept per item
  std::string co_occurrence = "user";      // sims: baskets of co-occurrence: user (history), order or session
  std::string order_field = "ORDER_ID";    // sims: the interactions' field naming an order (co_occurrence order)
  double session_gap_hours = 1;            // sims: a longer gap between a user's events starts a session
  double metadata_similarity = 0;          // sims: share in [0, 1] of the metadata cosine in a neighbour's score
  double trend_window_days = 7;            // trending: the latest window, compared with the one before
  double trend_smoothing = 10;             // trending: growth = (latest - previous) / (previous + smoothing)
  uint32_t transition_window = 20;         // transitions: following events that count as following an event
  double transition_decay = 0.85;          // transitions: an event d events later counts decay^(d - 1)
  uint32_t recent_items = 10;              // transitions: the user's latest distinct items that score
  double recent_decay = 0.6;               // transitions: the k-th latest of them (k = 0 newest) weighs decay^k

  // The sequence model (--model sasrec; tastebud/engine/sequence_model.h). batch_size counts
  // sequences and negatives are per position for it (128, 1 and lr 0.005 unless set).
  uint32_t hidden = 64;           // item, position and layer width
  uint32_t blocks = 2;            // self-attention blocks
  uint32_t heads = 1;             // attention heads (divide hidden)
  uint32_t max_sequence = 200;    // a user's latest items the model reads
  float dropout = 0.2f;
  float gbce_t = 0.0f;            // gSASRec's calibration of the sampled loss; 0: plain BCE
};

struct EpochRecord {
  uint32_t epoch = 0;  // 1-based
  double loss = 0;
  uint64_t samples = 0;
  double seconds = 0;
  Metrics metrics;
  uint64_t impression_negatives = 0;  // negatives drawn from ignored impressions this epoch
};

// An epoch's row of metrics.jsonl (and of a checkpoint's history): epoch, loss, samples, seconds,
// samples_per_second, metrics, impression_negatives.
nlohmann::json epoch_record_json(const EpochRecord& record);

struct TrainResult {
  std::string backend;
  std::vector<EpochRecord> history;
  uint32_t best_epoch = 0;
  Metrics popularity;
  // Update mode found nothing changed since the parent model: nothing trained, no model written.
  bool unchanged = false;

  // The record of the epoch the model was kept from (a recipe's one record), or null.
  const EpochRecord* kept() const {
    const EpochRecord* out = history.empty() ? nullptr : &history.back();
    for (const EpochRecord& r : history)
      if (r.epoch == best_epoch) out = &r;
    return out;
  }
};

// A job parsed once (make_plan): what run_training, tune and retrain read instead of the job's
// strings. The dataset resolves what `auto` leaves open (metadata, embedding updates) and adds its
// sizes and metadata to model_config when the run opens it.
struct TrainPlan {
  TrainJob job;  // as asked: config.json records its settings, the log its names
  ModelType model = ModelType::kNeuMF;
  EvalProtocol protocol = EvalProtocol::kLeaveOneOut;
  std::vector<std::string> event_rules;  // job_events(job)
  // The test split's options (the events parsed, the protocol, the evaluated users, impressions);
  // they record its held-out rows when a validation split is carved from it.
  SplitOptions split;
  bool validate = false;  // a validation split (job.validation_users) chooses the epoch
  std::string metric;     // what chooses the epoch: job.early_stop_metric, else ndcg@10 or hr@10
  // Neural models only: the model's kind, factors and layers, the backend's options, each setting
  // checked (embedding updates `auto` reads lazy until the dataset resolves it), and the metadata.
  ModelConfig model_config;
  TrainOptions options;
  std::optional<MetadataSides> metadata;  // nullopt: `auto`, until the dataset resolves it
  // sasrec only: the model's shape (num_items from the dataset) and the trainer's options.
  SequenceConfig sequence_config;
  SequenceTrainOptions sequence_options;
};

// Parses and checks every setting that needs no dataset; throws an Error naming the setting.
TrainPlan make_plan(const TrainJob& job);

// The job's event rules as TYPE[:THRESHOLD[:WEIGHT]]: the --event flags, or else the job file's
// [[events]] tables.
std::vector<std::string> job_events(const TrainJob& job);

// How the job splits its dataset: --event rules, --eval protocol, evaluated users, impressions.
SplitOptions split_options_of(const TrainJob& job);

// The settings a model trains well with, for the options a user did not set: `mf` takes those of
// Rendle et al.'s tuned MF baseline (64 factors, 8 negatives, lr 0.002, l2 0.005); `transitions`
// keeps 1000 following items per item (chosen on real data, bench/RESULTS.md); other models the
// TrainJob defaults; `sasrec` 128 sequences a batch, 1 negative per position, lr 0.005, dense
// item rows where they fit, 80 epochs with patience 15. `given(name)`
// tells whether the user set option `name` ("factors", "negatives", "lr", "l2", "neighbors",
// "batch_size", "epochs", "patience", "embedding_updates").
void apply_model_defaults(TrainJob& job, const std::function<bool(const std::string&)>& given);

}  // namespace tastebud::host
