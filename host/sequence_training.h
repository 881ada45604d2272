// Training the sequence model (`--model sasrec`, tastebud/engine/sequence_model.h): the job's
// events become each user's sequence in time order (host/recipes.h, user_sequences), the split's
// held-out rows left out; the trainer runs epoch after epoch, each judged like every other model
// (the input of an evaluated user is that user's events before the held-out ones), and the best
// epoch is kept. Its model directory holds config.json, user_ids.json, item_ids.json, seen.bin,
// recipe.bin (kind "sasrec": popularity for the fallback and every user's latest max_sequence
// items, the input of their answers) and sequence.bin (the parameters), beside metrics.jsonl.
#pragma once

#include <filesystem>
#include <iosfwd>

#include <optional>

#include "host/evaluation.h"
#include "host/recipes.h"
#include "host/split.h"
#include "host/train_plan.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/sequence_model.h"
#include "tastebud/engine/sequence_trainer.h"

namespace tastebud::host {

TrainResult train_sequence(const TrainPlan& plan, std::ostream& log);

// What the run trains on and is judged by: the test split, the validation split carved from it
// (which then trains), the users' sequences of the split that trains, and (with a validation
// split) the sequences the test split reads: every event before the test's held-out ones, the
// validation's held-out items included, as a served model reads all of a user's events.
struct SequenceInputs {
  std::optional<Split> test, validation;
  SequenceSet train;
  std::optional<SequenceSet> test_input;
  const SequenceSet& test_sequences() const { return test_input ? *test_input : train; }
};
SequenceInputs sequence_inputs(const TrainPlan& plan, const datasets::Dataset& dataset, const EventLog& events,
                               const RecipeOptions& options);

// The sasrec model in `dir` judged on `split` of `dataset` (which may be newer than the model, as in
// retrain): each evaluated user's input is every event of the plan's rules before the held-out
// ones; items the model never saw have zero rows, so they score only through the dense layers.
Metrics evaluate_sequence_dir(const std::filesystem::path& dir, const TrainPlan& plan, const datasets::Dataset& dataset,
                              const Split& split, uint32_t threads);

// sequence.bin: the model's shape as a JSON header, its parameters, the checksum trailer.
void write_sequence_params(const SequenceParams& params, const std::filesystem::path& path);
// Checks the checksum, the shape against num_items and the parameter count: damage is an Error
// "corrupt: FILE: ...".
SequenceParams read_sequence_params(const std::filesystem::path& path, uint32_t num_items);

}  // namespace tastebud::host
