// One side's metadata (users, items, or the interactions' context) as the kernels of both
// backends read it: plain pointers into host memory on the CPU and into device memory on the GPU;
// and the one formula both backends use to add an entity's features to its representation.
#pragma once

#include <cstdint>

#include "tastebud/hd.h"

namespace tastebud {

// Entity x's feature-table rows are rows[offsets[x] .. offsets[x + 1]) with their weights (1 /
// values in the field, so multi-valued fields and text are averaged); values[x * numeric ..] are
// its standardised numbers (0 = null).
struct FeatureView {
  const uint64_t* offsets = nullptr;  // null: no feature-table rows on this side
  const uint32_t* rows = nullptr;
  const float* weights = nullptr;
  int64_t numeric = 0;
  const float* values = nullptr;
  bool empty() const { return offsets == nullptr && numeric == 0; }
};

// Entity x's feature sum added to two runs of columns, where a feature row (and a projection row)
// is w wide: a[k] += column first + k for k < na, then b[k] += column first + na + k for k < nb.
// Each column is its feature-table rows in list order, each times its weight, then its projected
// numbers. Both backends add every output in this order, so they differ only by fused multiply-
// adds: the CPU asks for the GMF part in a and the MLP part in b (the inner loops vectorize), a GPU
// thread for one column into a register.
template <class T>
TASTEBUD_HD void add_feature_columns(const FeatureView& v, uint32_t x, const T* table, const T* projection,
                                     int64_t w, int64_t first, int64_t na, T* a, int64_t nb, T* b) {
  if (v.offsets != nullptr) {
    for (uint64_t p = v.offsets[x]; p < v.offsets[x + 1]; ++p) {
      const T weight = static_cast<T>(v.weights[p]);
      const T* row = table + static_cast<int64_t>(v.rows[p]) * w + first;
      for (int64_t k = 0; k < na; ++k) a[k] += weight * row[k];
      for (int64_t k = 0; k < nb; ++k) b[k] += weight * row[na + k];
    }
  }
  for (int64_t n = 0; n < v.numeric; ++n) {
    const T value = static_cast<T>(v.values[static_cast<int64_t>(x) * v.numeric + n]);
    const T* row = projection + n * w + first;
    for (int64_t k = 0; k < na; ++k) a[k] += value * row[k];
    for (int64_t k = 0; k < nb; ++k) b[k] += value * row[na + k];
  }
}

}  // namespace tastebud
