#include <iostream>
#include <memory>

#include "host/commands.h"
#include "host/offline_eval.h"

namespace tastebud::host {

void add_evaluate_command(CLI::App& app) {
  auto options = std::make_shared<OfflineEvalOptions>();
  auto* cmd = app.add_subcommand(
      "evaluate",
      "Score batch recommendations (this engine's, the managed service's or another system's) against "
      "held-out interactions: precision, NDCG and MRR with 95% intervals; two files side by side with a "
      "paired test");
  cmd->add_option("--predictions", options->predictions,
                  "batch-infer output in the service's layout; give it twice to compare two systems")
      ->required()->expected(1, 2)->check(CLI::ExistingFile);
  cmd->add_option("--truth", options->truth, "Held-out interactions: CSV with USER_ID and ITEM_ID columns")
      ->required()->check(CLI::ExistingFile);
  cmd->add_option("--data", options->data,
                  "Dataset the systems trained on: its catalog for coverage, novelty, diversity, cold items");
  cmd->add_option("--resamples", options->bootstrap.resamples, "Bootstrap resamples")->capture_default_str()
      ->check(CLI::Range(10u, 100000u));
  cmd->callback([options] { print_report(*options, evaluate_predictions(*options), std::cout); });
}

}  // namespace tastebud::host
