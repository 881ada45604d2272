#include <cmath>
#include <iostream>
#include <memory>

#include "host/commands.h"
#include "host/tune.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

// "90", "90s", "15m", "2h" -> seconds.
double parse_duration(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  const double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : -1;
  if (used == 0 || scale < 0 || !(value > 0) || !std::isfinite(value)) {
    throw Error("--time-budget '" + text + "': expected a positive duration such as 90s, 15m or 2h");
  }
  return value * scale;
}

}  // namespace

void add_tune_command(CLI::App& app) {
  auto options = std::make_shared<TuneOptions>();
  auto budget = std::make_shared<std::string>();
  options->out = "tune";
  auto* cmd = app.add_subcommand(
      "tune",
      "Search learning rate, factors, negatives and L2 (sasrec: learning rate, width, blocks, dropout and negatives) "
      "by successive halving over epochs, on a validation split carved from the training rows (never the test rows); "
      "writes the best job file for train --config");
  cmd->add_option("--data", options->base.data, "Dataset directory written by `tastebud import`")->required();
  cmd->add_option("--out", options->out, "Directory for trials/, trials.tsv and best.toml")->capture_default_str();
  cmd->add_option("--trials", options->trials, "Configurations drawn")->capture_default_str()->check(CLI::Range(1u, 1000u));
  cmd->add_option("--max-epochs", options->max_epochs, "Epochs of the last rung")->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  cmd->add_option("--reduction", options->reduction, "Each rung keeps 1 / this of the trials")->capture_default_str()
      ->check(CLI::Range(2u, 16u));
  cmd->add_option("--time-budget", *budget, "Start no trial after this long (90s, 15m, 2h)");
  cmd->add_option("--model", options->base.model, "neumf, gmf, mlp or sasrec")->capture_default_str();
  cmd->add_option("--layers", options->base.layers, "MLP widths")->delimiter(',')->capture_default_str();
  cmd->add_option("--batch-size", options->base.batch_size, "Samples per step (sasrec: sequences, 128 unless set)")
      ->capture_default_str();
  cmd->add_option("--heads", options->base.heads, "sasrec: attention heads (they divide 32)")->capture_default_str();
  cmd->add_option("--max-sequence", options->base.max_sequence, "sasrec: the user's latest items the model reads")
      ->capture_default_str();
  cmd->add_option("--eval", options->base.eval, "loo, holdout or personalize: the validation split's protocol")
      ->capture_default_str();
  cmd->add_option("--validation-users", options->base.validation_users, "Users of the validation split")
      ->capture_default_str()->check(CLI::Range(1u, 100000000u));
  cmd->add_option("--device", options->base.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--threads", options->base.threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--seed", options->seed, "Which configurations are drawn")->capture_default_str();
  cmd->callback([cmd, options, budget] {
    if (!budget->empty()) options->time_budget_seconds = parse_duration(*budget);
    // A model's own defaults (sasrec: 128 sequences a step) where the command line is silent; the
    // trials set what they search.
    apply_model_defaults(options->base, given_on(cmd));
    run_tune(*options, std::cout);
  });
}

}  // namespace tastebud::host
