// Splits a dataset into the positives a model trains on and the interactions it is judged on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/trainer.h"

namespace tastebud::host {

enum class EvalProtocol { kNone, kLeaveOneOut, kHoldout };
EvalProtocol parse_eval_protocol(const std::string& name);  // none | loo | holdout
std::string to_string(EvalProtocol protocol);

struct SplitOptions {
  EvalProtocol protocol = EvalProtocol::kLeaveOneOut;
  double holdout_share = 0.1;   // holdout: newest share of each user's interactions
  uint32_t loo_negatives = 99;  // loo: items ranked against the held-out one
  uint32_t max_eval_users = 0;  // 0: every eligible user
  uint64_t eval_seed = 2017;    // fixed, so runs with different training seeds share candidates
};

struct Split {
  TrainingSet train;
  EvalProtocol protocol = EvalProtocol::kNone;
  std::vector<uint32_t> eval_users;
  // loo: the held-out item and its candidates, eval_users.size() x loo_negatives.
  std::vector<uint32_t> held_out_item;
  uint32_t negatives_per_user = 0;
  std::vector<uint32_t> candidates;
  // holdout: ground truth items of eval user k: truth[truth_offsets[k] .. truth_offsets[k + 1]).
  std::vector<uint64_t> truth_offsets;
  std::vector<uint32_t> truth;
};

Split make_split(const datasets::Dataset& dataset, const SplitOptions& options);

}  // namespace tastebud::host
