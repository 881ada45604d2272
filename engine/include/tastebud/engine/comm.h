// The one seam through which tastebud's processes talk: training steps, evaluation and batch jobs
// call a Communicator at fixed points and never MPI (or NCCL) directly.
//
// Implementations: one process (every collective is the identity, the default), MPI
// (engine/src/comm_mpi.cpp, built with TASTEBUD_MPI) for host buffers, and for device buffers NCCL
// bootstrapped over MPI (engine/src/comm_nccl.cpp, CUDA + MPI builds) or the host-staged one
// (engine/src/comm_device.cpp, CUDA builds).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tastebud {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  bool root() const { return rank() == 0; }

  // Element-wise sums over all ranks, in place. Every rank ends with the same bits (the MPI
  // implementation reduces to rank 0 and broadcasts), so replicated parameters never drift apart.
  virtual void allreduce_sum(std::span<float> values) = 0;
  virtual void allreduce_sum(std::span<double> values) = 0;
  // In place: rank r's block, counts[r] bytes at offset counts[0] + ... + counts[r - 1], is already
  // filled; afterwards every rank holds every block.
  virtual void allgather_in_place(std::span<std::byte> buffer, std::span<const size_t> counts) = 0;
  // send holds the blocks for ranks 0, 1, ... (send_counts[r] bytes for rank r); returns the blocks
  // every rank sent this one, concatenated in rank order, with their sizes in recv_counts.
  virtual std::vector<std::byte> alltoallv(std::span<const std::byte> send, std::span<const size_t> send_counts,
                                           std::vector<size_t>& recv_counts) = 0;
  // The same when this rank already knows how many bytes each rank sends it (recv_counts): one
  // collective call instead of two.
  virtual std::vector<std::byte> alltoallv_known(std::span<const std::byte> send, std::span<const size_t> send_counts,
                                                 std::span<const size_t> recv_counts) = 0;
  // Rank 0 gets every rank's bytes concatenated in rank order; the others get nothing.
  virtual std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) = 0;
  virtual void broadcast(std::span<std::byte> buffer, int root) = 0;
  virtual void barrier() = 0;
  // Prints `message` (with this rank's number) to stderr and ends every rank of the job with a
  // non-zero exit. Only the command line calls it, after catching an error.
  [[noreturn]] virtual void abort(const std::string& message) = 0;
};

// Every collective over one process: the identity.
std::unique_ptr<Communicator> make_single_communicator();

// True when this build has the MPI communicator.
bool mpi_built();
// The number of processes a launcher (mpirun / mpiexec, srun, a PMI launcher) started this one
// with, from its environment; 1 when none did.
int launched_ranks();

// The job's communicator: over MPI_COMM_WORLD when a launcher started several ranks (MPI is
// initialised on the first call and finalised at exit), else one process. Throws tastebud::Error
// when several ranks were launched but this build has no MPI.
Communicator& world_communicator();

// Convenience on top of the seam.
// [begin, end) of `count` items that rank `rank` of `size` takes: contiguous, in order.
inline std::pair<uint64_t, uint64_t> rank_slice(uint64_t count, int rank, int size) {
  return {count * static_cast<uint64_t>(rank) / static_cast<uint64_t>(size),
          count * static_cast<uint64_t>(rank + 1) / static_cast<uint64_t>(size)};
}
// Rows [begin, end) of a batch of `rows` rows that rank `rank` of `size` computes: its rank_slice
// of the batch's chunks of `chunk` rows (chunk_rows(): a function of the batch size only, and
// even, so a BPR pair never straddles two ranks). Both backends slice their batches so; a short
// last batch can leave a rank no rows.
inline std::pair<int64_t, int64_t> rank_rows(int64_t rows, uint32_t chunk, int rank, int size) {
  const auto chunks = static_cast<uint64_t>((rows + chunk - 1) / chunk);
  const auto [begin, end] = rank_slice(chunks, rank, size);
  return {std::min<int64_t>(static_cast<int64_t>(begin) * chunk, rows),
          std::min<int64_t>(static_cast<int64_t>(end) * chunk, rows)};
}
// alltoallv of typed elements: per_rank[r] goes to rank r; returns what each rank sent here, in
// rank order, and how many elements came from each in `from`.
// With `known`, from[r] must already say how many elements rank r sends (one call fewer).
template <class T>
std::vector<T> exchange(Communicator& comm, const std::vector<std::vector<T>>& per_rank, std::vector<size_t>& from,
                        bool known = false) {
  std::vector<size_t> counts(per_rank.size());
  size_t total = 0;
  for (size_t r = 0; r < per_rank.size(); ++r) total += counts[r] = per_rank[r].size() * sizeof(T);
  std::vector<std::byte> send(total);
  size_t at = 0;
  for (const auto& block : per_rank) {
    if (!block.empty()) std::memcpy(send.data() + at, block.data(), block.size() * sizeof(T));
    at += block.size() * sizeof(T);
  }
  std::vector<size_t> recv_counts(from.size());
  std::vector<std::byte> got;
  if (known) {
    for (size_t r = 0; r < from.size(); ++r) recv_counts[r] = from[r] * sizeof(T);
    got = comm.alltoallv_known(send, counts, recv_counts);
  } else {
    got = comm.alltoallv(send, counts, recv_counts);
    from.resize(recv_counts.size());
    for (size_t r = 0; r < recv_counts.size(); ++r) from[r] = recv_counts[r] / sizeof(T);
  }
  std::vector<T> out(got.size() / sizeof(T));
  if (!got.empty()) std::memcpy(out.data(), got.data(), got.size());
  return out;
}
// Collective: rows `ids` (any order, repeats allowed) of a table sharded by row (each rank holds
// its rows u % N == rank in order, `cols` floats each, at `held`), asked of their owners; `out`
// gets them in ids order. Returns the bytes this rank received (the ids it was asked for and the
// rows sent to it).
uint64_t fetch_sharded_rows(Communicator& comm, const float* held, uint64_t cols, std::span<const uint32_t> ids,
                            std::vector<float>& out);
// Rank 0 gets the ranks' strings concatenated in rank order; the others get "".
std::string gather_text(Communicator& comm, const std::string& mine);

}  // namespace tastebud

namespace tastebud {

// Collectives over device buffers with NCCL, one GPU per rank, bootstrapped over a host
// Communicator (rank 0's ncclUniqueId is broadcast with it). Pointers are device pointers and
// `stream` a cudaStream_t, so that this header includes no CUDA header. Built in CUDA + MPI
// builds with NCCL (engine/src/comm_nccl.cpp).
class DeviceCommunicator {
 public:
  virtual ~DeviceCommunicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Sums count floats in place over every rank, enqueued on stream.
  virtual void allreduce_sum(float* data, size_t count, void* stream) = 0;
  // Rank r's bytes_per_rank bytes at data + r * bytes_per_rank are filled; afterwards every rank's.
  virtual void allgather_in_place(void* data, size_t bytes_per_rank, void* stream) = 0;
  // Blocks between every pair of ranks: send_counts[r] bytes of send (the blocks in rank order) go
  // to rank r, and recv_counts[r] bytes from rank r land in recv (in rank order). Each rank's
  // counts must match what its peers send it. Enqueued on stream (NCCL's grouped send/recv; the
  // host-staged one waits for the stream and copies through the host).
  virtual void alltoallv(const void* send, std::span<const size_t> send_counts, void* recv,
                         std::span<const size_t> recv_counts, void* stream) = 0;
};

// Sums through host memory: each call waits for `stream`, copies the device buffer to the host,
// sums it with host's allreduce_sum and copies it back. For ranks that share a GPU, which NCCL
// refuses. CUDA builds (engine/src/comm_device.cpp); elsewhere it throws tastebud::Error.
std::unique_ptr<DeviceCommunicator> make_host_staged_communicator(Communicator& host);
// The device communicator of a CUDA job on host's ranks, chosen here only: NCCL when this build
// has it and every rank has a GPU of its own on its node, else host-staged. Collective; makes
// this rank's GPU (its rank among the node's ranks, modulo the node's GPUs) current. `which` says
// which was chosen and why. Throws tastebud::Error without a CUDA device or in a build without CUDA.
std::unique_ptr<DeviceCommunicator> make_device_communicator(Communicator& host, std::string* which);

// True when this build has the NCCL communicator.
bool nccl_built();
// NCCL over host's ranks on CUDA device `device`. Throws tastebud::Error when the build has no
// NCCL or NCCL fails, with NCCL's message.
std::unique_ptr<DeviceCommunicator> make_nccl_communicator(Communicator& host, int device);
// Checks the NCCL path end to end: values copied to device `rank % devices`, summed over host's
// ranks with NCCL, copied back. False, with the reason, when there are fewer GPUs than ranks on
// this node or no NCCL in this build.
bool nccl_allreduce_on_devices(Communicator& host, std::span<float> values, std::string* reason);

}  // namespace tastebud
