#include "cpu/topk.h"

#include <algorithm>
#include <cmath>
#include <queue>

namespace tastebud::cpu {

void top_k(std::span<const float> scores, size_t k, std::vector<uint32_t>& out) {
  out.clear();
  if (k == 0) return;
  // A min-heap of the best k seen so far; "better" = higher score, then lower index.
  auto better = [&](uint32_t a, uint32_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  };
  std::vector<uint32_t>& heap = out;
  heap.reserve(k);
  for (uint32_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) continue;
    if (heap.size() < k) {
      heap.push_back(i);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(i, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = i;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort_heap(heap.begin(), heap.end(), better);
}

}  // namespace tastebud::cpu
