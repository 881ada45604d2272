// `tastebud retrain`: the scheduled job. New export files are imported incrementally into the
// dataset, a candidate is trained from DIR/current (a warm start; from scratch the first time),
// the candidate and the current model are evaluated on the same held-out split of the updated
// dataset, and the candidate is promoted only when it is not worse than the current model beyond
// max_regression on the chosen metric. Models live in DIR/versions/NNNNNN (a candidate trains
// under a hidden temporary name and is renamed when promoted); DIR/current is a
// symlink switched by rename(2); the newest `keep` versions stay; DIR/retrain.jsonl gets one line
// per run. A failure at any step leaves `current` as it was.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/evaluation.h"
#include "host/training.h"

namespace tastebud::host {

struct RetrainJob {
  std::filesystem::path data;    // the dataset; created by a full import of the files when absent
  std::filesystem::path models;  // DIR: current, versions/, retrain.jsonl
  std::vector<std::filesystem::path> interactions;  // imported one after the other
  std::filesystem::path users, items;               // empty: none
  // A `tastebud serve` event log directory: the events it holds that no retrain took yet are
  // imported after `interactions`, and marked taken once the import is in (host/event_log.h).
  std::filesystem::path events;
  // The candidate's training settings (data, out, warm_start are set by the job). Settings the
  // caller did not give (`given` false) are taken from the current model's config.json, so a
  // warm start keeps its shape.
  TrainJob train;
  std::function<bool(const std::string&)> given;  // empty: every setting given
  uint32_t warm_epochs = 0;      // epochs of a warm-started candidate; 0: train.epochs
  double max_regression = 0.01;  // promoted when candidate >= current - max_regression
  uint32_t keep = 3;             // versions kept (the current one always)
  std::string metric;            // empty: hr@10 (loo), ndcg@10 (holdout, personalize)
  // Called before each step ("import", "train", "evaluate", "promote"); tests throw from it to
  // see that a failure leaves `current` as it was.
  std::function<void(const std::string& step)> before_step;
};

struct RetrainResult {
  std::string decision;  // promoted | refused | unchanged (an update with nothing changed)
  std::filesystem::path candidate;  // unchanged: the current model's version
  std::string metric;
  Metrics candidate_metrics, current_metrics;  // current_metrics empty on a first run
};

RetrainResult run_retrain(const RetrainJob& job, std::ostream& log);

// The metrics of a model directory on `split` of `dataset`, its rows matched to the dataset's ids
// by external id (ids it never saw get zero id rows: a new user is scored by the dense layers and
// metadata alone).
Metrics evaluate_model_dir(const std::filesystem::path& model_dir, const datasets::Dataset& dataset,
                           const Split& split, uint32_t threads);

}  // namespace tastebud::host
