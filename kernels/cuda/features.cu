#include <algorithm>
#include <string>

#include <cub/device/device_scan.cuh>

#include "cuda/common.cuh"
#include "cuda/features.h"

namespace tastebud::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kColumnTile = 32;  // columns per block, one per lane
constexpr int kRowLanes = 8;     // rows read at once per block
constexpr int64_t kRowsPerSlice = 1024;
constexpr int64_t kMaxSlices = 2048;
constexpr int64_t kMaxGridZ = 65535;

int64_t slices_for(int64_t rows) { return row_slices(rows, kRowsPerSlice, kMaxSlices); }

// One thread per (batch row, column of the feature width): consecutive threads read consecutive
// columns of the same feature row. add_feature_columns (tastebud/feature_view.h) is the formula
// cpu::add_features runs too, so each output sees the same sequence of additions. Index: the
// thread index's type, int32_t where the count allows (index_fits_32).
template <class Index>
__global__ void add_features_kernel(FeatureView v, const uint32_t* __restrict__ ids, Index rows,
                                    const float* __restrict__ table, const float* __restrict__ projection,
                                    int64_t f, int64_t e, float* __restrict__ gmf, int64_t gmf_stride,
                                    float* __restrict__ mlp, int64_t mlp_stride, int64_t mlp_offset) {
  const Index w = static_cast<Index>(f + e), total = rows * w;
  for (Index t = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index r = t / w, j = t - r * w;
    const uint32_t x = ids[r];
    float* out = j < f ? gmf + r * gmf_stride + j : mlp + r * mlp_stride + mlp_offset + (j - f);
    float acc = *out;
    add_feature_columns<float>(v, x, table, projection, w, j, 1, &acc, 0, nullptr);
    *out = acc;
  }
}

// Block (32, 8) sums columns [32 bx, 32 bx + 32) of projection row n over the rows of slice by;
// z walks the projection rows. partial[(n * slices + slice) * w + column].
__global__ void numeric_partials_kernel(FeatureView v, const uint32_t* __restrict__ ids, int64_t rows,
                                        const float* __restrict__ d_gmf, int64_t gmf_stride,
                                        const float* __restrict__ d_mlp, int64_t mlp_stride,
                                        int64_t mlp_offset, int64_t f, int64_t e, int64_t rows_per_slice,
                                        int64_t slices, float* __restrict__ partial) {
  __shared__ float tile[kRowLanes][kColumnTile + 1];
  const int64_t w = f + e;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_slice;
  const int64_t end = begin + rows_per_slice < rows ? begin + rows_per_slice : rows;
  for (int64_t n = blockIdx.z; n < v.numeric; n += gridDim.z) {
    float total = 0.0f;
    if (col < w) {
      for (int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) {
        const float x = v.values[static_cast<int64_t>(ids[r]) * v.numeric + n];
        const float d = col < f ? d_gmf[r * gmf_stride + col] : d_mlp[r * mlp_stride + mlp_offset + (col - f)];
        total += x * d;
      }
    }
    tile[threadIdx.y][threadIdx.x] = total;
    __syncthreads();
    if (threadIdx.y == 0 && col < w) {
      float sum = 0.0f;
      for (int i = 0; i < kRowLanes; ++i) sum += tile[i][threadIdx.x];
      partial[(n * slices + blockIdx.y) * w + col] = sum;
    }
    // The tile is rewritten for the next projection row.
    __syncthreads();
  }
}

__global__ void numeric_finish_kernel(const float* __restrict__ partial, int64_t numeric, int64_t slices,
                                      int64_t w, float* __restrict__ out) {
  const int64_t total = numeric * w;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = t / w, col = t - n * w;
    float sum = 0.0f;
    for (int64_t s = 0; s < slices; ++s) sum += partial[(n * slices + s) * w + col];
    out[t] = sum;
  }
}

// counts[r] = feature rows of batch row r's entity; counts[rows] = 0, so that the exclusive scan
// over rows + 1 values ends with the entry total.
__global__ void entry_counts_kernel(const uint64_t* __restrict__ offsets, const uint32_t* __restrict__ ids,
                                    int64_t rows, uint32_t* __restrict__ counts) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r <= rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    counts[r] = r < rows ? static_cast<uint32_t>(offsets[ids[r] + 1] - offsets[ids[r]]) : 0u;
  }
}

// Batch row r writes its entity's entries at starts[r]: entries come out in batch-row order, which
// the stable sort keeps within each table row.
__global__ void expand_entries_kernel(FeatureView v, const uint32_t* __restrict__ ids, int64_t rows,
                                      const uint32_t* __restrict__ starts, uint32_t* __restrict__ keys,
                                      uint32_t* __restrict__ entry_rows, float* __restrict__ entry_weights) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t first = v.offsets[ids[r]], last = v.offsets[ids[r] + 1];
    int64_t at = starts[r];
    for (uint64_t p = first; p < last; ++p, ++at) {
      keys[at] = v.rows[p];
      entry_rows[at] = static_cast<uint32_t>(r);
      entry_weights[at] = v.weights[p];
    }
  }
}

// The slots past the real entries get the padding id, which sorts after every real row.
__global__ void pad_entries_kernel(const uint32_t* __restrict__ total, int64_t capacity, uint32_t padding,
                                   uint32_t* __restrict__ keys) {
  const int64_t used = *total;
  for (int64_t t = used + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < capacity;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys[t] = padding;
  }
}

// One warp per group; lane j sums columns j, j + 32, ... over the group's entries in batch order.
// A category's group holds a share of the whole batch (thousands of entries), and each entry is a
// chain of three dependent loads (order, its batch row, the gradient): the lanes load 32 entries'
// rows and weights at once and pass them round by shuffles, and the gradient loads of several
// entries are in flight together. The adds stay one entry after another, in batch order.
__global__ void sum_feature_gradients_kernel(const uint32_t* __restrict__ order,
                                             const uint32_t* __restrict__ starts,
                                             const int* __restrict__ num_groups,
                                             const uint32_t* __restrict__ entry_rows,
                                             const float* __restrict__ entry_weights,
                                             const float* __restrict__ d_gmf, int64_t gmf_stride,
                                             const float* __restrict__ d_mlp, int64_t mlp_stride,
                                             int64_t mlp_offset, int64_t f, int64_t e,
                                             float* __restrict__ sum) {
  const int groups = *num_groups;
  const int64_t w = f + e;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t k = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; k < groups;
       k += warps) {
    const uint32_t begin = starts[k], end = starts[k + 1];
    // Warp-uniform bounds: every lane takes part in every shuffle.
    for (int64_t j0 = 0; j0 < w; j0 += 32) {
      const int64_t j = j0 + lane;
      const bool mine = j < w;
      const float* column = !mine ? nullptr : j < f ? d_gmf + j : d_mlp + mlp_offset + (j - f);
      const int64_t stride = j < f ? gmf_stride : mlp_stride;
      float total = 0.0f;
      for (uint32_t p0 = begin; p0 < end; p0 += 32) {
        const uint32_t n = end - p0 < 32u ? end - p0 : 32u;
        uint32_t my_row = 0;
        float my_weight = 0.0f;
        if (static_cast<uint32_t>(lane) < n) {
          const uint32_t entry = order[p0 + lane];
          my_row = entry_rows[entry];
          my_weight = entry_weights[entry];
        }
#pragma unroll 8
        for (uint32_t i = 0; i < n; ++i) {
          const uint32_t r = __shfl_sync(0xffffffffu, my_row, static_cast<int>(i));
          const float weight = __shfl_sync(0xffffffffu, my_weight, static_cast<int>(i));
          if (mine) total += weight * column[static_cast<int64_t>(r) * stride];
        }
      }
      if (mine) sum[k * w + j] = total;
    }
  }
}

__global__ void drop_untrained_kernel(const uint32_t* __restrict__ rows, const int* __restrict__ num_rows,
                                      const unsigned char* __restrict__ trained, int64_t width,
                                      float* __restrict__ sum) {
  const int64_t total = static_cast<int64_t>(*num_rows) * width;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!trained[rows[t / width]]) sum[t] = 0.0f;
  }
}

}  // namespace

void add_features(const FeatureView& v, const uint32_t* d_ids, int64_t rows, const float* d_table,
                  const float* d_projection, int64_t f, int64_t e, float* d_gmf, int64_t gmf_stride,
                  float* d_mlp, int64_t mlp_stride, int64_t mlp_offset, StreamHandle stream) {
  if (rows == 0 || f + e == 0 || v.empty()) return;
  TB_CHECK(v.offsets == nullptr || d_table != nullptr, "add_features: feature rows without a feature table");
  TB_CHECK(v.numeric == 0 || (v.values != nullptr && d_projection != nullptr),
           "add_features: numbers without a projection");
  TB_CHECK((f == 0 || d_gmf != nullptr) && (e == 0 || d_mlp != nullptr), "add_features: null output");
  const unsigned grid = grid_for(rows * (f + e), kBlock);
  if (index_fits_32(rows * (f + e))) {
    add_features_kernel<int32_t><<<grid, kBlock, 0, stream>>>(v, d_ids, static_cast<int32_t>(rows), d_table,
                                                              d_projection, f, e, d_gmf, gmf_stride, d_mlp,
                                                              mlp_stride, mlp_offset);
  } else {
    add_features_kernel<int64_t><<<grid, kBlock, 0, stream>>>(v, d_ids, rows, d_table, d_projection, f, e, d_gmf,
                                                              gmf_stride, d_mlp, mlp_stride, mlp_offset);
  }
  TB_CUDA_LAUNCH_CHECK("add_features_kernel", stream);
}

int64_t numeric_gradient_partials(int64_t rows, int64_t numeric, int64_t width) {
  return std::max<int64_t>(numeric * slices_for(rows) * width, 1);
}

void numeric_gradient(const FeatureView& v, const uint32_t* d_ids, int64_t rows, const float* d_gmf,
                      int64_t gmf_stride, const float* d_mlp, int64_t mlp_stride, int64_t mlp_offset,
                      int64_t f, int64_t e, float* d_partial, float* d_grad, StreamHandle stream) {
  const int64_t w = f + e;
  if (v.numeric == 0 || w == 0) return;
  TB_CHECK(v.values != nullptr && d_partial != nullptr && d_grad != nullptr, "numeric_gradient: null operand");
  TB_CHECK((f == 0 || d_gmf != nullptr) && (e == 0 || d_mlp != nullptr), "numeric_gradient: null gradient");
  if (rows == 0) {
    fill_zero(d_grad, sizeof(float) * static_cast<size_t>(v.numeric * w), stream);
    return;
  }
  const int64_t slices = slices_for(rows);
  const int64_t rows_per_slice = (rows + slices - 1) / slices;
  const dim3 grid(static_cast<unsigned>((w + kColumnTile - 1) / kColumnTile), static_cast<unsigned>(slices),
                  static_cast<unsigned>(std::min(v.numeric, kMaxGridZ)));
  numeric_partials_kernel<<<grid, dim3(kColumnTile, kRowLanes), 0, stream>>>(
      v, d_ids, rows, d_gmf, gmf_stride, d_mlp, mlp_stride, mlp_offset, f, e, rows_per_slice, slices, d_partial);
  TB_CUDA_LAUNCH_CHECK("numeric_partials_kernel", stream);
  numeric_finish_kernel<<<grid_for(v.numeric * w, kBlock), kBlock, 0, stream>>>(d_partial, v.numeric, slices, w,
                                                                               d_grad);
  TB_CUDA_LAUNCH_CHECK("numeric_finish_kernel", stream);
}

int64_t FeatureGroups::max_groups_for(int64_t rows, uint64_t table_rows, uint32_t max_per_entity) {
  const uint64_t entries = static_cast<uint64_t>(rows) * max_per_entity;
  return static_cast<int64_t>(std::min(entries, table_rows));
}

double FeatureGroups::bytes_for(int64_t max_rows, uint32_t max_per_entity) {
  const double entries = static_cast<double>(max_rows) * max_per_entity;
  // Per entry: keys, batch rows and weights here, six uint32 arrays in the RowGroups over them and
  // the sort's own copy of keys and values in its scratch; two arrays per batch row.
  return entries * (9 * 4 + 8 * 1.25) + 8.0 * (max_rows + 1.0);
}

FeatureGroups::FeatureGroups(int64_t max_rows, uint64_t table_rows, uint32_t max_per_entity)
    : max_rows_(max_rows), table_rows_(table_rows), max_per_entity_(max_per_entity) {
  TB_CHECK(max_rows > 0 && max_rows < (1ll << 31), "FeatureGroups: batch rows must be in [1, 2^31)");
  TB_CHECK(table_rows > 0 && table_rows < UINT32_MAX, "FeatureGroups: the feature table needs [1, 2^32 - 1) rows");
  const uint64_t entries = static_cast<uint64_t>(max_rows) * max_per_entity;
  TB_CHECK(entries < (1ull << 31),
           "metadata: a batch of " + std::to_string(max_rows) + " rows can list up to " + std::to_string(entries) +
               " feature rows (" + std::to_string(max_per_entity) +
               " for one entity), more than the CUDA backend groups at once (2^31 - 1); lower `batch_size`");
  max_entries_ = static_cast<int64_t>(entries);
  const size_t n = static_cast<size_t>(max_rows);
  entry_counts_.resize(n + 1);
  entry_starts_.resize(n + 1);
  size_t scan_bytes = 0;
  TB_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, entry_counts_.data(), entry_starts_.data(),
                                              static_cast<int>(max_rows + 1)));
  temp_.resize(std::max<size_t>(scan_bytes, 1));
  const size_t m = static_cast<size_t>(max_entries_);
  keys_.resize(m);
  entry_rows_.resize(m);
  entry_weights_.resize(m);
  // Ids 0 .. table_rows: the feature rows and the padding id.
  groups_ = std::make_unique<RowGroups>(std::max<int64_t>(max_entries_, 1), static_cast<uint32_t>(table_rows + 1));
}

void FeatureGroups::build(const FeatureView& v, const uint32_t* d_ids, int64_t rows, StreamHandle stream) {
  TB_CHECK(rows > 0 && rows <= max_rows_, "FeatureGroups::build: more rows than allocated");
  rows_ = rows;
  const int64_t capacity = rows * static_cast<int64_t>(max_per_entity_);
  if (capacity == 0) {
    groups_->build(keys_.data(), 0, stream);
    return;
  }
  TB_CHECK(v.offsets != nullptr && v.rows != nullptr && v.weights != nullptr,
           "FeatureGroups::build: the view has no feature rows");
  entry_counts_kernel<<<grid_for(rows + 1, kBlock), kBlock, 0, stream>>>(v.offsets, d_ids, rows,
                                                                        entry_counts_.data());
  TB_CUDA_LAUNCH_CHECK("entry_counts_kernel", stream);
  size_t bytes = temp_.size();
  TB_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp_.data(), bytes, entry_counts_.data(), entry_starts_.data(),
                                              static_cast<int>(rows + 1), stream));
  TB_CUDA_LAUNCH_CHECK("DeviceScan::ExclusiveSum (entries per row)", stream);
  expand_entries_kernel<<<grid_for(rows, kBlock), kBlock, 0, stream>>>(
      v, d_ids, rows, entry_starts_.data(), keys_.data(), entry_rows_.data(), entry_weights_.data());
  TB_CUDA_LAUNCH_CHECK("expand_entries_kernel", stream);
  // The entry count stays on the device: the slots past it get the padding id, which the grouping
  // sorts last and does not count.
  const uint32_t padding = static_cast<uint32_t>(table_rows_);
  pad_entries_kernel<<<grid_for(capacity, kBlock), kBlock, 0, stream>>>(entry_starts_.data() + rows, capacity,
                                                                        padding, keys_.data());
  TB_CUDA_LAUNCH_CHECK("pad_entries_kernel", stream);
  groups_->build(keys_.data(), capacity, stream, padding);
}

void sum_feature_gradients(const FeatureGroups& groups, const float* d_gmf, int64_t gmf_stride,
                           const float* d_mlp, int64_t mlp_stride, int64_t mlp_offset, int64_t f,
                           int64_t e, float* d_sum, StreamHandle stream) {
  const int64_t max_groups = groups.max_groups();
  if (f + e == 0 || max_groups == 0) return;
  TB_CHECK((f == 0 || d_gmf != nullptr) && (e == 0 || d_mlp != nullptr) && d_sum != nullptr,
           "sum_feature_gradients: null operand");
  sum_feature_gradients_kernel<<<grid_for(max_groups * 32, kBlock), kBlock, 0, stream>>>(
      groups.order(), groups.starts(), groups.num_groups(), groups.entry_rows(), groups.entry_weights(), d_gmf,
      gmf_stride, d_mlp, mlp_stride, mlp_offset, f, e, d_sum);
  TB_CUDA_LAUNCH_CHECK("sum_feature_gradients_kernel", stream);
}

void drop_untrained_gradients(const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                              const unsigned char* d_trained, int64_t width, float* d_sum,
                              StreamHandle stream) {
  if (width == 0 || max_rows == 0) return;
  drop_untrained_kernel<<<grid_for(max_rows * width, kBlock), kBlock, 0, stream>>>(d_rows, d_num_rows, d_trained,
                                                                                  width, d_sum);
  TB_CUDA_LAUNCH_CHECK("drop_untrained_kernel", stream);
}

}  // namespace tastebud::cuda
