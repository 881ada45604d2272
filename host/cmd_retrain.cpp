#include <fmt/format.h>

#include <iostream>
#include <optional>

#include "host/commands.h"
#include "host/retrain.h"
#include "host/scrub_model.h"
#include "tastebud/datasets/delete_users.h"

namespace tastebud::host {
namespace {

// The training settings a retrain passes to its candidate; those not given come from the current
// model (RetrainJob::given).
void add_training_options(CLI::App* cmd, TrainJob& t) {
  cmd->add_option("--model", t.model, "neumf, gmf, mlp, mf or sasrec (default: the current model's)");
  cmd->add_option("--factors", t.factors, "GMF factors (default: the current model's)");
  cmd->add_option("--layers", t.layers, "MLP widths (default: the current model's)")
      ->delimiter(',');
  cmd->add_option("--epochs", t.epochs, "Epochs of a candidate trained from scratch")
      ->capture_default_str();
  cmd->add_option("--batch-size", t.batch_size, "Samples per step");
  cmd->add_option("--negatives", t.negatives, "Sampled negatives per positive");
  cmd->add_option("--lr", t.lr, "Learning rate");
  cmd->add_option("--optimizer", t.optimizer, "adam, adagrad or sgd");
  cmd->add_option("--l2", t.l2, "L2 on the embedding rows");
  cmd->add_option("--loss", t.loss, "bce or bpr");
  cmd->add_option("--eval", t.eval,
                  "loo, holdout or personalize: the split both models are judged on");
  cmd->add_option("--validation-users", t.validation_users,
                  "Users of the candidate's validation split")
      ->capture_default_str();
  cmd->add_option("--event", t.events, "TYPE[:THRESHOLD[:WEIGHT]] (default: the current model's)");
  cmd->add_option("--metadata", t.metadata,
                  "none, items, users or both (default: the current model's)");
  cmd->add_option("--device", t.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--threads", t.threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--seed", t.seed, "Seed of every random draw")->capture_default_str();
  cmd->add_flag(
      "--update", t.update,
      "Refresh only the new and changed users' and items' rows (train --update); the first run "
      "trains from scratch");
}

void add_retrain_command(CLI::App& app) {
  auto job = std::make_shared<RetrainJob>();
  job->train.progress = false;
  auto* cmd = app.add_subcommand("retrain",
                                 "Import new data, train a candidate from the current model, "
                                 "promote it if it is not worse");
  cmd->add_option("--data", job->data,
                  "Dataset directory (a full import of the files when it does not exist)")
      ->required();
  cmd->add_option("--models", job->models, "Directory of versions/, current and retrain.jsonl")
      ->required();
  cmd->add_option("--interactions", job->interactions,
                  "New interactions CSV, imported incrementally; repeatable")
      ->check(CLI::ExistingFile);
  cmd->add_option("--events", job->events,
                  "A `tastebud serve` event log directory: its events no retrain took yet, imported and marked taken")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--users", job->users, "New or changed Users rows")->check(CLI::ExistingFile);
  cmd->add_option("--items", job->items, "New or changed Items rows")->check(CLI::ExistingFile);
  cmd->add_option("--warm-epochs", job->warm_epochs,
                  "Epochs of a warm-started candidate (0: --epochs)")
      ->capture_default_str();
  cmd->add_option(
         "--max-regression", job->max_regression,
         "Promote unless the candidate's metric is below the current model's by more than this")
      ->capture_default_str();
  cmd->add_option("--keep", job->keep, "Versions kept (the current one always)")
      ->capture_default_str();
  cmd->add_option("--metric", job->metric,
                  "Metric that decides (default hr@10 for loo, ndcg@10 for holdout)");
  add_training_options(cmd, job->train);
  cmd->callback([job, cmd] {
    // Settings retrain has no flag for (text-buckets, context) are never given: the current
    // model's.
    job->given = given_on(cmd);
    apply_model_defaults(job->train, job->given);
    const RetrainResult result = run_retrain(*job, std::cout);
    std::cout << fmt::format("{}: {}\n", result.decision, result.candidate.string());
  });
}

void add_delete_users_command(CLI::App& app) {
  struct Options {
    std::filesystem::path data, users, model;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "delete-users", "Remove users' interactions, rows and ids from a dataset (and a model)");
  cmd->add_option("--data", o->data, "Dataset directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--users", o->users, "CSV with a USER_ID column: the users to delete")
      ->required();
  cmd->add_option("--model", o->model,
                  "Also scrub them from this model directory (a retrain directory, its `current` "
                  "link or a version: every version)")
      ->check(CLI::ExistingDirectory);
  cmd->callback([o] {
    const std::vector<std::string> ids = datasets::read_user_id_list(o->users);
    // The models are checked and locked before the dataset is touched: a deletion that cannot
    // reach them changes nothing.
    std::optional<ModelsToScrub> models;
    if (!o->model.empty()) models.emplace(o->model);
    const datasets::DeleteUsersReport report = datasets::delete_users(o->data, ids);
    std::cout << fmt::format(
        "{}: deleted {} of {} users ({} interactions); {} users and {} interactions left\n",
        o->data.string(), report.users_deleted, report.requested, report.interactions_deleted,
        report.users_left, report.interactions_left);
    if (!models) return;
    for (const ScrubReport& scrubbed : models->scrub(ids)) {
      std::cout << fmt::format("{}: removed {} users; {} left\n", scrubbed.dir.string(),
                               scrubbed.users_removed, scrubbed.users_left);
    }
  });
}

}  // namespace

void add_retrain_commands(CLI::App& app) {
  add_retrain_command(app);
  add_delete_users_command(app);
}

}  // namespace tastebud::host
