// The single-process communicator, launcher detection and the job's world communicator.
#include "tastebud/engine/comm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud {

#ifdef TASTEBUD_WITH_MPI
// engine/src/comm_mpi.cpp: MPI_COMM_WORLD, MPI initialised here and finalised at exit.
std::unique_ptr<Communicator> make_mpi_world();
#endif

namespace {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(std::span<float>) override {}
  void allreduce_sum(std::span<double>) override {}
  void allgather_in_place(std::span<std::byte>, std::span<const size_t>) override {}
  std::vector<std::byte> alltoallv(std::span<const std::byte> send, std::span<const size_t> send_counts,
                                   std::vector<size_t>& recv_counts) override {
    recv_counts.assign(send_counts.begin(), send_counts.end());
    return {send.begin(), send.end()};
  }
  std::vector<std::byte> alltoallv_known(std::span<const std::byte> send, std::span<const size_t>,
                                         std::span<const size_t>) override {
    return {send.begin(), send.end()};
  }
  std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) override {
    return {mine.begin(), mine.end()};
  }
  void broadcast(std::span<std::byte>, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(const std::string& message) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::exit(1);
  }
};

int env_count(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::atoi(value) : 0;
}

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() { return std::make_unique<SingleCommunicator>(); }

bool mpi_built() {
#ifdef TASTEBUD_WITH_MPI
  return true;
#else
  return false;
#endif
}

int launched_ranks() {
  // Open MPI's mpirun, MPICH / Intel MPI (PMI), PMIx launchers, then Slurm's srun (the step's
  // task count, not the allocation's, so a plain run inside a multi-task allocation stays one).
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    const int n = env_count(name);
    if (n > 0) return n;
  }
  return 1;
}

Communicator& world_communicator() {
  static std::unique_ptr<Communicator> world = [] {
    const int ranks = launched_ranks();
    if (ranks <= 1) return make_single_communicator();
#ifdef TASTEBUD_WITH_MPI
    return make_mpi_world();
#else
    throw Error(fmt::format("this process was launched as one of {} ranks (mpirun or srun), but this "
                            "build has no MPI: configure with -DTASTEBUD_MPI=ON (Open MPI: "
                            "openmpi-bin, libopenmpi-dev) or run tastebud as one process",
                            ranks));
#endif
  }();
  return *world;
}

std::string gather_text(Communicator& comm, const std::string& mine) {
  const auto* bytes = reinterpret_cast<const std::byte*>(mine.data());
  const std::vector<std::byte> all = comm.gather_to_root({bytes, mine.size()});
  return comm.root() ? std::string(reinterpret_cast<const char*>(all.data()), all.size()) : std::string();
}

uint64_t fetch_sharded_rows(Communicator& comm, const float* held, uint64_t cols, std::span<const uint32_t> ids,
                            std::vector<float>& out) {
  const uint32_t n = static_cast<uint32_t>(comm.size());
  std::vector<std::vector<uint32_t>> asks(n);
  for (const uint32_t u : ids) asks[u % n].push_back(u);
  std::vector<size_t> asked_by;
  const std::vector<uint32_t> asked = exchange(comm, asks, asked_by);
  std::vector<std::vector<float>> replies(n);
  for (uint32_t r = 0, at = 0; r < n; ++r) {
    replies[r].resize(asked_by[r] * cols);
    for (size_t k = 0; k < asked_by[r]; ++k, ++at) {
      std::copy_n(held + static_cast<uint64_t>(asked[at] / n) * cols, cols, replies[r].data() + k * cols);
    }
  }
  // Each owner sends back as many rows as it was asked for, in the order asked.
  std::vector<size_t> sent_by(n);
  for (uint32_t r = 0; r < n; ++r) sent_by[r] = asks[r].size() * cols;
  const std::vector<float> rows = exchange(comm, replies, sent_by, /*known=*/true);
  std::vector<size_t> next(n + 1, 0);  // where each owner's next row is in rows
  for (uint32_t r = 0; r < n; ++r) next[r + 1] = next[r] + asks[r].size();
  out.resize(ids.size() * cols);
  for (size_t k = 0; k < ids.size(); ++k) {
    std::copy_n(rows.begin() + static_cast<int64_t>(next[ids[k] % n]++ * cols), cols, out.begin() + static_cast<int64_t>(k * cols));
  }
  return (asked.size() + rows.size()) * sizeof(float);
}

}  // namespace tastebud

#ifndef TASTEBUD_WITH_NCCL
namespace tastebud {

bool nccl_built() { return false; }

std::unique_ptr<DeviceCommunicator> make_nccl_communicator(Communicator&, int) {
  throw Error("this build has no NCCL communicator (it needs CUDA, MPI and NCCL: configure with "
              "-DTASTEBUD_CUDA=ON -DTASTEBUD_MPI=ON and NCCL installed)");
}

bool nccl_allreduce_on_devices(Communicator&, std::span<float>, std::string* reason) {
  if (reason) *reason = "this build has no NCCL communicator";
  return false;
}

}  // namespace tastebud
#endif

#ifndef TASTEBUD_WITH_CUDA
namespace tastebud {

std::unique_ptr<DeviceCommunicator> make_host_staged_communicator(Communicator&) {
  throw Error("this build has no CUDA backend, so no device communicator (configure with -DTASTEBUD_CUDA=ON)");
}

std::unique_ptr<DeviceCommunicator> make_device_communicator(Communicator& host, std::string*) {
  return make_host_staged_communicator(host);
}

}  // namespace tastebud
#endif
