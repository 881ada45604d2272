#include "cpu/features.h"

#include <algorithm>

#include "cpu/radix_sort.h"

namespace tastebud::cpu {

void FeatureGroups::build(const FeatureView& v, std::span<const uint32_t> ids) {
  entries.clear();
  rows.clear();
  starts.clear();
  uint32_t max_row = 0;
  if (v.offsets != nullptr) {
    for (size_t r = 0; r < ids.size(); ++r) {
      for (uint64_t p = v.offsets[ids[r]]; p < v.offsets[ids[r] + 1]; ++p) {
        entries.push_back({v.rows[p], static_cast<uint32_t>(r), v.weights[p]});
        max_row = std::max(max_row, v.rows[p]);
      }
    }
  }
  // Entries come in batch-row order and (row, batch row) pairs are distinct, so a stable sort by
  // row gives the total (row, batch row) order, and the sums are reproducible.
  radix_sort_stable(entries, scratch_, max_row, [](const Entry& e) { return e.row; });
  for (size_t k = 0; k < entries.size(); ++k) {
    if (k == 0 || entries[k].row != entries[k - 1].row) {
      rows.push_back(entries[k].row);
      starts.push_back(static_cast<uint32_t>(k));
    }
  }
  starts.push_back(static_cast<uint32_t>(entries.size()));
}

}  // namespace tastebud::cpu
