#include "cpu/features.h"

#include <algorithm>

namespace tastebud::cpu {

void FeatureGroups::build(const FeatureView& v, std::span<const uint32_t> ids) {
  entries.clear();
  rows.clear();
  starts.clear();
  if (v.offsets != nullptr) {
    for (size_t r = 0; r < ids.size(); ++r) {
      for (uint64_t p = v.offsets[ids[r]]; p < v.offsets[ids[r] + 1]; ++p) {
        entries.push_back({v.rows[p], static_cast<uint32_t>(r), v.weights[p]});
      }
    }
  }
  // (row, batch row) pairs are distinct, so the order is total and the sums are reproducible.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.row != b.row ? a.row < b.row : a.batch_row < b.batch_row;
  });
  for (size_t k = 0; k < entries.size(); ++k) {
    if (k == 0 || entries[k].row != entries[k - 1].row) {
      rows.push_back(entries[k].row);
      starts.push_back(static_cast<uint32_t>(k));
    }
  }
  starts.push_back(static_cast<uint32_t>(entries.size()));
}

}  // namespace tastebud::cpu
