// The exchange of one training step on several ranks, as both backends call it at fixed points:
// the id-table rows that this rank's rows of the batch (rank_rows, comm.h) use, fetched from their
// owners; the step's loss summed over ranks; the rows' gradients returned to their owners. Host
// memory throughout (ShardedIdTables): the CPU backend reads the fetched rows in place
// (engine/src/cpu_backend.cpp), the CUDA backend stages them and their gradients through it
// (engine/src/cuda_backend.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "sharded_tables.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/trainer.h"

namespace tastebud {

// The one place the id tables are sharded: this rank keeps its rows of state's id tables (and their
// optimizer state) and state loses the whole tables.
std::unique_ptr<ShardedIdTables> make_id_shards(Communicator& comm, TrainState& state);

class RankStep {
 public:
  RankStep(Communicator& comm, TrainState& state);

  Communicator& comm() { return comm_; }
  // Collective: the rows of the slice's users and items (slice-local, in row order).
  void fetch(std::span<const uint32_t> users, std::span<const uint32_t> items);
  // Per slice row: the index of its user (side 0) or item (side 1) among the fetched rows.
  const std::vector<uint32_t>& slots(int side) const { return fetched_[side].slots; }
  // The fetched rows, [ids x f] and [ids x e]: what slots index.
  const std::vector<float>& gmf_rows(int side) const { return fetched_[side].gmf; }
  const std::vector<float>& mlp_rows(int side) const { return fetched_[side].mlp; }
  size_t fetched_ids(int side) const { return fetched_[side].ids.size(); }

  // Collective: the step's loss and impression negatives summed over ranks, in rank order.
  double sum_loss(double loss, uint64_t* impressions = nullptr);
  // Collective: the slice rows' gradients to their owners, who apply the update: GMF rows
  // [rows x f] of each side, and the MLP input's gradient [rows x 2e] (user half, then item
  // half; null without an MLP). item_counts (item metadata): items without positives keep their
  // rows.
  void update(const float* user_gmf_grad, const float* item_gmf_grad, const float* mlp_input_grad, int64_t e,
              const OptimizerParams& optimizer, float step_size, float loss_scale,
              const std::vector<uint64_t>* item_counts);
  // Collective: `data` holds a batch's rows ([rows x width] elements of `element` bytes), of which
  // this rank filled its own (rank_rows(rows, chunk, ...)); afterwards it holds every rank's. The
  // whole batch's ids and row gradients, from which every rank updates its replica of the metadata
  // and context tables. Returns the bytes the batch's rows take.
  uint64_t share_rows(void* data, int64_t rows, int64_t width, size_t element, uint32_t chunk);
  // Collective: rank 0's state receives the whole id tables; the others' stay empty.
  void gather(TrainState& state) { shards_->gather(state); }
  // state receives this rank's rows of the id tables (a sharded state).
  void copy_held_rows(TrainState& state) const { shards_->copy_held_rows(state); }
  uint64_t held_bytes() const { return shards_->held_bytes(); }
  // This rank's rows in host memory: what the CUDA backend's device shards take and give back.
  ShardedIdTables& shards() { return *shards_; }
  // Bytes the id-table exchanges received since the last call.
  uint64_t take_exchanged_bytes() { return std::exchange(shards_->exchanged_bytes, 0); }

 private:
  Communicator& comm_;
  std::unique_ptr<ShardedIdTables> shards_;
  ShardedIdTables::Fetched fetched_[2];  // users, items
};

}  // namespace tastebud
