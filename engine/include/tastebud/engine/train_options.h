// Training settings checked before a job starts, in the library's own words (parameters, not
// flags): bounds that keep sample counts from wrapping and thread counts within reason, finite
// optimizer settings, and an estimate of the memory a job needs, refused with the figure and what
// to lower when the machine does not have it.
#pragma once

#include <cstdint>

#include "tastebud/engine/trainer.h"

namespace tastebud {

inline constexpr uint32_t kMaxThreads = 1024;
inline constexpr uint32_t kMaxNegatives = 1000;
inline constexpr uint32_t kMaxBatchSize = 1u << 24;

// Throws tastebud::Error naming the parameter and its allowed range.
void validate_train_options(const TrainOptions& options);

// Floats of the model's tables (ids, features, context) and dense weights: at most what a model
// file holds (biases left out), so that a header asking for more is known to be damaged.
double parameter_floats(const ModelConfig& config);

// Bytes a training job holds at its peak, roughly: parameters and optimizer state, the training
// set, one batch's activations and gradients (per chunk of the CPU backend), and a checkpoint's
// encoding.
uint64_t estimate_training_bytes(const ModelConfig& config, uint64_t positives, const TrainOptions& options);

// Throws tastebud::Error when `needed` exceeds `available`, with both figures and what to lower.
void check_training_memory(uint64_t needed, uint64_t available, const ModelConfig& config,
                           const TrainOptions& options);

// Physical memory of this machine (0 when unknown: the check is skipped).
uint64_t physical_memory_bytes();

}  // namespace tastebud
