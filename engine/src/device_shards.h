// The CUDA backend's id tables on several ranks with their rows on the GPUs (TrainOptions::
// rank_exchange device; CUDA builds): the twin of ShardedIdTables (sharded_tables.h), which keeps
// the same rows in host memory. Rank r of N holds the rows u with u % N == r of both sides, GMF
// and MLP columns side by side, with both optimizer states, on its device. Each step:
//   fetch:  the slice's ids (on the host: ids are a few bytes a row) become a ShardRequest; the
//           (id, uses) pairs go to the owners over the host Communicator; each owner gathers the
//           rows asked of it on its device, and the rows move device to device
//           (DeviceCommunicator::alltoallv: NCCL's send/recv, or host-staged where ranks share a
//           GPU);
//   update: the slice rows' gradients summed per id in batch-row order on the device, sent device
//           to device to the owners, summed there in rank order (OwnerGroups, made on the host)
//           and applied by the same sparse_update as one process.
// The sums run in the CPU ranks' order, so device shards match them within the step's rounding.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "cuda/common.h"
#include "cuda/embedding.h"
#include "sharded_tables.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/model.h"

namespace tastebud {

class DeviceIdShards {
 public:
  // batch_rows: the most rows of a whole batch (every rank's slice together).
  DeviceIdShards(Communicator& host, DeviceCommunicator& device, const ModelConfig& config, int64_t batch_rows,
                 cuda::StreamHandle stream);

  // The device takes shards' rows and optimizer state (which the host then frees); item_counts
  // (item metadata): items without positives keep their rows.
  void upload(ShardedIdTables& shards, const std::vector<uint64_t>* item_counts);
  // shards get the device's rows and optimizer state back (before a gather or a checkpoint).
  void download(ShardedIdTables& shards);

  // Collective: the user and item rows this rank's slice uses (its rows' ids, on the host, in
  // slice-row order).
  void fetch(std::span<const uint32_t> users, std::span<const uint32_t> items);
  // After fetch: per slice row, the index of its row in rows(side), [ids x width()].
  const uint32_t* slots(int side) const { return sides_[side].d_slots.data(); }
  const float* rows(int side) const { return sides_[side].d_rows.data(); }
  int64_t width() const { return f_ + e_; }

  // Collective: the slice rows' gradients (GMF columns [rows x f] at d_gmf; MLP columns at d_mlp
  // + mlp_offset, rows mlp_stride apart, null without an MLP) to the owners, who apply them.
  void update(int side, const float* d_gmf, const float* d_mlp, int64_t mlp_stride, int64_t mlp_offset,
              const OptimizerParams& optimizer, float step_size, float loss_scale);

  uint64_t held_bytes() const;
  uint64_t exchanged_bytes = 0;  // bytes this rank's exchanges received

 private:
  struct Side {
    cuda::DeviceBuffer<float> values, state0, state1;  // [local rows x width]
    ShardRequest request;                              // this step's slice
    std::vector<uint32_t> heads;                       // the (id, uses) pairs asked of this owner, rank order
    std::vector<size_t> asked_from;                    // how many pairs each rank asked
    OwnerGroups groups;                                // heads grouped by id
    // What the device needs of the bookkeeping, packed in page-locked memory and copied without
    // waiting: the asked rows, the slots, then the owner's groups (order, starts, local rows, use
    // starts). Written at fetch, which first waits for the stream: the previous step's copies
    // from it are done by then.
    cuda::PinnedBuffer<uint32_t> staged;
    std::span<const uint32_t> order, starts, local;
    cuda::DeviceBuffer<uint32_t> d_slots, d_rows_asked, d_use_starts;
    cuda::DeviceBuffer<float> d_rows;                  // the fetched rows, [ids x width]
    int64_t slice_rows = 0;
  };

  // Copies `values` into side's staging at `at` and enqueues their upload to d_to (null: staged only).
  std::span<const uint32_t> stage(Side& s, size_t& at, std::span<const uint32_t> values, uint32_t* d_to);

  void fetch_side(int side, std::span<const uint32_t> slice_ids);
  std::vector<size_t> bytes_of(std::span<const size_t> counts) const;

  Communicator& host_;
  DeviceCommunicator& device_;
  cuda::StreamHandle stream_;
  int64_t f_ = 0, e_ = 0;
  int64_t constant_[2] = {-1, -1};
  Side sides_[2];
  cuda::DeviceBuffer<unsigned char> d_trained_;  // item metadata: per local item row, 1 where it has positives
  cuda::DeviceBuffer<float> d_outgoing_, d_parts_, d_summed_;  // [max rows x width] each
  cuda::RowGroups slice_groups_, owner_groups_;
};

}  // namespace tastebud
