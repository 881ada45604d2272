// One training step replayed from a CUDA graph: its launches captured once and replayed batch
// after batch, so the host enqueues one graph a step instead of some fifty kernels. What changes
// from one batch to the next (StepScalars) is written on the device by the graph's first node,
// whose argument is the only thing set before each replay; the step's kernels read it there
// instead of taking it as an argument.
#pragma once

#include <cstdint>
#include <string>

#include "cuda/common.h"

namespace tastebud::cuda {

// The per-batch scalars of a replayed step (null where a kernel takes them as arguments instead).
struct StepScalars {
  uint64_t first = 0;      // the batch's first sample of the epoch
  uint32_t epoch = 0;
  uint32_t stamp = 0;      // the optimizer step (dense embedding updates' stamp)
  float step_size = 0.0f;  // Adam's bias-corrected step size, or the learning rate
  float eps = 0.0f;        // the step's epsilon (step_params)
};

class StepGraph {
 public:
  StepGraph() = default;
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;
  ~StepGraph();

  // Starts capturing stream's work (this thread's launches only); the first captured launch
  // writes `scalars` to d_scalars.
  void begin(StreamHandle stream, StepScalars* d_scalars, const StepScalars& scalars);
  // Ends the capture and instantiates the graph. False, with the reason, when the capture failed
  // (a launch that cannot be captured, or an error): nothing is kept and the captured work did not
  // run, so the caller runs the step without the graph.
  bool end(StreamHandle stream, std::string* reason);
  // Abandons a capture after an exception, leaving the stream usable; the work did not run.
  void abandon(StreamHandle stream);
  bool ready() const { return exec_ != nullptr; }
  // Replays the captured step on stream with these scalars.
  void launch(const StepScalars& scalars, StreamHandle stream);
  void reset();

 private:
  void* graph_ = nullptr;     // cudaGraph_t
  void* exec_ = nullptr;      // cudaGraphExec_t
  void* head_ = nullptr;      // cudaGraphNode_t: the node that writes the scalars
  StepScalars* d_scalars_ = nullptr;
};

}  // namespace tastebud::cuda
