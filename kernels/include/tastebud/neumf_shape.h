// The NeuMF model's shape as both backends' kernels see it.
#pragma once

#include <cstdint>
#include <vector>

namespace tastebud {

struct NeuMFShape {
  int64_t factors = 0;          // GMF width; 0 when there is no GMF branch
  std::vector<int64_t> layers;  // MLP widths; empty when there is no MLP branch
  int64_t mlp_out() const { return layers.empty() ? 0 : layers.back(); }
  int64_t head_inputs() const { return factors + mlp_out(); }
  int64_t dense_layers() const { return layers.empty() ? 0 : static_cast<int64_t>(layers.size()) - 1; }
};

}  // namespace tastebud
