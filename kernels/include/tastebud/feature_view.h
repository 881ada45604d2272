// One side's metadata (users, items, or the interactions' context) as the kernels of both
// backends read it: plain pointers into host memory on the CPU and into device memory on the GPU.
#pragma once

#include <cstdint>

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

}  // namespace tastebud
