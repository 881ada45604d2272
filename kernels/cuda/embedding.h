// Embedding tables on the GPU: row gathers and the deterministic reduction of row gradients; the
// twin of cpu/embedding.h.
#pragma once

#include <cstdint>
#include <span>

#include "cuda/common.h"

namespace tastebud::cuda {

// out[r, offset .. offset + width) = table[ids[r], 0 .. width), rows of out `out_stride` apart.
// 16-byte loads and stores when width, stride, offset and pointers allow it.
void gather_rows(const float* d_table, int64_t width, const uint32_t* d_ids, int64_t rows,
                 float* d_out, int64_t out_stride, int64_t offset, StreamHandle stream);
// The same from rows of a wider table: out[r, offset + j] = table[ids[r] * table_stride +
// table_offset + j] for j < width.
void gather_columns(const float* d_table, int64_t table_stride, int64_t table_offset, int64_t width,
                    const uint32_t* d_ids, int64_t rows, float* d_out, int64_t out_stride, int64_t offset,
                    StreamHandle stream);

// The batch rows that touched each table row, grouped, as cpu::RowGroups: after build(), group k
// (k < *num_groups(), a count that stays on the device) is table row rows()[k], touched by batch
// rows order()[starts()[k] .. starts()[k + 1]), ascending. The ids are sorted with CUB's stable
// radix sort, so no float atomics and no dependence on the launch layout. Ids equal to
// padding_id (when given, it must be num_ids - 1, the largest) fill unused slots: their group,
// which sorts last, is not counted. No rows: no groups.
class RowGroups {
 public:
  explicit RowGroups(int64_t max_rows, uint32_t num_ids);
  void build(const uint32_t* d_ids, int64_t rows, StreamHandle stream, uint32_t padding_id = UINT32_MAX);
  // Groups made on the host (group k: table row rows[k], entries order[starts[k] .. starts[k + 1])),
  // uploaded: the owner's side of a sharded table's exchange (engine/src/device_shards.cpp). The
  // three spans must be page-locked (PinnedBuffer) and stay unchanged until the stream has passed
  // the copies: nothing waits for them.
  void assign(std::span<const uint32_t> rows, std::span<const uint32_t> order, std::span<const uint32_t> starts,
              StreamHandle stream);

  int64_t max_groups() const { return rows_; }  // an upper bound known on the host
  const uint32_t* rows() const { return unique_.data(); }
  const uint32_t* order() const { return sorted_rows_.data(); }
  const uint32_t* starts() const { return starts_.data(); }
  const int* num_groups() const { return num_groups_.data(); }

 private:
  int64_t max_rows_ = 0, rows_ = 0;
  int end_bit_ = 32;
  DeviceBuffer<uint32_t> iota_, sorted_ids_, sorted_rows_, unique_, counts_, starts_;
  DeviceBuffer<int> num_groups_;
  DeviceBuffer<unsigned char> temp_;
};

// sum[k, 0 .. width) = sum over the batch rows r of group k, in ascending order, of
// grads[r * stride + offset + j]: the CPU's summation order, so the sums match it exactly.
// d_table[rows[k] * width + column] = value for k < *num_rows (a count on the device, at most
// max_rows): MF's constant columns after an update, as cpu::set_column.
void set_column(float* d_table, int64_t width, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                int64_t column, float value, StreamHandle stream);

void sum_row_gradients(const RowGroups& groups, const float* d_grads, int64_t stride,
                       int64_t offset, int64_t width, float* d_sum, StreamHandle stream);
// The same into columns [sum_offset, sum_offset + width) of rows sum_stride apart.
void sum_row_gradients(const RowGroups& groups, const float* d_grads, int64_t stride, int64_t offset,
                       int64_t width, float* d_sum, int64_t sum_stride, int64_t sum_offset, StreamHandle stream);

}  // namespace tastebud::cuda
