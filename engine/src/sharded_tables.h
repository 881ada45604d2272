// The id tables of a model trained on several ranks, sharded by row (CPU backend): rank r of N
// owns the rows u with u % N == r (local row u / N), their GMF and MLP columns side by side
// ([f | e] floats a row) and both optimizer states. Each step fetches the rows a rank's slice of
// the batch uses from their owners and returns their gradients, summed per row in batch-row order,
// to the owners, which sum the ranks' parts in rank order and apply the update. Every exchange goes
// through the Communicator seam (alltoallv).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tastebud/engine/comm.h"
#include "tastebud/engine/trainer.h"

namespace tastebud {

// The bookkeeping of one side's exchange that both shard stores share (this host one and the
// CUDA backend's device-resident one, device_shards.h): which rows a rank's slice asks of which
// owner, and how an owner groups what the ranks send it.
struct ShardRequest {
  std::vector<uint32_t> ids;        // the distinct ids the slice uses, by owner (id % ranks), ascending within each
  std::vector<uint32_t> slots;      // per slice row: the index of its id in ids
  std::vector<uint32_t> uses;       // per id: how many slice rows use it
  std::vector<size_t> per_owner;    // how many of ids each rank owns (ids holds them in rank order)
};
ShardRequest request_rows(std::span<const uint32_t> slice_ids, int ranks);

// An owner's view of the (id, uses) pairs every rank sent it, concatenated in rank order: the
// entries grouped by id, each group's entries in rank order (the order their parts are summed in).
struct OwnerGroups {
  std::vector<uint32_t> order;       // entry indices, group by group
  std::vector<uint32_t> starts;      // group k's entries: order[starts[k] .. starts[k + 1])
  std::vector<uint32_t> ids;         // group k's id, ascending
  std::vector<uint32_t> local;       // its row among the owner's (id / ranks)
  std::vector<uint32_t> use_starts;  // the uses summed up to group k: RowL2's starts
};
OwnerGroups group_owner_entries(std::span<const uint32_t> heads, int ranks);

class ShardedIdTables {
 public:
  // The rows of the slice of one side (0: users, 1: items), fetched from their owners.
  struct Fetched {
    std::vector<uint32_t> ids;    // the distinct ids the slice uses, by owner (ShardRequest)
    std::vector<uint32_t> slots;  // per slice row: the index of its id in ids
    std::vector<uint32_t> uses;   // per id: how many slice rows use it
    std::vector<float> gmf, mlp;  // [ids x f], [ids x e]
  };

  // Keeps the rows of state's four id tables (and their optimizer state) that this rank owns and
  // frees the tables in state. state may hold the whole tables, or only this rank's rows already
  // (state.params.sharded(): a sharded initialisation or resume for comm's ranks).
  ShardedIdTables(Communicator& comm, TrainState& state);

  // Collective: the rows of side's ids used by this rank's slice rows.
  void fetch(int side, std::span<const uint32_t> slice_ids, Fetched& out);
  // Collective: the slice rows' gradients (GMF columns at d_gmf, stride f; MLP columns at
  // d_mlp + mlp_offset, stride mlp_stride) summed per id, sent to the owners and applied there.
  // item_counts (items with item metadata): rows of items without positives get no update.
  void update(int side, const Fetched& fetched, const float* d_gmf, const float* d_mlp, int64_t mlp_stride,
              int64_t mlp_offset, const OptimizerParams& optimizer, float step_size, float loss_scale,
              const std::vector<uint64_t>* item_counts);
  // Collective: rank 0's `state` receives the whole id tables and their optimizer state; the other
  // ranks' stay empty.
  void gather(TrainState& state);

  // state's id tables (emptied by the constructor) receive this rank's rows and optimizer state,
  // and state.params is marked sharded: what checkpoints stream to rank 0 (model_io.h). Not
  // collective.
  void copy_held_rows(TrainState& state) const;

  uint64_t held_bytes() const;
  // This rank's rows of side (0: users, 1: items), [rows x (f + e)]: the values (k = 0) or an
  // optimizer state (k = 1, 2). What the CUDA backend's device-resident shards mirror.
  std::vector<float>& held(int side, int k) { return k == 0 ? values_[side] : k == 1 ? state0_[side] : state1_[side]; }
  // Bytes received by this rank's exchanges since the last reset.
  uint64_t exchanged_bytes = 0;

 private:
  int64_t width() const { return f_ + e_; }
  uint64_t local_rows(int side) const;

  Communicator& comm_;
  int64_t f_ = 0, e_ = 0;
  uint64_t rows_[2] = {0, 0};  // users, items
  int64_t constant_[2] = {-1, -1};  // MF: the GMF column of each side that stays at one, or -1
  std::vector<float> values_[2], state0_[2], state1_[2];
};

}  // namespace tastebud
