// GpuScorer in a build without CUDA: it says so, and the constructor throws.
#include "tastebud/engine/gpu_scorer.h"
#include "tastebud/error.h"

namespace tastebud {

namespace {
constexpr const char* kNoCuda = "this build has no GPU support";
}

struct GpuScorer::Impl {};

bool gpu_scorer_available(std::string* reason) {
  if (reason) *reason = kNoCuda;
  return false;
}

GpuScorer::GpuScorer(const ModelParams&) {
  throw Error(std::string("GPU scorer: ") + kNoCuda +
              " (rebuild with -DTASTEBUD_CUDA=ON, or use the CPU)");
}
GpuScorer::~GpuScorer() = default;

uint32_t GpuScorer::num_items() const { return 0; }
uint32_t GpuScorer::num_users() const { return 0; }
uint32_t GpuScorer::users_per_chunk() const { return 0; }
uint32_t GpuScorer::max_k() { return 0; }
std::string GpuScorer::describe() const { return kNoCuda; }

void GpuScorer::top_k(std::span<const uint32_t>, std::span<const float>, std::span<const uint64_t>,
                      std::span<const uint32_t>, std::span<const uint8_t>, uint32_t,
                      std::span<uint32_t>, std::span<float>) {
  throw Error(std::string("GPU scorer: ") + kNoCuda);
}

void GpuScorer::score_users(std::span<const uint32_t>, std::span<const float>, std::span<float>) {
  throw Error(std::string("GPU scorer: ") + kNoCuda);
}

}  // namespace tastebud
