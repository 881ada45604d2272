#include <algorithm>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_run_length_encode.cuh>
#include <cub/device/device_scan.cuh>

#include "cuda/common.cuh"
#include "cuda/embedding.h"

namespace tastebud::cuda {
namespace {

// One thread per float4 of the output: consecutive threads read consecutive 16 bytes of a row.
// One thread per element (a float, or a float4: consecutive threads read consecutive 16 bytes of
// a row). T: float or float4; strides and offsets in T.
template <class T>
__global__ void gather_columns_kernel(const T* __restrict__ table, int64_t table_stride, int64_t table_offset,
                                      int64_t width, const uint32_t* __restrict__ ids, int64_t rows,
                                      T* __restrict__ out, int64_t stride, int64_t offset) {
  const int64_t total = rows * width;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / width, j = t - r * width;
    out[r * stride + offset + j] = __ldg(table + static_cast<int64_t>(ids[r]) * table_stride + table_offset + j);
  }
}

__global__ void set_column_kernel(float* __restrict__ table, int64_t width, const uint32_t* __restrict__ rows,
                                  const int* __restrict__ num_rows, int64_t column, float value) {
  const int64_t count = *num_rows;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < count;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    table[static_cast<int64_t>(rows[k]) * width + column] = value;
  }
}

// The padding id is the largest, so its group, when there is one, is the last.
__global__ void drop_padding_group_kernel(const uint32_t* __restrict__ unique, uint32_t padding_id, int* num_groups) {
  const int n = *num_groups;
  if (n > 0 && unique[n - 1] == padding_id) *num_groups = n - 1;
}

__global__ void set_count_kernel(int* count, int value) { *count = value; }

__global__ void iota_kernel(uint32_t* out, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = static_cast<uint32_t>(i);
  }
}

// One warp per group; lane j sums columns j, j + 32, ... over the group's rows in batch order.
__global__ void sum_row_gradients_kernel(const uint32_t* __restrict__ order,
                                         const uint32_t* __restrict__ starts,
                                         const int* __restrict__ num_groups,
                                         const float* __restrict__ grads, int64_t stride,
                                         int64_t offset, int64_t width, float* __restrict__ sum,
                                         int64_t sum_stride, int64_t sum_offset) {
  const int groups = *num_groups;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t k = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; k < groups;
       k += warps) {
    const uint32_t begin = starts[k], end = starts[k + 1];
    for (int64_t j = lane; j < width; j += 32) {
      float total = 0.0f;
      // Unrolled so the loads of several rows are in flight at once; the adds stay in order.
#pragma unroll 4
      for (uint32_t p = begin; p < end; ++p) {
        total += grads[static_cast<int64_t>(order[p]) * stride + offset + j];
      }
      sum[k * sum_stride + sum_offset + j] = total;
    }
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

int bits_for(uint32_t num_ids) {
  int bits = 1;
  while (bits < 32 && (num_ids - 1) >> bits) ++bits;
  return bits;
}

}  // namespace

void set_column(float* d_table, int64_t width, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                int64_t column, float value, StreamHandle stream) {
  if (max_rows == 0) return;
  constexpr int kBlock = 256;
  set_column_kernel<<<grid_for(max_rows, kBlock), kBlock, 0, stream>>>(d_table, width, d_rows, d_num_rows, column, value);
  TB_CUDA_LAUNCH_CHECK("set_column_kernel", stream);
}

void gather_rows(const float* d_table, int64_t width, const uint32_t* d_ids, int64_t rows,
                 float* d_out, int64_t out_stride, int64_t offset, StreamHandle stream) {
  gather_columns(d_table, width, 0, width, d_ids, rows, d_out, out_stride, offset, stream);
}

void gather_columns(const float* d_table, int64_t table_stride, int64_t table_offset, int64_t width,
                    const uint32_t* d_ids, int64_t rows, float* d_out, int64_t out_stride, int64_t offset,
                    StreamHandle stream) {
  if (rows == 0 || width == 0) return;
  constexpr int kBlock = 256;
  const bool by4 = width % 4 == 0 && table_stride % 4 == 0 && table_offset % 4 == 0 && out_stride % 4 == 0 &&
                   offset % 4 == 0 && aligned16(d_table) && aligned16(d_out);
  if (by4) {
    gather_columns_kernel<<<grid_for(rows * width / 4, kBlock), kBlock, 0, stream>>>(
        reinterpret_cast<const float4*>(d_table), table_stride / 4, table_offset / 4, width / 4, d_ids, rows,
        reinterpret_cast<float4*>(d_out), out_stride / 4, offset / 4);
  } else {
    gather_columns_kernel<<<grid_for(rows * width, kBlock), kBlock, 0, stream>>>(
        d_table, table_stride, table_offset, width, d_ids, rows, d_out, out_stride, offset);
  }
  TB_CUDA_LAUNCH_CHECK("gather_columns_kernel", stream);
}

RowGroups::RowGroups(int64_t max_rows, uint32_t num_ids) : max_rows_(max_rows) {
  TB_CHECK(max_rows > 0 && max_rows < (1ll << 31), "RowGroups: batch rows must be in [1, 2^31)");
  TB_CHECK(num_ids > 0, "RowGroups: the table has no rows");
  end_bit_ = bits_for(num_ids);
  const size_t n = static_cast<size_t>(max_rows);
  iota_.resize(n);
  sorted_ids_.resize(n);
  sorted_rows_.resize(n);
  unique_.resize(n);
  counts_.resize(n + 1);
  starts_.resize(n + 1);
  num_groups_.resize(1);
  iota_kernel<<<grid_for(max_rows, 256), 256>>>(iota_.data(), max_rows);
  TB_CUDA_LAUNCH_CHECK("iota_kernel", nullptr);
  TB_CUDA_CHECK(cudaDeviceSynchronize());
  const int items = static_cast<int>(max_rows);
  size_t sort_bytes = 0, encode_bytes = 0, scan_bytes = 0;
  TB_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, sorted_ids_.data(), sorted_ids_.data(),
                                                iota_.data(), sorted_rows_.data(), items, 0, end_bit_));
  TB_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(nullptr, encode_bytes, sorted_ids_.data(), unique_.data(),
                                                   counts_.data(), num_groups_.data(), items));
  TB_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts_.data(), starts_.data(), items + 1));
  temp_.resize(std::max({sort_bytes, encode_bytes, scan_bytes, size_t{1}}));
}

void RowGroups::build(const uint32_t* d_ids, int64_t rows, StreamHandle stream, uint32_t padding_id) {
  TB_CHECK(rows >= 0 && rows <= max_rows_, "RowGroups::build: more rows than allocated");
  rows_ = rows;
  if (rows == 0) {
    num_groups_.zero(stream);
    return;
  }
  const int items = static_cast<int>(rows);
  size_t bytes = temp_.size();
  TB_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp_.data(), bytes, d_ids, sorted_ids_.data(), iota_.data(),
                                                sorted_rows_.data(), items, 0, end_bit_, stream));
  TB_CUDA_LAUNCH_CHECK("DeviceRadixSort::SortPairs (row ids)", stream);
  // Counts past the last group are scanned too (starts[groups] must be the row count); zero them.
  fill_zero(counts_.data(), counts_.bytes(), stream);
  bytes = temp_.size();
  TB_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(temp_.data(), bytes, sorted_ids_.data(), unique_.data(),
                                                   counts_.data(), num_groups_.data(), items, stream));
  TB_CUDA_LAUNCH_CHECK("DeviceRunLengthEncode::Encode", stream);
  bytes = temp_.size();
  TB_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp_.data(), bytes, counts_.data(), starts_.data(), items + 1,
                                              stream));
  TB_CUDA_LAUNCH_CHECK("DeviceScan::ExclusiveSum", stream);
  if (padding_id != UINT32_MAX) {
    drop_padding_group_kernel<<<1, 1, 0, stream>>>(unique_.data(), padding_id, num_groups_.data());
    TB_CUDA_LAUNCH_CHECK("drop_padding_group_kernel", stream);
  }
}

void RowGroups::assign(std::span<const uint32_t> rows, std::span<const uint32_t> order,
                       std::span<const uint32_t> starts, StreamHandle stream) {
  TB_CHECK(starts.size() == rows.size() + 1 && order.size() <= static_cast<size_t>(max_rows_) &&
               rows.size() <= order.size() && (rows.empty() || starts.back() == order.size()),
           "RowGroups::assign: groups that do not cover their rows");
  rows_ = static_cast<int64_t>(order.size());
  copy_to_device_async(unique_.data(), rows.data(), rows.size_bytes(), stream);
  copy_to_device_async(sorted_rows_.data(), order.data(), order.size_bytes(), stream);
  copy_to_device_async(starts_.data(), starts.data(), starts.size_bytes(), stream);
  set_count_kernel<<<1, 1, 0, stream>>>(num_groups_.data(), static_cast<int>(rows.size()));
  TB_CUDA_LAUNCH_CHECK("set_count_kernel", stream);
}

void sum_row_gradients(const RowGroups& groups, const float* d_grads, int64_t stride,
                       int64_t offset, int64_t width, float* d_sum, StreamHandle stream) {
  sum_row_gradients(groups, d_grads, stride, offset, width, d_sum, width, 0, stream);
}

void sum_row_gradients(const RowGroups& groups, const float* d_grads, int64_t stride, int64_t offset,
                       int64_t width, float* d_sum, int64_t sum_stride, int64_t sum_offset, StreamHandle stream) {
  if (width == 0 || groups.max_groups() == 0) return;
  constexpr int kBlock = 256;
  sum_row_gradients_kernel<<<grid_for(groups.max_groups() * 32, kBlock), kBlock, 0, stream>>>(
      groups.order(), groups.starts(), groups.num_groups(), d_grads, stride, offset, width, d_sum, sum_stride,
      sum_offset);
  TB_CUDA_LAUNCH_CHECK("sum_row_gradients_kernel", stream);
}

}  // namespace tastebud::cuda
