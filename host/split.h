// Splits a dataset into the positives a model trains on and the interactions it is judged on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/trainer.h"

namespace tastebud::host {

// cold-items: a random share of the items loses every training interaction; each user's latest
// interaction with one of them is ranked against loo_negatives other cold items (HR/NDCG@10, as loo).
// personalize: the managed service's offline split exactly: a random 10% of the users
// (eval_user_share) hold out the newest 10% of their interactions (holdout_share), everyone else
// trains on all of theirs; judged like holdout.
enum class EvalProtocol { kNone, kLeaveOneOut, kHoldout, kColdItems, kPersonalize };
EvalProtocol parse_eval_protocol(const std::string& name);  // none | loo | holdout | cold-items | personalize
std::string to_string(EvalProtocol protocol);
// holdout and personalize: each eval user's newest interactions are the truth, ranked over the catalog.
inline bool holds_out_newest(EvalProtocol p) { return p == EvalProtocol::kHoldout || p == EvalProtocol::kPersonalize; }

// Which events train the model and how much each counts: only listed types with EVENT_VALUE at or
// above the threshold (when one is set) are used, each weighted by its weight.
struct EventRule {
  std::string event_type;
  std::optional<float> value_threshold;
  float weight = 1.0f;
};
EventRule parse_event_rule(const std::string& text);  // TYPE[:THRESHOLD[:WEIGHT]]

// The index of the dataset's event type `name`: the type spelled exactly so, else the one type
// that matches it ignoring case (the service's View, Purchase, Watch, Click against an export's
// view, purchase, ...). Throws an Error naming the dataset's types when none (or several) match.
uint32_t find_event_type(const datasets::Dataset& dataset, std::string_view name);
// a == b ignoring ASCII case.
bool same_ignoring_case(std::string_view a, std::string_view b);

// Event rules resolved against a dataset's event types; without rules every event counts once.
class EventWeights {
 public:
  // Throws tastebud::Error naming the dataset's types when a rule names an unknown one. Rows marked
  // in `excluded` (may be null) count as absent: another split's held-out rows.
  EventWeights(const datasets::Dataset& dataset, const std::vector<EventRule>& rules,
               const std::vector<uint8_t>* excluded = nullptr);
  // The weight of interaction row r, 0 when it does not count.
  float weight(const datasets::Interactions& rows, uint64_t r) const;
  bool excluded(uint64_t r) const { return excluded_ != nullptr && (*excluded_)[r] != 0; }

 private:
  std::vector<float> weight_, threshold_;  // per event type; NaN threshold: none
  const std::vector<uint8_t>* excluded_ = nullptr;
};

struct SplitOptions {
  std::vector<EventRule> events;  // empty: every event, weight 1
  // Build each user's impressions not acted on (TrainingSet::impression_items) from the
  // IMPRESSION lists of the user's training rows.
  bool impressions = false;
  // Record the interaction row of each positive (Split::positive_row), for contextual fields.
  bool positive_rows = false;
  EvalProtocol protocol = EvalProtocol::kLeaveOneOut;
  double holdout_share = 0.1;   // holdout: newest share of each user's interactions
  uint32_t loo_negatives = 99;  // loo: items ranked against the held-out one
  uint32_t max_eval_users = 0;  // 0: every eligible user
  double eval_user_share = 0.1;  // personalize: the share of users evaluated (a Philox coin each)
  uint64_t eval_seed = 2017;    // fixed, so runs with different training seeds share candidates
  double cold_item_share = 0.2;  // cold-items: share of the interacted items made cold
  // Rows that do not exist for this split (a validation split leaves out the test split's
  // held-out rows); null: none. And which Philox counter picks the evaluated users, so that a
  // validation split picks other users than the test split.
  const std::vector<uint8_t>* excluded_rows = nullptr;
  uint32_t user_choice = 0;
  bool record_held_out_rows = false;  // fill Split::held_out_rows
};

struct Split {
  TrainingSet train;
  // The interaction row each positive of train takes its weight from (the strongest event, the
  // latest among equals): its context is the positive's context. Empty unless
  // SplitOptions::positive_rows.
  std::vector<uint64_t> positive_row;
  EvalProtocol protocol = EvalProtocol::kNone;
  std::vector<uint32_t> eval_users;
  // The interaction whose context an eval user is ranked in: the held-out one (loo, cold-items),
  // or the first held-out one (holdout).
  std::vector<uint64_t> eval_row;
  // loo and cold-items: the held-out item and its candidates, eval_users.size() x loo_negatives.
  std::vector<uint32_t> held_out_item;
  uint32_t negatives_per_user = 0;
  std::vector<uint32_t> candidates;
  // holdout: ground truth items of eval user k: truth[truth_offsets[k] .. truth_offsets[k + 1]).
  std::vector<uint64_t> truth_offsets;
  std::vector<uint32_t> truth;
  // cold-items: the items made cold, ascending.
  std::vector<uint32_t> cold_items;
  // 1 for every interaction row held out of training for evaluation (SplitOptions::record_held_out_rows).
  std::vector<uint8_t> held_out_rows;
};

Split make_split(const datasets::Dataset& dataset, const SplitOptions& options);

// The validation split of a test split: the same protocol over the rows the test split trains
// on (its held-out rows do not exist), other users, at most `users` of them. A job trains on the
// validation split's training set and chooses its epoch on the validation metrics, so that the
// test rows judge the chosen model and nothing else. `test` needs its held_out_rows.
Split make_validation_split(const datasets::Dataset& dataset, const SplitOptions& options, const Split& test,
                            uint32_t users);

}  // namespace tastebud::host
