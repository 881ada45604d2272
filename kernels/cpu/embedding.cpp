#include "cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "cpu/radix_sort.h"

namespace tastebud::cpu {

namespace {

// Rows are scattered, and the lines of a row another core just updated take a long trip: ask for
// them a few rows ahead.
constexpr size_t kPrefetchRows = 8;

inline void prefetch_row(const float* row, int64_t width) {
  for (int64_t j = 0; j < width; j += 16) __builtin_prefetch(row + j);
}

}  // namespace

void gather_rows(const float* table, int64_t width, std::span<const uint32_t> ids, float* out,
                 int64_t out_stride, int64_t offset) {
  for (size_t r = 0; r < ids.size(); ++r) {
    if (r + kPrefetchRows < ids.size()) prefetch_row(table + static_cast<int64_t>(ids[r + kPrefetchRows]) * width, width);
    std::memcpy(out + r * out_stride + offset, table + static_cast<int64_t>(ids[r]) * width,
                sizeof(float) * width);
  }
}

void RowGroups::build(std::span<const uint32_t> ids) {
  pairs.resize(ids.size());
  uint32_t max_id = 0;
  for (size_t r = 0; r < ids.size(); ++r) {
    pairs[r] = {ids[r], static_cast<uint32_t>(r)};
    max_id = std::max(max_id, ids[r]);
  }
  // Pairs come in batch-row order: sorted stably by id they are sorted by (id, batch row).
  radix_sort_stable(pairs, scratch_, max_id, [](const std::pair<uint32_t, uint32_t>& p) { return p.first; });
  rows.clear();
  starts.clear();
  for (size_t k = 0; k < pairs.size(); ++k) {
    if (k == 0 || pairs[k].first != pairs[k - 1].first) {
      rows.push_back(pairs[k].first);
      starts.push_back(static_cast<uint32_t>(k));
    }
  }
  starts.push_back(static_cast<uint32_t>(pairs.size()));
}

void sum_row_gradients(const RowGroups& groups, const float* grads, int64_t stride, int64_t offset,
                       int64_t width, float* sum) {
  // Small batches are summed on one thread: forking costs more than the sums.
  const uint32_t pairs = static_cast<uint32_t>(groups.pairs.size());
#pragma omp parallel for schedule(static) if (groups.pairs.size() * width > (1 << 15))
  for (int64_t k = 0; k < static_cast<int64_t>(groups.size()); ++k) {
    float* out = sum + k * width;
    std::fill(out, out + width, 0.0f);
    for (uint32_t p = groups.starts[k]; p < groups.starts[k + 1]; ++p) {
      if (p + kPrefetchRows < pairs) {
        prefetch_row(grads + static_cast<int64_t>(groups.pairs[p + kPrefetchRows].second) * stride + offset, width);
      }
      const float* g = grads + static_cast<int64_t>(groups.pairs[p].second) * stride + offset;
      for (int64_t j = 0; j < width; ++j) out[j] += g[j];
    }
  }
}

void set_column(float* table, int64_t width, std::span<const uint32_t> rows, int64_t column, float value) {
  for (uint32_t row : rows) table[static_cast<int64_t>(row) * width + column] = value;
}

}  // namespace tastebud::cpu
