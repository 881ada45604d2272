// Top-k selection on the CPU: a partial selection, never a sort of the whole catalog.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tastebud::cpu {

// The indices of the k highest scores, best first; equal scores are ordered by index.
// NaN scores are never selected.
void top_k(std::span<const float> scores, size_t k, std::vector<uint32_t>& out);

}  // namespace tastebud::cpu
