#include "host/distributed_eval.h"

#include <cstring>

namespace tastebud::host {
namespace {

template <class T>
std::span<std::byte> bytes_of(std::vector<T>& v) {
  return {reinterpret_cast<std::byte*>(v.data()), v.size() * sizeof(T)};
}

template <class T>
std::vector<T> gather_vector(Communicator& comm, const std::vector<T>& mine) {
  const std::vector<std::byte> all =
      comm.gather_to_root({reinterpret_cast<const std::byte*>(mine.data()), mine.size() * sizeof(T)});
  std::vector<T> out(all.size() / sizeof(T));
  if (!all.empty()) std::memcpy(out.data(), all.data(), all.size());
  return out;
}

}  // namespace

UserRange rank_share(size_t users, int rank, int ranks) {
  const auto n = static_cast<size_t>(ranks), r = static_cast<size_t>(rank);
  return {r * users / n, (r + 1) * users / n};
}

void broadcast_params(Communicator& comm, ModelParams& params) {
  if (comm.size() == 1) return;
  for (Tensor* t : params.tensors()) {
    uint64_t size = 1;
    for (const uint64_t d : t->shape) size *= d;
    t->values.resize(size);
    comm.broadcast(bytes_of(t->values), 0);
  }
}

UserValues gather_user_values(Communicator& comm, const UserValues& mine) {
  if (comm.size() == 1) return mine;
  UserValues all;
  all.values = gather_vector(comm, mine.values);
  all.lists = gather_vector(comm, mine.lists);
  if (!comm.root()) return {};
  all.names = mine.names;  // every rank measures the same metrics of the same split
  all.list_size = mine.list_size;
  all.num_items = mine.num_items;
  return all;
}

Metrics evaluate_across_ranks(Communicator& comm, const Split& split, const ScoreFn& score, uint32_t threads) {
  if (split.protocol == EvalProtocol::kNone) return {};
  const UserRange share = rank_share(split.eval_users.size(), comm.rank(), comm.size());
  const UserValues all = gather_user_values(comm, evaluate_users(split, score, threads, share));
  return comm.root() ? summarize(all) : Metrics{};
}

}  // namespace tastebud::host
