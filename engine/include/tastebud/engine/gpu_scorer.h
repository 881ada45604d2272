// Exact top-K over the whole catalog for many users at once, on the GPU: the batch-inference twin
// of Scorer (same logits within float rounding, same order as cpu::top_k). The model is uploaded
// once; users are scored in chunks against the whole catalog and only each user's top K comes
// back to the host. Plain C++: no CUDA header, so CPU-only programs and tests compile against it;
// in a build without CUDA the constructor throws and gpu_scorer_available() says why.
// One caller at a time: the scorer owns one stream and its scratch buffers.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tastebud/engine/model.h"

namespace tastebud {

// True when a GPU scorer can be built here; otherwise `reason` says why not (no CUDA in this
// build, no driver, no device).
bool gpu_scorer_available(std::string* reason);

class GpuScorer {
 public:
  // Uploads an id-only model, as Scorer's first constructor takes (a model with metadata: fold it
  // first with fold_features). Throws tastebud::Error when no usable GPU exists or the model and
  // one user's scores do not fit in its memory.
  explicit GpuScorer(const ModelParams& params);
  ~GpuScorer();
  GpuScorer(const GpuScorer&) = delete;
  GpuScorer& operator=(const GpuScorer&) = delete;

  uint32_t num_items() const;
  uint32_t num_users() const;
  // Users scored per pass: bounded by the device memory (see gpu_scorer.cpp).
  uint32_t users_per_chunk() const;
  // The largest k top_k accepts.
  static uint32_t max_k();
  // One line for logs: the device, the kernel path, the chunk size.
  std::string describe() const;

  // For each users[u]: the k highest-logit items, best first, equal logits by lower item index
  // (cpu::top_k's order), skipping exclude_items[exclude_offsets[u] .. exclude_offsets[u + 1])
  // (exclude_offsets empty: nothing excluded; else users.size() + 1 entries) and, when `allowed`
  // is non-empty (num_items() bytes), the items with allowed[i] == 0. contexts: empty, or
  // users.size() x mlp_embedding() floats added to each user's MLP embedding before the first
  // layer. With fewer than k items left the row ends in item UINT32_MAX, score -inf.
  // items, scores: users.size() * k each, row-major. Logits, not probabilities.
  void top_k(std::span<const uint32_t> users, std::span<const float> contexts,
             std::span<const uint64_t> exclude_offsets, std::span<const uint32_t> exclude_items,
             std::span<const uint8_t> allowed, uint32_t k, std::span<uint32_t> items,
             std::span<float> scores);

  // Every logit of a few users (tests, diagnostics): out[u * num_items() + i].
  void score_users(std::span<const uint32_t> users, std::span<const float> contexts,
                   std::span<float> out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tastebud
