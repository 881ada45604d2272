#include "tastebud/engine/backends.h"

#include <fmt/format.h>

#include "tastebud/engine/comm.h"
#include "tastebud/error.h"

namespace tastebud {

#ifdef TASTEBUD_WITH_CUDA
// kernels/cuda: the CUDA backend and its device probe.
bool cuda_probe(std::string* reason);
// dense_comm: several ranks, what sums the dense gradients (null: one process).
std::unique_ptr<Backend> make_cuda_backend(const TrainingSet& data, const TrainOptions& options,
                                           TrainState state, std::unique_ptr<DeviceCommunicator> dense_comm);
#endif

namespace {

// Several ranks on the CUDA backend: what sums the dense gradients is chosen once
// (make_device_communicator) and named in the notice.
std::unique_ptr<Backend> make_cuda_ranks(const TrainingSet& data, const TrainOptions& options, TrainState state,
                                         std::string* notice) {
  std::string reason;
  if (!cuda_available(&reason)) throw Error("`device=cuda`: " + reason);
#ifdef TASTEBUD_WITH_CUDA
  std::string which;
  auto dense_comm = make_device_communicator(*options.comm, &which);
  if (notice) {
    *notice = fmt::format("{} ranks: training on the CUDA backend; dense gradients summed by {}; id tables sharded "
                          "{}",
                          options.comm->size(), which,
                          options.rank_exchange == RankExchange::kDevice ? "on the GPUs (`rank_exchange` device)"
                                                                         : "on the hosts");
  }
  return make_cuda_backend(data, options, std::move(state), std::move(dense_comm));
#else
  (void)data;
  (void)notice;
  throw Error("`device=cuda`: " + reason);
#endif
}

// What the CUDA backend trains but no device has run yet: its parity tests (update mode:
// Backends.UpdateModeLeavesFrozenRowsAsTheyWere; MF with metadata: MetadataTrainingTracksTheCpu)
// wait for one. `auto` keeps it on the measured CPU path, `device=cuda` takes it. Null: nothing such.
const char* unmeasured_on_the_gpu(const TrainOptions& options, const ModelConfig& config) {
  if (options.masked()) return "update mode";
  if (config.kind == ModelKind::kMF && config.has_metadata()) return "`model=mf` with metadata";
  return nullptr;
}

}  // namespace

// CPU: ml-latest-small, NeuMF 8 / 64,32,16,8, batch 256, 2 threads: lazy 2.11 s and dense 5.81 s
// an epoch of 1,946 steps, 414,080 id-table floats. GPU: the H200's ncu profile (2026-12-04),
// NeuMF 64 / 256,256,128,64, TF32, batch 65,536: 1.54 ms a step, of which 0.26 ms walked the
// 31.7M id-table floats.
StepCosts measured_step_costs(bool gpu) {
  return gpu ? StepCosts{1.28e6 / 65536, 0.26e6 / 31.7e6} : StepCosts{2.11e9 / 1946 / 256, 3.70e9 / 1946 / 414080};
}

double dense_walk_share(double table_floats, double batch_rows, const StepCosts& costs) {
  const double step_ns = batch_rows * costs.batch_row_ns;
  return step_ns > 0 ? table_floats * costs.table_float_ns / step_ns : 0.0;
}

bool cuda_available(std::string* reason) {
#ifdef TASTEBUD_WITH_CUDA
  return cuda_probe(reason);
#else
  if (reason) *reason = "this build has no GPU support";
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& device, const TrainingSet& data,
                                      const TrainOptions& options, TrainState state,
                                      std::string* notice) {
  if (device != "auto" && device != "cpu" && device != "cuda") {
    throw Error(fmt::format("unknown `device` '{}': expected auto, cpu or cuda", device));
  }
  std::string reason;
  const bool ranks = options.comm != nullptr && options.comm->size() > 1;
  if (options.masked() && ranks)
    throw Error("update mode (frozen rows and dense layers) trains in one process only; run it without mpirun");
  if (ranks && device == "cuda") return make_cuda_ranks(data, options, std::move(state), notice);
  if (ranks) {
    // auto stays on the CPU: the CUDA rank step is host-staged and has not run on GPUs yet.
    if (device == "auto" && notice) {
      *notice = fmt::format("{} ranks: training on the CPU backend (`device=cuda` trains on the GPUs)", options.comm->size());
    }
    return make_cpu_backend(data, options, std::move(state));
  }
  if (const char* what = unmeasured_on_the_gpu(options, state.params.config); what && device == "auto") {
    if (notice) *notice = fmt::format("{}: training on the CPU backend (`device=cuda` trains it on the GPU)", what);
    return make_cpu_backend(data, options, std::move(state));
  }
  const bool gpu = device != "cpu" && cuda_available(&reason);
  if (device == "cuda" && !gpu) throw Error("`device=cuda`: " + reason);
#ifdef TASTEBUD_WITH_CUDA
  if (gpu) {
    if (notice) *notice = "using the CUDA backend";
    return make_cuda_backend(data, options, std::move(state), nullptr);
  }
#endif
  if (device == "auto" && notice) *notice = reason + ", so training on the CPU";
  return make_cpu_backend(data, options, std::move(state));
}

}  // namespace tastebud
