// Recipes besides NeuMF, trained by the same `tastebud train --model ...`: popularity, sims,
// trending. See issue 5.
#pragma once

#include <iosfwd>
#include <string>

#include "host/training.h"

namespace tastebud::host {

bool is_recipe(const std::string& model);
TrainResult train_recipe(const TrainJob& job, std::ostream& log);

}  // namespace tastebud::host
