#include <algorithm>
#include <iostream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "host/commands.h"
#include "host/recipes.h"
#include "host/training.h"
#include "host/use_cases.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

// Sets every option the job file names and the command line did not: the file's keys are the long
// flag names (with - or _), and [[events]] is read by the training job itself.
void apply_job_file(CLI::App& cmd, const std::filesystem::path& path) {
  toml::table file;
  try {
    file = toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}: {}", path.string(), e.source().begin.line, e.description()));
  }
  for (const auto& [key, value] : file) {
    std::string name(key.str());
    if (name == "events") continue;
    std::replace(name.begin(), name.end(), '_', '-');
    const int line = static_cast<int>(value.source().begin.line);
    CLI::Option* option = nullptr;
    try {
      option = cmd.get_option("--" + name);
    } catch (const CLI::OptionNotFound&) {
      throw Error(fmt::format("{}:{}: '{}' is not a train option (see tastebud train --help)",
                              path.string(), line, key.str()));
    }
    if (name == "config") continue;
    if (option->count() > 0) continue;  // the command line wins
    // The lambda names the key through a plain variable: C++20 does not let lambdas capture
    // structured bindings (g++ accepts it, clang refuses).
    const std::string key_name(key.str());
    auto scalar = [&](const toml::node& node) -> std::string {
      if (node.is_string()) return *node.value<std::string>();
      if (node.is_boolean()) return *node.value<bool>() ? "true" : "false";
      if (node.is_integer()) return std::to_string(*node.value<int64_t>());
      if (node.is_floating_point()) return fmt::format("{}", *node.value<double>());
      throw Error(fmt::format("{}:{}: '{}' must be a string, number or boolean", path.string(), line,
                              key_name));
    };
    if (const toml::array* array = value.as_array()) {
      for (const toml::node& element : *array) option->add_result(scalar(element));
    } else {
      option->add_result(scalar(value));
    }
    try {
      option->run_callback();
    } catch (const CLI::Error& e) {
      throw Error(fmt::format("{}:{}: '{}': {}", path.string(), line, key.str(), e.what()));
    }
  }
}

// The recipes' options (host/recipes.h).
void add_recipe_options(CLI::App* cmd, const std::shared_ptr<TrainJob>& job) {
  cmd->add_option("--half-life-days", job->half_life_days, "popularity: recency decay half-life in days (0: none)")->capture_default_str();
  cmd->add_option("--popularity-count", job->popularity_count,
                  "popularity (every recipe's fallback): users (distinct users per item, the service's "
                  "Popularity-Count) or events (summed event weights)")->capture_default_str();
  cmd->add_option("--popularity-window-days", job->popularity_window_days,
                  "popularity: only events of the latest this many days count (0: all time)")->capture_default_str();
  cmd->add_option("--min-co-count", job->min_co_count, "sims: fewest users that must share two items")->capture_default_str();
  cmd->add_option("--popularity-discount", job->popularity_discount, "sims: co-count / (count_i * count_j)^discount")->capture_default_str();
  cmd->add_option("--neighbors", job->neighbors, "sims, transitions: related (following) items kept per item (transitions: 1000 unless set)")->capture_default_str();
  cmd->add_option("--co-occurrence", job->co_occurrence,
                  "sims: items count together within a user (the user's history), order (events sharing "
                  "--order-field: frequently bought together) or session (a user's events without a gap "
                  "over --session-gap-hours)")->capture_default_str();
  cmd->add_option("--order-field", job->order_field, "sims: the interactions' field naming the order")->capture_default_str();
  cmd->add_option("--session-gap-hours", job->session_gap_hours,
                  "sims: a longer gap between a user's events starts a new session")->capture_default_str();
  cmd->add_option("--metadata-similarity", job->metadata_similarity,
                  "sims: share in [0, 1] of the items' metadata similarity (TF-IDF cosine of categorical "
                  "values and text) in a neighbour's score; items without interactions then get neighbours")
      ->capture_default_str();
  cmd->add_option("--trend-window-days", job->trend_window_days, "trending: length of the latest window in days")->capture_default_str();
  cmd->add_option_function<std::string>(
      "--trend-window", [job](const std::string& w) { job->trend_window_days = parse_trend_window(w); },
      "trending: the service's windows, 30m, 1h, 3h or 1d (instead of --trend-window-days)");
  cmd->add_option("--trend-smoothing", job->trend_smoothing, "trending: (latest - previous) / (previous + smoothing)")->capture_default_str();
  cmd->add_option("--transition-window", job->transition_window,
                  "transitions: how many of a user's following events count as following an event")->capture_default_str();
  cmd->add_option("--transition-decay", job->transition_decay,
                  "transitions: an event d events after another counts decay^(d-1) (1: no decay)")->capture_default_str();
  cmd->add_option("--recent-items", job->recent_items,
                  "transitions: how many of the user's latest distinct items score the answer")->capture_default_str();
  cmd->add_option("--recent-decay", job->recent_decay,
                  "transitions: the user's k-th latest item (k = 0 the newest) weighs decay^k")->capture_default_str();
}

}  // namespace

void add_recommenders_command(CLI::App& app);

std::function<bool(const std::string&)> given_on(const CLI::App* cmd) {
  return [cmd](std::string name) {
    std::replace(name.begin(), name.end(), '_', '-');
    try {
      return cmd->count("--" + name) > 0;
    } catch (const CLI::OptionNotFound&) {  // a TrainJob field without a flag of its own
      return false;
    }
  };
}

void add_train_command(CLI::App& app) {
  auto job = std::make_shared<TrainJob>();
  auto* cmd = app.add_subcommand("train", "Train a model on an imported dataset");
  cmd->add_option("--config", job->config_file,
                  "TOML job file; its keys are the long flag names (flags on the command line win), "
                  "plus [[events]] tables")
      ->check(CLI::ExistingFile);
  cmd->add_option("--data", job->data, "Dataset directory written by `tastebud import`")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--out", job->out, "Model directory to write")->required();
  cmd->add_option("--model", job->model, "neumf, gmf, mlp, mf (biased matrix factorisation), sasrec (self-attention over each user's latest items), or a recipe: popularity, sims, trending, transitions")->capture_default_str();
  cmd->add_option("--factors", job->factors, "GMF factors")->capture_default_str();
  cmd->add_option("--layers", job->layers, "MLP widths; the first is the concatenated user+item embedding")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--epochs", job->epochs, "Epochs (a resumed run continues up to this many)")->capture_default_str();
  cmd->add_option("--batch-size", job->batch_size, "Samples per step (positives + negatives; pairs for BPR; sasrec: sequences, 128 unless set)")->capture_default_str();
  cmd->add_option("--negatives", job->negatives, "Sampled negatives per positive (sasrec: per position, 1 unless set)")->capture_default_str();
  cmd->add_option("--lr", job->lr, "Learning rate (sasrec: 0.005 unless set)")->capture_default_str();
  cmd->add_option("--optimizer", job->optimizer, "adam, adagrad or sgd (how each moves the embedding rows: --embedding-updates)")->capture_default_str();
  cmd->add_option("--embedding-updates", job->embedding_updates,
                  "lazy: a step moves the embedding rows it uses; dense: every row, as torch.optim.Adam (one process; on the real exports about +0.01 HR@10 per epoch for 2.7x the epoch's time); auto: dense when walking every id-table float adds at most a quarter to a lazy step by the backend's measured costs (one process, no --update), else lazy; sasrec: the item rows, auto unless set: dense while items <= 16 x --batch-size x --max-sequence")
      ->capture_default_str();
  cmd->add_option("--l2", job->l2, "L2 on the embedding and metadata rows, per interaction that uses them (lambda/2 |row|^2 added to each scored pair's loss, as in matrix factorisation); dense layers are not penalized. 1e-4 to 1e-2 are sensible")->capture_default_str();
  cmd->add_option("--loss", job->loss, "bce or bpr")->capture_default_str();
  cmd->add_option("--sampler", job->sampler, "Negative sampler: uniform or popularity")->capture_default_str();
  cmd->add_option("--sampler-alpha", job->sampler_alpha, "Popularity sampler exponent")->capture_default_str();
  cmd->add_option("--device", job->device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--impression-negatives", job->impression_negatives,
                  "Share of negatives drawn from items the user was shown (IMPRESSION) and did not act on")
      ->capture_default_str();
  cmd->add_option("--precision", job->precision,
                  "CUDA: how the dense layers multiply: fp32, or for the tensor cores tf32 (10-bit mantissa) or "
                  "bf16 (7-bit; with --cuda-kernels fused the MLP's activations are stored in bf16 too); fp32 "
                  "accumulation, weights and optimizer state either way (default fp32)");
  cmd->add_flag("--tf32", job->tf32, "CUDA: the same as --precision tf32");
  cmd->add_option("--cuda-kernels", job->cuda_kernels,
                  "CUDA: separate (one kernel per operation) or fused (bias and ReLU as GEMM epilogues, the ReLU "
                  "backward inside the bias gradient, the GMF product inside the head, each touched embedding row "
                  "summed and stepped in one pass); the same model within float rounding")
      ->capture_default_str();
  cmd->add_flag("--cuda-graph", job->cuda_graph,
                "CUDA in one process: replay each full batch's step from a CUDA graph captured once (one launch a "
                "step); the same model");
  cmd->add_option("--rank-exchange", job->rank_exchange,
                  "CUDA on several ranks: where the id tables' shards live: host (rows and gradients staged through "
                  "host memory) or device (on the GPUs, moved GPU to GPU by NCCL); the same model within float "
                  "rounding")
      ->capture_default_str();
  cmd->add_option("--threads", job->threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--seed", job->seed, "Seed of every random draw")->capture_default_str();
  cmd->add_option("--eval", job->eval, "loo (HR/NDCG@10 among 99 negatives), holdout (newest 10%), personalize (the service's: newest 10% of a random 10% of the users), cold-items (20% of items cold, ranked among 99 cold items) or none")->capture_default_str();
  cmd->add_option("--eval-users", job->eval_users, "Cap on evaluated users (0: all for loo, 10000 for holdout)")->capture_default_str();
  cmd->add_option("--validation-users", job->validation_users,
                  "Users of the validation split carved from training, on which model.bin's epoch and early "
                  "stopping are chosen (0: choose on the test split)")->capture_default_str();
  cmd->add_option("--early-stop-metric", job->early_stop_metric, "Metric that picks the best epoch (default hr@10 or ndcg@10)");
  cmd->add_option("--patience", job->patience, "Stop after this many epochs without improvement (0: never)")->capture_default_str();
  cmd->add_option("--event", job->events,
                  "Train on this event type only, as TYPE[:THRESHOLD[:WEIGHT]]; repeat for more types "
                  "(job file: [[events]] event_type, value_threshold, weight)");
  cmd->add_option("--exclude-events", job->exclude_events,
                  "Event types whose items a user's answers leave out, over all the dataset's rows (e.g. purchase), "
                  "or `none`; default: every item the model trained on for the user")
      ->delimiter(',');
  cmd->add_option("--exclude-latest", job->exclude_latest,
                  "With --exclude-events: only each user's N newest events of each type are left out (0: all; "
                  "a --use-case: 100, as the service)")
      ->capture_default_str();
  cmd->add_option("--use-case", job->use_case,
                  "A domain recommender of the service (it fixes the model, events and exclusions): "
                  "recommended-for-you, customers-who-viewed-x-also-viewed, frequently-bought-together, best-sellers, "
                  "most-viewed, top-picks-for-you, because-you-watched-x, more-like-x, trending-now, most-popular");
  cmd->add_option("--event-map", job->event_map,
                  "--use-case: the dataset's event types of a role, ROLE=TYPE[,TYPE] (roles view, purchase, watch, "
                  "click; default: the types spelled as the role, any case); repeat for more roles");
  cmd->add_option("--candidates", job->candidates,
                  "--use-case recommended-for-you, top-picks-for-you: the models tried, the best on validation kept "
                  "(default transitions,mf; --model names one)")
      ->delimiter(',');
  cmd->add_option("--metadata", job->metadata,
                  "Metadata features in the model: auto (the Items fields the dataset has; none for mf), "
                  "none (ids only), items, users or both")->capture_default_str();
  cmd->add_option("--text-buckets", job->text_buckets,
                  "Hash buckets of the textual field's bag of words (a power of two)")->capture_default_str();
  cmd->add_option("--context", job->context,
                  "Contextual categorical fields of the interactions (e.g. DEVICE_TYPE) that feed the MLP "
                  "branch, comma-separated, or `all`")
      ->delimiter(',');
  cmd->add_flag("--resume", job->resume, "Continue an interrupted run from MODEL_DIR/checkpoint.bin");
  cmd->add_option("--warm-start", job->warm_start,
                  "Start from this model directory: ids it knew keep their rows (matched by id), new ids get "
                  "fresh rows, its optimizer state carries over")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--update", job->update,
                "With --warm-start: train only new users and items and those with interactions newer than the "
                "parent's dataset, on their positives; every other row and the dense layers stay frozen");
  // A flag function, not "!--no-progress": CLI11 would print that as --no-progress{false}.
  cmd->add_flag_function("--no-progress", [job](int64_t count) { job->progress = count <= 0; },
                         "No progress line on stderr");
  add_recipe_options(cmd, job);
  // The sequence model (tastebud/engine/sequence_model.h).
  cmd->add_option("--hidden", job->hidden, "sasrec: item, position and layer width")->capture_default_str();
  cmd->add_option("--blocks", job->blocks, "sasrec: self-attention blocks")->capture_default_str();
  cmd->add_option("--heads", job->heads, "sasrec: attention heads (they divide --hidden)")->capture_default_str();
  cmd->add_option("--max-sequence", job->max_sequence, "sasrec: the user's latest items the model reads")->capture_default_str();
  cmd->add_option("--dropout", job->dropout, "sasrec: dropout of the input and of each block's outputs")->capture_default_str();
  cmd->add_option("--gbce-t", job->gbce_t,
                  "sasrec: gSASRec's calibration of the sampled loss (0: plain BCE, 1: fully calibrated; 0.75 with tens of --negatives)")->capture_default_str();
  cmd->callback([job, cmd] {
    if (!job->config_file.empty()) apply_job_file(*cmd, job->config_file);
    const auto given = given_on(cmd);
    if (!job->use_case.empty()) {
      train_use_case(*job, given, std::cout);
      return;
    }
    apply_model_defaults(*job, given);
    run_training(*job, std::cout);
  });
  add_recommenders_command(app);
}

void add_recommenders_command(CLI::App& app) {
  auto job = std::make_shared<RecommendersJob>();
  auto* cmd = app.add_subcommand("recommenders", "Train every use case of a domain (the service's domain recommenders)");
  cmd->add_option("--data", job->data, "Dataset directory written by `tastebud import`")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--domain", job->domain, "ecommerce or video-on-demand")->required();
  cmd->add_option("--out", job->out, "Directory of the recommenders: one model directory per use case, and recommenders.json")->required();
  cmd->add_option("--event-map", job->event_map,
                  "The dataset's event types of a role, ROLE=TYPE[,TYPE] (roles view, purchase, watch, click; "
                  "default: the types spelled as the role, any case); repeat for more roles");
  cmd->add_option("--candidates", job->candidates,
                  "The models recommended-for-you and top-picks-for-you try, the best on validation kept (default transitions,mf)")
      ->delimiter(',');
  cmd->add_option("--threads", job->threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--seed", job->seed, "Seed of every random draw")->capture_default_str();
  cmd->add_flag_function("--no-progress", [job](int64_t count) { job->progress = count <= 0; }, "No progress line on stderr");
  cmd->callback([job] { train_recommenders(*job, std::cout); });
}

}  // namespace tastebud::host
