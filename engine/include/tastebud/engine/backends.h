// Choosing a backend: the CPU everywhere, CUDA where it was built and a device answers.
#pragma once

#include <memory>
#include <string>

#include "tastebud/engine/trainer.h"

namespace tastebud {

// True when a CUDA device can train; otherwise `reason` says why not (not built, no driver, no
// device).
bool cuda_available(std::string* reason);

// What a step's parts cost on a backend, as measured (bench/RESULTS.md, "What `--embedding-updates
// auto` weighs"): a batch row through the lazy step, and an id-table float (value and optimizer
// state) that dense embedding updates walk with a zero gradient. `auto` weighs one by the other.
struct StepCosts {
  double batch_row_ns = 0;
  double table_float_ns = 0;
};
StepCosts measured_step_costs(bool gpu);
// The share of a lazy step's time that walking `table_floats` id-table floats would add, at
// `batch_rows` rows a step: what `auto` compares with a quarter.
double dense_walk_share(double table_floats, double batch_rows, const StepCosts& costs);

// device: "auto" (CUDA when available, else the CPU with a one-line notice in *notice), "cpu" or
// "cuda" (an error saying why when no device can be used).
std::unique_ptr<Backend> make_backend(const std::string& device, const TrainingSet& data,
                                      const TrainOptions& options, TrainState state,
                                      std::string* notice);

}  // namespace tastebud
