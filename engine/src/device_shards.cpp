#include "device_shards.h"

#include <algorithm>
#include <utility>

#include "cuda/features.h"
#include "cuda/optimizer.h"
#include "tastebud/error.h"

namespace tastebud {

DeviceIdShards::DeviceIdShards(Communicator& host, DeviceCommunicator& device, const ModelConfig& config,
                               int64_t batch_rows, cuda::StreamHandle stream)
    : host_(host),
      device_(device),
      stream_(stream),
      f_(config.has_gmf() ? config.factors : 0),
      e_(config.mlp_embedding()),
      slice_groups_(batch_rows, static_cast<uint32_t>(batch_rows)),
      owner_groups_(batch_rows, 1) {
  TB_CHECK(device.size() == host.size() && device.rank() == host.rank(),
           "device shards: the device communicator spans other ranks than the host's");
  constant_[0] = config.constant_column(false);
  constant_[1] = config.constant_column(true);
  const auto rows = static_cast<size_t>(batch_rows);
  for (Side& side : sides_) {
    side.d_slots.resize(rows);
    side.d_rows_asked.resize(rows);
    side.d_use_starts.resize(rows + 1);
    side.d_rows.resize(rows * width());
    side.staged.reserve(6 * rows + 2);
  }
  d_outgoing_.resize(rows * width());
  d_parts_.resize(rows * width());
  d_summed_.resize(rows * width());
}

void DeviceIdShards::upload(ShardedIdTables& shards, const std::vector<uint64_t>* item_counts) {
  for (int s = 0; s < 2; ++s) {
    cuda::DeviceBuffer<float>* to[3] = {&sides_[s].values, &sides_[s].state0, &sides_[s].state1};
    for (int k = 0; k < 3; ++k) {
      to[k]->upload(shards.held(s, k), stream_);
      std::vector<float>().swap(shards.held(s, k));  // the device holds them now
    }
  }
  d_trained_.resize(0);
  if (item_counts != nullptr) {
    const auto n = static_cast<uint64_t>(host_.size()), r = static_cast<uint64_t>(host_.rank());
    std::vector<unsigned char> trained(sides_[1].values.size() / std::max<int64_t>(width(), 1));
    for (uint64_t l = 0; l < trained.size(); ++l) trained[l] = (*item_counts)[l * n + r] > 0 ? 1 : 0;
    d_trained_.upload(trained, stream_);
  }
}

void DeviceIdShards::download(ShardedIdTables& shards) {
  for (int s = 0; s < 2; ++s) {
    const cuda::DeviceBuffer<float>* from[3] = {&sides_[s].values, &sides_[s].state0, &sides_[s].state1};
    for (int k = 0; k < 3; ++k) shards.held(s, k) = from[k]->download(stream_);
  }
}

std::vector<size_t> DeviceIdShards::bytes_of(std::span<const size_t> counts) const {
  std::vector<size_t> bytes(counts.size());
  for (size_t r = 0; r < counts.size(); ++r) bytes[r] = counts[r] * static_cast<size_t>(width()) * sizeof(float);
  return bytes;
}

std::span<const uint32_t> DeviceIdShards::stage(Side& s, size_t& at, std::span<const uint32_t> values,
                                                uint32_t* d_to) {
  TB_CHECK(at + values.size() <= s.staged.size(), "device shards: the step's bookkeeping outgrew its staging");
  uint32_t* to = s.staged.data() + at;
  std::copy(values.begin(), values.end(), to);
  at += values.size();
  if (d_to != nullptr) cuda::copy_to_device_async(d_to, to, values.size() * sizeof(uint32_t), stream_);
  return {to, values.size()};
}

void DeviceIdShards::fetch(std::span<const uint32_t> users, std::span<const uint32_t> items) {
  cuda::synchronize(stream_);  // the last step's copies from the staging are done
  fetch_side(0, users);
  fetch_side(1, items);
}

void DeviceIdShards::fetch_side(int side, std::span<const uint32_t> slice_ids) {
  Side& s = sides_[side];
  const int n = host_.size();
  s.request = request_rows(slice_ids, n);
  s.slice_rows = static_cast<int64_t>(slice_ids.size());
  std::vector<std::vector<uint32_t>> heads(n);
  for (size_t k = 0; k < s.request.ids.size(); ++k) {
    const uint32_t id = s.request.ids[k];
    heads[id % n].push_back(id);
    heads[id % n].push_back(s.request.uses[k]);
  }
  std::vector<size_t> from;
  s.heads = exchange(host_, heads, from);
  s.asked_from.resize(n);
  for (int r = 0; r < n; ++r) s.asked_from[r] = from[r] / 2;
  s.groups = group_owner_entries(s.heads, n);
  // The owner's rows asked of it, gathered in the askers' order and sent back device to device.
  const size_t asked = s.heads.size() / 2;
  std::vector<uint32_t> local(asked);
  for (size_t k = 0; k < asked; ++k) local[k] = s.heads[2 * k] / static_cast<uint32_t>(n);
  size_t at = 0;
  stage(s, at, local, s.d_rows_asked.data());
  stage(s, at, s.request.slots, s.d_slots.data());
  s.order = stage(s, at, s.groups.order, nullptr);
  s.starts = stage(s, at, s.groups.starts, nullptr);
  s.local = stage(s, at, s.groups.local, nullptr);
  stage(s, at, s.groups.use_starts, s.d_use_starts.data());
  cuda::gather_rows(s.values.data(), width(), s.d_rows_asked.data(), static_cast<int64_t>(asked), d_outgoing_.data(),
                    width(), 0, stream_);
  const std::vector<size_t> sent = bytes_of(s.asked_from), received = bytes_of(s.request.per_owner);
  device_.alltoallv(d_outgoing_.data(), sent, s.d_rows.data(), received, stream_);
  exchanged_bytes += s.heads.size() * sizeof(uint32_t) + s.request.ids.size() * width() * sizeof(float);
}

void DeviceIdShards::update(int side, const float* d_gmf, const float* d_mlp, int64_t mlp_stride, int64_t mlp_offset,
                            const OptimizerParams& optimizer, float step_size, float loss_scale) {
  Side& s = sides_[side];
  const int64_t w = width();
  // This slice's part: each id's rows summed in batch-row order, [ids x w] in the request's order
  // (every id has a row, so group k is id k).
  slice_groups_.build(s.d_slots.data(), s.slice_rows, stream_);
  cuda::sum_row_gradients(slice_groups_, d_gmf, f_, 0, f_, d_outgoing_.data(), w, 0, stream_);
  if (d_mlp != nullptr) {
    cuda::sum_row_gradients(slice_groups_, d_mlp, mlp_stride, mlp_offset, e_, d_outgoing_.data(), w, f_, stream_);
  }
  const std::vector<size_t> sent = bytes_of(s.request.per_owner), received = bytes_of(s.asked_from);
  device_.alltoallv(d_outgoing_.data(), sent, d_parts_.data(), received, stream_);
  exchanged_bytes += s.heads.size() / 2 * w * sizeof(float);
  // The owner: each row's parts summed in rank order, uses added up for the row's L2.
  owner_groups_.assign(s.local, s.order, s.starts, stream_);  // staged at fetch: nothing waits
  cuda::sum_row_gradients(owner_groups_, d_parts_.data(), w, 0, w, d_summed_.data(), stream_);
  const int64_t groups = static_cast<int64_t>(s.local.size());
  if (side == 1 && !d_trained_.empty()) {
    cuda::drop_untrained_gradients(owner_groups_.rows(), owner_groups_.num_groups(), groups, d_trained_.data(), w,
                                   d_summed_.data(), stream_);
  }
  cuda::sparse_update(optimizer, step_size, s.values.data(), s.state0.data(), s.state1.data(), w, owner_groups_.rows(),
                      owner_groups_.num_groups(), groups, d_summed_.data(), RowL2{s.d_use_starts.data(), loss_scale},
                      nullptr, stream_);
  // MF's bias partner column stays at one (the GMF columns lead each row).
  if (constant_[side] >= 0) {
    cuda::set_column(s.values.data(), w, owner_groups_.rows(), owner_groups_.num_groups(), groups, constant_[side], 1.0f,
                     stream_);
  }
}

uint64_t DeviceIdShards::held_bytes() const {
  uint64_t floats = 0;
  for (const Side& s : sides_) floats += s.values.size() + s.state0.size() + s.state1.size();
  return floats * sizeof(float);
}

}  // namespace tastebud
