// Device collectives for the CUDA backend on several ranks (CUDA builds): the host-staged
// communicator (device buffers summed through the host Communicator, for ranks that share a GPU,
// which NCCL refuses) and the one place that chooses between it and NCCL.
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "cuda/common.h"
#include "tastebud/engine/comm.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

class HostStagedCommunicator final : public DeviceCommunicator {
 public:
  explicit HostStagedCommunicator(Communicator& host) : host_(host) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }

  // Waits for the stream's work, sums on the host (rank 0 reduces and broadcasts, so every rank
  // gets the same bits) and copies back before returning.
  void allreduce_sum(float* data, size_t count, void* stream) override {
    staged_.resize(count);
    cuda::copy_to_host(staged_.data(), data, count * sizeof(float), static_cast<cuda::StreamHandle>(stream));
    host_.allreduce_sum(std::span<float>(staged_));
    cuda::copy_to_device(data, staged_.data(), count * sizeof(float), static_cast<cuda::StreamHandle>(stream));
  }

  void allgather_in_place(void* data, size_t bytes_per_rank, void* stream) override {
    std::vector<std::byte> all(bytes_per_rank * size());
    auto* base = static_cast<std::byte*>(data);
    const size_t mine = bytes_per_rank * rank();
    cuda::copy_to_host(all.data() + mine, base + mine, bytes_per_rank, static_cast<cuda::StreamHandle>(stream));
    const std::vector<size_t> counts(size(), bytes_per_rank);
    host_.allgather_in_place(all, counts);
    cuda::copy_to_device(base, all.data(), all.size(), static_cast<cuda::StreamHandle>(stream));
  }

  void alltoallv(const void* send, std::span<const size_t> send_counts, void* recv,
                 std::span<const size_t> recv_counts, void* stream) override {
    const auto s = static_cast<cuda::StreamHandle>(stream);
    size_t sent = 0, received = 0;
    for (size_t c : send_counts) sent += c;
    for (size_t c : recv_counts) received += c;
    std::vector<std::byte> out(sent);
    cuda::copy_to_host(out.data(), send, sent, s);
    const std::vector<std::byte> in = host_.alltoallv_known(out, send_counts, recv_counts);
    TB_CHECK(in.size() == received, "alltoallv: the ranks' counts disagree");
    cuda::copy_to_device(recv, in.data(), received, s);
  }

 private:
  Communicator& host_;
  std::vector<float> staged_;
};

// This rank's place among the ranks on its node: (local rank, ranks on the node), from the host
// names every rank shares.
std::pair<int, int> node_rank(Communicator& host) {
  constexpr size_t kName = 256;
  std::array<char, kName> name{};
  gethostname(name.data(), kName - 1);
  std::vector<std::byte> names(kName * host.size());
  std::memcpy(names.data() + kName * host.rank(), name.data(), kName);
  host.allgather_in_place(names, std::vector<size_t>(host.size(), kName));
  int local = 0, on_node = 0;
  for (int r = 0; r < host.size(); ++r) {
    if (std::memcmp(names.data() + kName * r, name.data(), kName) != 0) continue;
    ++on_node;
    if (r < host.rank()) ++local;
  }
  return {local, on_node};
}

}  // namespace

std::unique_ptr<DeviceCommunicator> make_host_staged_communicator(Communicator& host) {
  return std::make_unique<HostStagedCommunicator>(host);
}

std::unique_ptr<DeviceCommunicator> make_device_communicator(Communicator& host, std::string* which) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    throw Error(fmt::format("rank {}: no CUDA device", host.rank()));
  }
  const auto [local, on_node] = node_rank(host);
  const int device = local % devices;
  const cudaError_t set = cudaSetDevice(device);
  if (set != cudaSuccess) {
    throw Error(fmt::format("rank {}: cudaSetDevice({}) failed: {}", host.rank(), device, cudaGetErrorString(set)));
  }
  // NCCL needs a GPU of its own for every rank; every rank must agree, or none may enter NCCL's
  // collective initialisation.
  double own = on_node <= devices ? 1.0 : 0.0;
  host.allreduce_sum(std::span<double>(&own, 1));
  const bool nccl = nccl_built() && own == host.size();
  if (which) {
    *which = nccl ? std::string("NCCL, one GPU per rank")
                  : fmt::format("host-staged (copied to the host, summed over MPI): {}",
                                nccl_built() ? "several ranks share a GPU, which NCCL refuses"
                                             : "this build has no NCCL");
  }
  return nccl ? make_nccl_communicator(host, device) : make_host_staged_communicator(host);
}

}  // namespace tastebud
