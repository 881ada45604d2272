// The MPI communicator over MPI_COMM_WORLD (built with TASTEBUD_MPI): host buffers only.
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include <fmt/format.h>

#include "tastebud/engine/comm.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error(fmt::format("{} failed: {}", what, std::string(text, static_cast<size_t>(length))));
}

int to_int(size_t n, const char* what) {
  if (n > static_cast<size_t>(INT_MAX)) throw Error(fmt::format("{}: {} bytes exceed one MPI message", what, n));
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owns_ = true;
    }
    // Errors come back as codes that check() turns into tastebud::Error.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(std::span<float> values) override { reduce_then_broadcast(values.data(), values.size(), MPI_FLOAT); }
  void allreduce_sum(std::span<double> values) override { reduce_then_broadcast(values.data(), values.size(), MPI_DOUBLE); }

  void allgather_in_place(std::span<std::byte> buffer, std::span<const size_t> counts) override {
    if (counts.size() != static_cast<size_t>(size_)) throw Error("allgather_in_place: one count per rank expected");
    std::vector<int> sizes(size_), offsets(size_);
    size_t at = 0;
    for (int r = 0; r < size_; ++r) {
      sizes[r] = to_int(counts[r], "allgather_in_place");
      offsets[r] = to_int(at, "allgather_in_place");
      at += counts[r];
    }
    if (at > buffer.size()) throw Error("allgather_in_place: the blocks overrun the buffer");
    check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer.data(), sizes.data(), offsets.data(),
                         MPI_BYTE, MPI_COMM_WORLD),
          "MPI_Allgatherv");
  }

  std::vector<std::byte> alltoallv(std::span<const std::byte> send, std::span<const size_t> send_counts,
                                   std::vector<size_t>& recv_counts) override {
    if (send_counts.size() != static_cast<size_t>(size_)) throw Error("alltoallv: one count per rank expected");
    std::vector<int> sizes(size_), got(size_);
    for (int r = 0; r < size_; ++r) sizes[r] = to_int(send_counts[r], "alltoallv");
    check(MPI_Alltoall(sizes.data(), 1, MPI_INT, got.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Alltoall");
    recv_counts.resize(size_);
    for (int r = 0; r < size_; ++r) recv_counts[r] = static_cast<size_t>(got[r]);
    return alltoallv_known(send, send_counts, recv_counts);
  }

  std::vector<std::byte> alltoallv_known(std::span<const std::byte> send, std::span<const size_t> send_counts,
                                         std::span<const size_t> recv_counts) override {
    if (send_counts.size() != static_cast<size_t>(size_) || recv_counts.size() != static_cast<size_t>(size_)) {
      throw Error("alltoallv: one count per rank expected");
    }
    std::vector<int> sizes(size_), offsets(size_), got(size_), got_offsets(size_);
    size_t at = 0, total = 0;
    for (int r = 0; r < size_; ++r) {
      sizes[r] = to_int(send_counts[r], "alltoallv");
      offsets[r] = to_int(at, "alltoallv");
      at += send_counts[r];
      got[r] = to_int(recv_counts[r], "alltoallv");
      got_offsets[r] = to_int(total, "alltoallv");
      total += recv_counts[r];
    }
    std::vector<std::byte> out(total);
    check(MPI_Alltoallv(send.data(), sizes.data(), offsets.data(), MPI_BYTE, out.data(), got.data(),
                        got_offsets.data(), MPI_BYTE, MPI_COMM_WORLD),
          "MPI_Alltoallv");
    return out;
  }

  std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) override {
    int count = to_int(mine.size(), "gather_to_root");
    std::vector<int> sizes(root() ? size_ : 0), offsets(root() ? size_ : 0);
    check(MPI_Gather(&count, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Gather");
    std::vector<std::byte> all;
    if (root()) {
      size_t total = 0;
      for (int r = 0; r < size_; ++r) {
        offsets[r] = to_int(total, "gather_to_root");
        total += static_cast<size_t>(sizes[r]);
      }
      all.resize(total);
    }
    check(MPI_Gatherv(mine.data(), count, MPI_BYTE, all.data(), sizes.data(), offsets.data(), MPI_BYTE, 0,
                      MPI_COMM_WORLD),
          "MPI_Gatherv");
    return all;
  }

  void broadcast(std::span<std::byte> buffer, int root) override {
    check(MPI_Bcast(buffer.data(), to_int(buffer.size(), "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
  }

  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

  [[noreturn]] void abort(const std::string& message) override {
    std::fprintf(stderr, "rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }

 private:
  // MPI_Allreduce may combine in a different order on different ranks; reducing to rank 0 and
  // broadcasting gives every rank the same bits.
  void reduce_then_broadcast(void* data, size_t count, MPI_Datatype type) {
    const int n = to_int(count, "allreduce_sum");
    check(MPI_Reduce(root() ? MPI_IN_PLACE : data, root() ? data : nullptr, n, type, MPI_SUM, 0, MPI_COMM_WORLD),
          "MPI_Reduce");
    check(MPI_Bcast(data, n, type, 0, MPI_COMM_WORLD), "MPI_Bcast");
  }

  int rank_ = 0, size_ = 1;
  bool owns_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_world() { return std::make_unique<MpiCommunicator>(); }

}  // namespace tastebud
