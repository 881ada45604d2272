// The training job: dataset in, model directory out, with evaluation after every epoch, early
// stopping, checkpoints and resume.
#pragma once

#include <iosfwd>

#include "host/train_plan.h"

namespace tastebud::host {

// Runs the job (make_plan, then the run directory and the epoch loop, or a recipe); writes the
// model directory; prints the summary to `log`.
TrainResult run_training(const TrainJob& job, std::ostream& log);
// The same from a plan made earlier (retrain checks every setting before it imports).
TrainResult run_training(TrainPlan plan, std::ostream& log);

}  // namespace tastebud::host
