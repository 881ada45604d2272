// Choosing a backend: the CPU everywhere, CUDA where it was built and a device answers.
#pragma once

#include <memory>
#include <string>

#include "tastebud/engine/trainer.h"

namespace tastebud {

// True when a CUDA device can train; otherwise `reason` says why not (not built, no driver, no
// device).
bool cuda_available(std::string* reason);

// device: "auto" (CUDA when available, else the CPU with a one-line notice in *notice), "cpu" or
// "cuda" (an error saying why when no device can be used).
std::unique_ptr<Backend> make_backend(const std::string& device, const TrainingSet& data,
                                      const TrainOptions& options, TrainState state,
                                      std::string* notice);

}  // namespace tastebud
