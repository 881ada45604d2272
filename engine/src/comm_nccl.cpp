// The NCCL communicator for device buffers (CUDA + MPI builds with NCCL), bootstrapped over the
// host Communicator: rank 0 makes the ncclUniqueId and broadcasts it.
#include <cuda_runtime.h>
#include <nccl.h>

#include <fmt/format.h>

#include "tastebud/engine/comm.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

void nccl_check(ncclResult_t code, const char* what) {
  if (code != ncclSuccess) throw Error(fmt::format("{} failed: {}", what, ncclGetErrorString(code)));
}

void cuda_check(cudaError_t code, const char* what) {
  if (code != cudaSuccess) throw Error(fmt::format("{} failed: {}", what, cudaGetErrorString(code)));
}

class NcclCommunicator final : public DeviceCommunicator {
 public:
  NcclCommunicator(Communicator& host, int device) : rank_(host.rank()), size_(host.size()) {
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    ncclUniqueId id{};
    if (host.root()) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host.broadcast({reinterpret_cast<std::byte*>(&id), sizeof(id)}, 0);
    nccl_check(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
  }
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(float* data, size_t count, void* stream) override {
    nccl_check(ncclAllReduce(data, data, count, ncclFloat, ncclSum, comm_, static_cast<cudaStream_t>(stream)),
               "ncclAllReduce");
  }

  void allgather_in_place(void* data, size_t bytes_per_rank, void* stream) override {
    auto* base = static_cast<char*>(data);
    nccl_check(ncclAllGather(base + rank_ * bytes_per_rank, base, bytes_per_rank, ncclChar, comm_,
                             static_cast<cudaStream_t>(stream)),
               "ncclAllGather");
  }

  // One NCCL group of a send and a receive per peer; this rank's own block is a device copy.
  void alltoallv(const void* send, std::span<const size_t> send_counts, void* recv,
                 std::span<const size_t> recv_counts, void* stream) override {
    const auto s = static_cast<cudaStream_t>(stream);
    const auto* from = static_cast<const char*>(send);
    auto* to = static_cast<char*>(recv);
    size_t sent = 0, received = 0;
    nccl_check(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) {
        cuda_check(cudaMemcpyAsync(to + received, from + sent, send_counts[r], cudaMemcpyDeviceToDevice, s),
                   "cudaMemcpyAsync");
      } else {
        if (send_counts[r] > 0) nccl_check(ncclSend(from + sent, send_counts[r], ncclChar, r, comm_, s), "ncclSend");
        if (recv_counts[r] > 0) nccl_check(ncclRecv(to + received, recv_counts[r], ncclChar, r, comm_, s), "ncclRecv");
      }
      sent += send_counts[r];
      received += recv_counts[r];
    }
    nccl_check(ncclGroupEnd(), "ncclGroupEnd");
  }

 private:
  int rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

bool nccl_built() { return true; }

std::unique_ptr<DeviceCommunicator> make_nccl_communicator(Communicator& host, int device) {
  return std::make_unique<NcclCommunicator>(host, device);
}

bool nccl_allreduce_on_devices(Communicator& host, std::span<float> values, std::string* reason) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    if (reason) *reason = "no CUDA device";
    return false;
  }
  // Every rank must agree to go on, or none may enter NCCL's collective initialisation.
  double enough = devices >= host.size() ? 1.0 : 0.0;
  host.allreduce_sum(std::span<double>(&enough, 1));
  if (enough < host.size()) {
    if (reason) *reason = fmt::format("{} ranks but {} GPU(s) on a node", host.size(), devices);
    return false;
  }
  const int device = host.rank() % devices;
  auto comm = make_nccl_communicator(host, device);
  float* data = nullptr;
  cuda_check(cudaMalloc(&data, values.size_bytes()), "cudaMalloc");
  try {
    cuda_check(cudaMemcpy(data, values.data(), values.size_bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
    comm->allreduce_sum(data, values.size(), nullptr);
    cuda_check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize");
    cuda_check(cudaMemcpy(values.data(), data, values.size_bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  } catch (...) {
    cudaFree(data);
    throw;
  }
  cudaFree(data);
  return true;
}

}  // namespace tastebud
