// Hyperparameter search by successive halving over epochs, judged on the validation split carved
// from the training rows only: learning rate, factors, negatives and L2 for the NeuMF family;
// learning rate, width, blocks, dropout and negatives for the sequence model (sasrec). The test rows are
// held out of every trial and never evaluated, so the search cannot overfit them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include "host/training.h"

namespace tastebud::host {

struct TuneOptions {
  TrainJob base;                 // data, model, eval protocol, batch size... every trial starts from it
  std::filesystem::path out;     // trials/, trials.tsv, best.toml
  uint32_t trials = 9;
  uint32_t max_epochs = 9;       // the last rung's epochs
  uint32_t reduction = 3;        // each rung keeps the best 1 / reduction of the trials
  double time_budget_seconds = 0;  // 0: none; else no new training starts once it is spent
  uint64_t seed = 1;             // which configurations are drawn
};

struct Trial {
  uint32_t id = 0;
  float lr = 0, l2 = 0;
  uint32_t factors = 0, negatives = 0;
  bool sequence = false;                   // a sasrec trial: the next three instead of factors and l2
  uint32_t hidden = 0, blocks = 0;
  float dropout = 0;
  uint32_t epochs = 0;           // trained so far
  uint32_t best_epoch = 0;
  double value = -1;             // the best validation metric so far
  bool stopped = false;          // dropped at a rung
};

struct TuneResult {
  std::vector<Trial> trials;
  size_t best = 0;               // index into trials
  std::string metric;            // the validation metric compared ("val.hr@10")
};

// The configuration trial `id` of a search seeded `seed` draws (log-uniform lr in [1e-4, 1e-2],
// factors 8..64, negatives 1..8, l2 0 or log-uniform in [1e-5, 1e-2]).
Trial draw_trial(uint64_t seed, uint32_t id);
// The same for sasrec: log-uniform lr in [1e-3, 1e-2], hidden 32, 64 or 128, 1 to 3 blocks, dropout
// 0.1 to 0.5, negatives 1, 2 or 4 (beside the default of 0.005, 64, 2, 0.2 and 1).
Trial draw_sequence_trial(uint64_t seed, uint32_t id);

TuneResult run_tune(const TuneOptions& options, std::ostream& log);

// The best trial as a job file `tastebud train --config` reads.
std::string best_job_toml(const TuneOptions& options, const TuneResult& result);

}  // namespace tastebud::host
