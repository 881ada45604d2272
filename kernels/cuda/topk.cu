#include <cstdint>

#include <cub/block/block_reduce.cuh>

#include "cuda/common.cuh"
#include "cuda/topk.h"

namespace tastebud::cuda {
namespace {

constexpr int kBlock = 256;
constexpr uint32_t kNone = UINT32_MAX;

struct Candidate {
  float score;
  uint32_t index;  // kNone: no candidate
};

// a better than b: a real candidate, higher score, then lower index.
__device__ __forceinline__ bool better(const Candidate& a, const Candidate& b) {
  if (a.index == kNone) return false;
  if (b.index == kNone) return true;
  return a.score != b.score ? a.score > b.score : a.index < b.index;
}

struct Best {
  __device__ __forceinline__ Candidate operator()(const Candidate& a, const Candidate& b) const {
    return better(a, b) ? a : b;
  }
};

// Round t picks the best candidate strictly worse than round t - 1's pick: the order is total,
// so nothing needs marking.
__global__ void top_k_kernel(const float* __restrict__ scores, int64_t n, int64_t ld, int k,
                             uint32_t* __restrict__ out) {
  using Reduce = cub::BlockReduce<Candidate, kBlock>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ Candidate last;
  const float* row = scores + static_cast<int64_t>(blockIdx.x) * ld;
  if (threadIdx.x == 0) last = Candidate{0.0f, kNone};
  __syncthreads();
  for (int t = 0; t < k; ++t) {
    const Candidate previous = last;
    Candidate mine{0.0f, kNone};
    for (int64_t i = threadIdx.x; i < n; i += kBlock) {
      const Candidate c{row[i], static_cast<uint32_t>(i)};
      if (isnan(c.score)) continue;
      if (previous.index != kNone && !better(previous, c)) continue;
      if (better(c, mine)) mine = c;
    }
    const Candidate best = Reduce(temp).Reduce(mine, Best());
    if (threadIdx.x == 0) {
      out[static_cast<int64_t>(blockIdx.x) * k + t] = best.index;
      last = best;
    }
    __syncthreads();
    if (last.index == kNone) {
      for (int r = t + 1 + threadIdx.x; r < k; r += kBlock) out[static_cast<int64_t>(blockIdx.x) * k + r] = kNone;
      return;
    }
  }
}

}  // namespace

void top_k(const float* d_scores, int64_t users, int64_t n, int64_t ld, int k, uint32_t* d_out,
           StreamHandle stream) {
  if (users == 0 || k <= 0) return;
  TB_CHECK(users <= INT32_MAX && n < UINT32_MAX && ld >= n, "top_k: bad shape");
  top_k_kernel<<<static_cast<unsigned>(users), kBlock, 0, stream>>>(d_scores, n, ld, k, d_out);
  TB_CUDA_LAUNCH_CHECK("top_k_kernel", stream);
}

}  // namespace tastebud::cuda
