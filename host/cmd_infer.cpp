#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "host/commands.h"
#include "host/inference.h"
#include "host/job_config.h"
#include "host/progress.h"
#include "tastebud/engine/comm.h"

namespace tastebud::host {
namespace {

struct InferArgs {
  std::string model, input, output;
  InferenceOptions options;
  // The job configuration and the flags that override it.
  std::string job_config, ranking_influence, metadata_columns;
  std::optional<double> exploration_weight, exploration_age_cutoff, now;
};

// --job-config, then the flags over it; every mistake stops the job before it starts.
JobConfig job_config_of(const InferArgs& args) {
  JobConfig job = args.job_config.empty() ? JobConfig{} : read_job_config(args.job_config);
  if (args.exploration_weight) {
    TB_CHECK(*args.exploration_weight >= 0 && *args.exploration_weight <= 1,
             fmt::format("--exploration-weight must be from 0 to 1, not {}", *args.exploration_weight));
    job.exploration_weight = *args.exploration_weight;
  }
  if (args.exploration_age_cutoff) {
    TB_CHECK(*args.exploration_age_cutoff > 0,
             fmt::format("--exploration-item-age-cutoff must be more than 0 days, not {}", *args.exploration_age_cutoff));
    job.exploration_age_cutoff = *args.exploration_age_cutoff;
  }
  if (!args.ranking_influence.empty()) parse_ranking_influence(args.ranking_influence, job);
  if (!args.metadata_columns.empty()) job.metadata_columns = parse_metadata_columns(args.metadata_columns);
  return job;
}

struct SegmentArgs {
  std::string model, input, output, filter;
  uint32_t num_results = 100;
  bool keep_seen = false;
  uint32_t threads = 0;
};

// Rank 0 speaks for a job on several ranks; the others' log goes nowhere.
std::ostream& job_log() {
  static std::ostream quiet(nullptr);
  return world_communicator().root() ? std::cout : quiet;
}

}  // namespace

void add_infer_commands(CLI::App& app) {
  auto infer = std::make_shared<InferArgs>();
  auto* cmd = app.add_subcommand(
      "batch-infer",
      "Answer a JSON-lines file of queries ({\"userId\"}, {\"userId\", \"itemList\"}, {\"itemId\"}) "
      "with a trained model, in the managed service's batch layout");
  cmd->add_option("--model", infer->model, "Model directory written by `tastebud train`")->required();
  cmd->add_option("--input", infer->input, "Queries, one JSON object a line; or a folder of .json files")->required();
  cmd->add_option("--output", infer->output,
                  "Results, one JSON object a line in input order (written atomically); for a folder input, the folder of NAME.json.out files")
      ->required();
  cmd->add_option("--num-results", infer->options.num_results, "Items per query unless the line says numResults (1-500)")
      ->capture_default_str()->check(CLI::Range(1u, 500u));
  cmd->add_option("--filter", infer->options.filter,
                  "Filter expression, e.g. 'EXCLUDE ItemID WHERE Items.PRICE > 100 | INCLUDE ItemID WHERE Items.GENRES IN ($GENRE)'");
  cmd->add_option("--device", infer->options.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_flag("--keep-seen", infer->options.keep_seen, "Keep the items a user already interacted with");
  cmd->add_flag("--normalize-scores", infer->options.normalize_scores,
                "{\"userId\"} scores as the service gives them: each item's share of the allowed catalog's scores (they sum to 1)");
  cmd->add_option("--candidates", infer->options.candidates,
                  "Two-stage retrieval: this many candidates by the GMF dot product, reranked by the full model (0: exact)")
      ->capture_default_str();
  cmd->add_option("--threads", infer->options.threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--job-config", infer->job_config,
                  "The service's batch job configuration (JSON): itemExplorationConfig, rankingInfluence, promotions, metadataColumns");
  cmd->add_option("--exploration-weight", infer->exploration_weight,
                  "Share of each user's slots for new items, 0-1 (default: 0.3 with --job-config, else 0)");
  cmd->add_option("--exploration-item-age-cutoff", infer->exploration_age_cutoff, "Days: only items this young are explored (default 30)");
  cmd->add_option("--ranking-influence", infer->ranking_influence, "Blend into the ranking, e.g. POPULARITY=0.2,FRESHNESS=0.5");
  cmd->add_option("--metadata-columns", infer->metadata_columns, "Item fields returned with each item, e.g. Items.GENRES,Items.PRICE");
  cmd->add_option("--seed", infer->options.seed, "Where promoted and exploration items sit in a result")->capture_default_str();
  cmd->add_option("--now", infer->now, "NOW of filters and item ages, Unix seconds (default: the dataset's latest timestamp)");
  cmd->callback([infer] {
    infer->options.job = job_config_of(*infer);
    if (infer->now) infer->options.now = *infer->now;
    ProgressLine progress("lines", world_communicator().root());
    infer->options.on_progress = [&](uint64_t read, uint64_t total, uint64_t lines) {
      if (total > 0 && read >= total) return progress.clear();  // the summary line follows
      progress.update("batch-infer", total > 0 ? static_cast<double>(read) / total : -1.0, static_cast<double>(lines));
    };
    batch_infer(infer->model, infer->input, infer->output, infer->options, job_log());
  });

  auto segment = std::make_shared<SegmentArgs>();
  auto* seg = app.add_subcommand(
      "batch-segment",
      "For each {\"itemId\"} or {\"itemAttributes\": \"ITEMS.GENRES = \\\"Comedy\\\"\"} line, the users most "
      "likely to interact with it");
  seg->add_option("--model", segment->model, "Model directory (neumf, gmf, mlp or sims)")->required();
  seg->add_option("--input", segment->input, "Queries, one JSON object a line; or a folder of .json files")->required();
  seg->add_option("--filter", segment->filter,
                  "Users to keep, e.g. 'INCLUDE UserID WHERE Users.MEMBERSHIP IN (\"gold\") | EXCLUDE UserID WHERE Users.AGE < $MIN_AGE'");
  seg->add_option("--output", segment->output, "Segments, one JSON object a line in input order (written atomically)")->required();
  seg->add_option("--num-results", segment->num_results, "Users per query unless the line says numResults")
      ->capture_default_str()->check(CLI::PositiveNumber);
  seg->add_flag("--keep-seen", segment->keep_seen, "Keep users who already interacted with the item");
  seg->add_option("--threads", segment->threads, "CPU threads (0: all cores)")->capture_default_str();
  seg->callback([segment] {
    batch_segment(segment->model, segment->input, segment->output, segment->num_results, segment->keep_seen,
                  segment->threads, job_log(), segment->filter);
  });
}

}  // namespace tastebud::host
