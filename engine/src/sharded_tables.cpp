#include "sharded_tables.h"

#include <algorithm>
#include <array>
#include <numeric>

#include <fmt/format.h>

#include "cpu/embedding.h"
#include "cpu/optimizer.h"
#include "tastebud/error.h"

namespace tastebud {
namespace {

// Tensor index of side's GMF and MLP tables in ParamLayout order (user_gmf, item_gmf, user_mlp,
// item_mlp).
size_t gmf_table(int side) { return static_cast<size_t>(side); }
size_t mlp_table(int side) { return static_cast<size_t>(2 + side); }

void release(std::vector<float>& v) { std::vector<float>().swap(v); }

// Side's [GMF, MLP] tensors of the parameters, state0 and state1, in that order.
using SideTensors = std::array<std::array<Tensor*, 2>, 3>;
SideTensors side_tensors(TrainState& state, int side) {
  std::vector<Tensor*> tensors = state.params.tensors();
  return {{{tensors[gmf_table(side)], tensors[mlp_table(side)]},
           {&state.state0[gmf_table(side)], &state.state0[mlp_table(side)]},
           {&state.state1[gmf_table(side)], &state.state1[mlp_table(side)]}}};
}

}  // namespace

ShardRequest request_rows(std::span<const uint32_t> slice_ids, int ranks) {
  const auto n = static_cast<uint32_t>(ranks);
  ShardRequest req;
  req.ids.assign(slice_ids.begin(), slice_ids.end());
  auto by_owner = [n](uint32_t a, uint32_t b) { return a % n != b % n ? a % n < b % n : a < b; };
  std::sort(req.ids.begin(), req.ids.end(), by_owner);
  req.ids.erase(std::unique(req.ids.begin(), req.ids.end()), req.ids.end());
  req.slots.resize(slice_ids.size());
  req.uses.assign(req.ids.size(), 0);
  for (size_t k = 0; k < slice_ids.size(); ++k) {
    const auto at = std::lower_bound(req.ids.begin(), req.ids.end(), slice_ids[k], by_owner) - req.ids.begin();
    req.slots[k] = static_cast<uint32_t>(at);
    ++req.uses[at];
  }
  req.per_owner.assign(n, 0);
  for (uint32_t id : req.ids) ++req.per_owner[id % n];
  return req;
}

OwnerGroups group_owner_entries(std::span<const uint32_t> heads, int ranks) {
  const size_t count = heads.size() / 2;
  OwnerGroups g;
  g.order.resize(count);
  std::iota(g.order.begin(), g.order.end(), 0u);
  std::stable_sort(g.order.begin(), g.order.end(), [&](uint32_t a, uint32_t b) { return heads[2 * a] < heads[2 * b]; });
  g.starts.push_back(0);
  g.use_starts.push_back(0);
  for (size_t k = 0; k < count; ++k) {
    const uint32_t id = heads[2 * g.order[k]];
    if (k == 0 || id != g.ids.back()) {
      g.ids.push_back(id);
      g.local.push_back(id / static_cast<uint32_t>(ranks));
      g.starts.push_back(g.starts.back());
      g.use_starts.push_back(g.use_starts.back());
    }
    ++g.starts.back();
    g.use_starts.back() += heads[2 * g.order[k] + 1];
  }
  return g;
}

uint64_t ShardedIdTables::local_rows(int side) const {
  const uint64_t n = static_cast<uint64_t>(comm_.size()), r = static_cast<uint64_t>(comm_.rank());
  return ModelParams::shard_rows(rows_[side], r, n);
}

ShardedIdTables::ShardedIdTables(Communicator& comm, TrainState& state) : comm_(comm) {
  const ModelConfig& config = state.params.config;
  f_ = config.has_gmf() ? config.factors : 0;
  e_ = config.mlp_embedding();
  rows_[0] = config.num_users;
  rows_[1] = config.num_items;
  constant_[0] = config.constant_column(false);
  constant_[1] = config.constant_column(true);
  const uint64_t n = static_cast<uint64_t>(comm_.size()), r = static_cast<uint64_t>(comm_.rank());
  const bool held = state.params.sharded();  // rows u = l * n + r at l already
  TB_CHECK(!held || (state.params.shard_ranks == n && state.params.shard_rank == r),
           fmt::format("the state holds the id rows of rank {} of {}, this is rank {} of {}", state.params.shard_rank,
                       state.params.shard_ranks, r, n));
  for (int side = 0; side < 2; ++side) {
    const uint64_t local = local_rows(side);
    const int64_t w = width();
    const SideTensors from = side_tensors(state, side);
    std::vector<float>* to[3] = {&values_[side], &state0_[side], &state1_[side]};
    for (int k = 0; k < 3; ++k) {
      to[k]->assign(local * w, 0.0f);
      for (uint64_t l = 0; l < local; ++l) {
        const uint64_t u = held ? l : l * n + r;
        if (f_ > 0) std::copy_n(from[k][0]->values.data() + u * f_, f_, to[k]->data() + l * w);
        if (e_ > 0) std::copy_n(from[k][1]->values.data() + u * e_, e_, to[k]->data() + l * w + f_);
      }
      release(from[k][0]->values);
      release(from[k][1]->values);
    }
  }
  state.params.shard_rank = 0;
  state.params.shard_ranks = 1;  // the id tables now live here
}

void ShardedIdTables::fetch(int side, std::span<const uint32_t> slice_ids, Fetched& out) {
  const int64_t w = width();
  ShardRequest req = request_rows(slice_ids, comm_.size());
  out.ids = std::move(req.ids);
  out.slots = std::move(req.slots);
  out.uses = std::move(req.uses);
  std::vector<float> rows;
  exchanged_bytes += fetch_sharded_rows(comm_, values_[side].data(), static_cast<uint64_t>(w), out.ids, rows);
  out.gmf.resize(out.ids.size() * f_);
  out.mlp.resize(out.ids.size() * e_);
  for (size_t k = 0; k < out.ids.size(); ++k) {
    std::copy_n(rows.data() + k * w, f_, out.gmf.data() + k * f_);
    std::copy_n(rows.data() + k * w + f_, e_, out.mlp.data() + k * e_);
  }
}

void ShardedIdTables::update(int side, const Fetched& fetched, const float* d_gmf, const float* d_mlp,
                             int64_t mlp_stride, int64_t mlp_offset, const OptimizerParams& optimizer,
                             float step_size, float loss_scale, const std::vector<uint64_t>* item_counts) {
  const int n = comm_.size();
  const int64_t w = width();
  // This slice's part: each id's rows summed in batch-row order.
  std::vector<float> sums(fetched.ids.size() * w, 0.0f);
  for (size_t r = 0; r < fetched.slots.size(); ++r) {
    float* sum = sums.data() + static_cast<size_t>(fetched.slots[r]) * w;
    for (int64_t j = 0; j < f_; ++j) sum[j] += d_gmf[r * f_ + j];
    for (int64_t j = 0; j < e_; ++j) sum[f_ + j] += d_mlp[r * mlp_stride + mlp_offset + j];
  }
  std::vector<std::vector<uint32_t>> heads(n);  // (id, uses) pairs per owner
  std::vector<std::vector<float>> parts(n);
  for (size_t k = 0; k < fetched.ids.size(); ++k) {
    const int owner = static_cast<int>(fetched.ids[k] % n);
    heads[owner].push_back(fetched.ids[k]);
    heads[owner].push_back(fetched.uses[k]);
    parts[owner].insert(parts[owner].end(), sums.begin() + k * w, sums.begin() + (k + 1) * w);
  }
  std::vector<size_t> heads_from;
  const std::vector<uint32_t> got_heads = exchange(comm_, heads, heads_from);
  std::vector<size_t> parts_from(n);  // a gradient row for every (id, uses) pair
  for (int r = 0; r < n; ++r) parts_from[r] = heads_from[r] / 2 * w;
  const std::vector<float> got_parts = exchange(comm_, parts, parts_from, /*known=*/true);
  exchanged_bytes += got_heads.size() * sizeof(uint32_t) + got_parts.size() * sizeof(float);
  // The owner: each row's parts summed in rank order, uses added up for the row's L2.
  const OwnerGroups groups = group_owner_entries(got_heads, n);
  std::vector<float> summed(groups.ids.size() * w, 0.0f);
  for (size_t g = 0; g < groups.ids.size(); ++g) {
    float* sum = summed.data() + g * w;
    for (uint32_t k = groups.starts[g]; k < groups.starts[g + 1]; ++k) {
      const float* part = got_parts.data() + static_cast<size_t>(groups.order[k]) * w;
      for (int64_t j = 0; j < w; ++j) sum[j] += part[j];
    }
    // With item metadata, the id rows of items without positives stay at zero.
    if (item_counts != nullptr && (*item_counts)[groups.ids[g]] == 0) std::fill_n(sum, w, 0.0f);
  }
  const std::vector<uint32_t>& local = groups.local;
  const std::vector<uint32_t>& starts = groups.use_starts;
  cpu::sparse_update(optimizer, step_size, values_[side].data(), state0_[side].data(), state1_[side].data(), w,
                     local, summed.data(), RowL2{starts.data(), loss_scale});
  // MF's bias partner column stays at one, as in one process (the GMF columns lead each row).
  if (constant_[side] >= 0) cpu::set_column(values_[side].data(), w, local, constant_[side], 1.0f);
}

void ShardedIdTables::gather(TrainState& state) {
  const uint64_t n = static_cast<uint64_t>(comm_.size());
  const int64_t w = width();
  for (int side = 0; side < 2; ++side) {
    const SideTensors to = side_tensors(state, side);
    const std::vector<float>* from[3] = {&values_[side], &state0_[side], &state1_[side]};
    for (int k = 0; k < 3; ++k) {
      const auto* mine = reinterpret_cast<const std::byte*>(from[k]->data());
      const std::vector<std::byte> all = comm_.gather_to_root({mine, from[k]->size() * sizeof(float)});
      if (!comm_.root()) continue;
      const auto* rows = reinterpret_cast<const float*>(all.data());
      to[k][0]->values.assign(rows_[side] * f_, 0.0f);
      to[k][1]->values.assign(rows_[side] * e_, 0.0f);
      // Rank r's block holds its rows r, r + N, r + 2N, ... in order.
      uint64_t at = 0;
      for (uint64_t r = 0; r < n; ++r) {
        for (uint64_t u = r; u < rows_[side]; u += n, ++at) {
          std::copy_n(rows + at * w, f_, to[k][0]->values.data() + u * f_);
          std::copy_n(rows + at * w + f_, e_, to[k][1]->values.data() + u * e_);
        }
      }
    }
  }
}

void ShardedIdTables::copy_held_rows(TrainState& state) const {
  const int64_t w = width();
  for (int side = 0; side < 2; ++side) {
    const SideTensors to = side_tensors(state, side);
    const std::vector<float>* from[3] = {&values_[side], &state0_[side], &state1_[side]};
    const uint64_t local = local_rows(side);
    for (int k = 0; k < 3; ++k) {
      to[k][0]->values.resize(local * f_);
      to[k][1]->values.resize(local * e_);
      for (uint64_t l = 0; l < local; ++l) {
        std::copy_n(from[k]->data() + l * w, f_, to[k][0]->values.data() + l * f_);
        std::copy_n(from[k]->data() + l * w + f_, e_, to[k][1]->values.data() + l * e_);
      }
    }
  }
  state.params.shard_rank = static_cast<uint32_t>(comm_.rank());
  state.params.shard_ranks = static_cast<uint32_t>(comm_.size());
}

uint64_t ShardedIdTables::held_bytes() const {
  uint64_t floats = 0;
  for (int side = 0; side < 2; ++side) floats += values_[side].size() + state0_[side].size() + state1_[side].size();
  return floats * sizeof(float);
}

}  // namespace tastebud
