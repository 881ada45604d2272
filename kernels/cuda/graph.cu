#include <cuda_runtime.h>

#include <string>

#include "cuda/common.cuh"
#include "cuda/graph.h"

namespace tastebud::cuda {
namespace {

__global__ void set_step_kernel(StepScalars* out, StepScalars scalars) { *out = scalars; }

cudaGraph_t graph_of(void* p) { return static_cast<cudaGraph_t>(p); }
cudaGraphExec_t exec_of(void* p) { return static_cast<cudaGraphExec_t>(p); }

}  // namespace

StepGraph::~StepGraph() { reset(); }

void StepGraph::reset() {
  if (exec_ != nullptr) cudaGraphExecDestroy(exec_of(exec_));
  if (graph_ != nullptr) cudaGraphDestroy(graph_of(graph_));
  exec_ = graph_ = head_ = nullptr;
}

void StepGraph::begin(StreamHandle stream, StepScalars* d_scalars, const StepScalars& scalars) {
  reset();
  d_scalars_ = d_scalars;
  TB_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  set_step_kernel<<<1, 1, 0, stream>>>(d_scalars, scalars);
  TB_CUDA_CHECK(cudaGetLastError());
}

void StepGraph::abandon(StreamHandle stream) {
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream, &graph);
  if (graph != nullptr) cudaGraphDestroy(graph);
  cudaGetLastError();  // the capture's error is the caller's exception; the stream goes on
  reset();
}

bool StepGraph::end(StreamHandle stream, std::string* reason) {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (ended != cudaSuccess || graph == nullptr) {
    cudaGetLastError();
    if (reason) *reason = std::string("the step could not be captured: ") + cudaGetErrorString(ended);
    if (graph != nullptr) cudaGraphDestroy(graph);
    return false;
  }
  graph_ = graph;
  // The scalars' node is the graph's one root: every other launch followed it on the stream.
  size_t roots = 0;
  TB_CUDA_CHECK(cudaGraphGetRootNodes(graph, nullptr, &roots));
  cudaGraphNode_t root = nullptr;
  cudaGraphNodeType type = cudaGraphNodeTypeEmpty;
  if (roots == 1) {
    TB_CUDA_CHECK(cudaGraphGetRootNodes(graph, &root, &roots));
    TB_CUDA_CHECK(cudaGraphNodeGetType(root, &type));
  }
  if (roots != 1 || type != cudaGraphNodeTypeKernel) {
    if (reason) *reason = "the captured step has " + std::to_string(roots) + " roots, not its scalars' kernel alone";
    reset();
    return false;
  }
  head_ = root;
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  if (made != cudaSuccess) {
    cudaGetLastError();
    if (reason) *reason = std::string("the captured step could not be instantiated: ") + cudaGetErrorString(made);
    reset();
    return false;
  }
  exec_ = exec;
  return true;
}

void StepGraph::launch(const StepScalars& scalars, StreamHandle stream) {
  TB_CHECK(ready(), "StepGraph::launch: nothing captured");
  StepScalars value = scalars;
  StepScalars* out = d_scalars_;
  void* args[] = {&out, &value};
  cudaKernelNodeParams params{};
  params.func = reinterpret_cast<void*>(&set_step_kernel);
  params.gridDim = dim3(1);
  params.blockDim = dim3(1);
  params.sharedMemBytes = 0;
  params.kernelParams = args;
  params.extra = nullptr;
  // Takes effect from the next launch; launches already enqueued keep their scalars.
  TB_CUDA_CHECK(cudaGraphExecKernelNodeSetParams(exec_of(exec_), static_cast<cudaGraphNode_t>(head_), &params));
  TB_CUDA_CHECK(cudaGraphLaunch(exec_of(exec_), stream));
}

}  // namespace tastebud::cuda
