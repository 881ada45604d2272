#include <iostream>

#include "host/commands.h"
#include "host/training.h"

namespace tastebud::host {

void add_train_command(CLI::App& app) {
  auto job = std::make_shared<TrainJob>();
  auto* cmd = app.add_subcommand("train", "Train a model on an imported dataset");
  cmd->set_config("--config", "", "TOML job file; its keys are the long flag names (flags on the command line win)");
  cmd->allow_config_extras(CLI::config_extras_mode::ignore);  // [[events]] tables are read by toml++
  cmd->add_option("--data", job->data, "Dataset directory written by `tastebud import`")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--out", job->out, "Model directory to write")->required();
  cmd->add_option("--model", job->model, "neumf, gmf, mlp, or a recipe: popularity, sims, trending")->capture_default_str();
  cmd->add_option("--factors", job->factors, "GMF factors")->capture_default_str();
  cmd->add_option("--layers", job->layers, "MLP widths; the first is the concatenated user+item embedding")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--epochs", job->epochs, "Epochs (a resumed run continues up to this many)")->capture_default_str();
  cmd->add_option("--batch-size", job->batch_size, "Samples per step (positives + negatives; pairs for BPR)")->capture_default_str();
  cmd->add_option("--negatives", job->negatives, "Sampled negatives per positive")->capture_default_str();
  cmd->add_option("--lr", job->lr, "Learning rate")->capture_default_str();
  cmd->add_option("--optimizer", job->optimizer, "adam (lazy on embeddings), adagrad or sgd")->capture_default_str();
  cmd->add_option("--l2", job->l2, "L2 penalty on touched embedding rows and dense weights")->capture_default_str();
  cmd->add_option("--loss", job->loss, "bce or bpr")->capture_default_str();
  cmd->add_option("--sampler", job->sampler, "Negative sampler: uniform or popularity")->capture_default_str();
  cmd->add_option("--sampler-alpha", job->sampler_alpha, "Popularity sampler exponent")->capture_default_str();
  cmd->add_option("--device", job->device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_flag("--tf32", job->tf32, "CUDA: TF32 tensor cores for the dense layers (faster, 10-bit mantissa products)");
  cmd->add_option("--threads", job->threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--seed", job->seed, "Seed of every random draw")->capture_default_str();
  cmd->add_option("--eval", job->eval, "loo (HR/NDCG@10 among 99 negatives), holdout (newest 10%) or none")->capture_default_str();
  cmd->add_option("--eval-users", job->eval_users, "Cap on evaluated users (0: all for loo, 10000 for holdout)")->capture_default_str();
  cmd->add_option("--early-stop-metric", job->early_stop_metric, "Metric that picks the best epoch (default hr@10 or ndcg@10)");
  cmd->add_option("--patience", job->patience, "Stop after this many epochs without improvement (0: never)")->capture_default_str();
  cmd->add_option("--event", job->events,
                  "Train on this event type only, as TYPE[:THRESHOLD[:WEIGHT]]; repeat for more types "
                  "(job file: [[events]] event_type, value_threshold, weight)");
  cmd->add_flag("--resume", job->resume, "Continue an interrupted run from MODEL_DIR/checkpoint.bin");
  cmd->add_flag("!--no-progress", job->progress, "No progress line on stderr");
  // Recipes (host/recipes.h).
  cmd->add_option("--event-weights", job->event_weights, "Recipes: TYPE=WEIGHT,...; only listed event types count (default: every event counts 1)")->delimiter(',');
  cmd->add_option("--half-life-days", job->half_life_days, "popularity: recency decay half-life in days (0: none)")->capture_default_str();
  cmd->add_option("--min-co-count", job->min_co_count, "sims: fewest users that must share two items")->capture_default_str();
  cmd->add_option("--popularity-discount", job->popularity_discount, "sims: co-count / (count_i * count_j)^discount")->capture_default_str();
  cmd->add_option("--neighbors", job->neighbors, "sims: related items kept per item")->capture_default_str();
  cmd->add_option("--trend-window-days", job->trend_window_days, "trending: length of the latest window in days")->capture_default_str();
  cmd->add_option("--trend-smoothing", job->trend_smoothing, "trending: (latest - previous) / (previous + smoothing)")->capture_default_str();
  cmd->callback([job, cmd] {
    if (auto* config = cmd->get_option("--config"); config->count() > 0) {
      job->config_file = config->as<std::string>();
    }
    run_training(*job, std::cout);
  });
}

}  // namespace tastebud::host
