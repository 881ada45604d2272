// Embedding tables on the CPU: row gathers and the deterministic reduction of row gradients.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace tastebud::cpu {

// out[r, offset .. offset + width) = table[ids[r], 0 .. width), rows of out `out_stride` apart.
void gather_rows(const float* table, int64_t width, std::span<const uint32_t> ids, float* out,
                 int64_t out_stride, int64_t offset);

// The batch rows that touched each table row, grouped: rows[k] is the k-th distinct id in
// ascending order; its batch rows are order[starts[k] .. starts[k + 1]), ascending. Summing in this
// order makes the reduction independent of threads. Buffers keep their capacity between batches.
struct RowGroups {
  std::vector<std::pair<uint32_t, uint32_t>> pairs;  // (id, batch row), sorted
  std::vector<uint32_t> rows;
  std::vector<uint32_t> starts;

  void build(std::span<const uint32_t> ids);
  size_t size() const { return rows.size(); }

 private:
  std::vector<std::pair<uint32_t, uint32_t>> scratch_;
};

// sum[k, 0 .. width) = sum over the batch rows r of group k of grads[r * stride + offset + j].
void sum_row_gradients(const RowGroups& groups, const float* grads, int64_t stride, int64_t offset,
                       int64_t width, float* sum);

// table[row * width + column] = value for each of rows: MF's constant columns after an update.
void set_column(float* table, int64_t width, std::span<const uint32_t> rows, int64_t column, float value);

}  // namespace tastebud::cpu
