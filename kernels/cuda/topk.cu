#include <cstdint>
#include <string>

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

constexpr int kSelectThreads = 256;
constexpr int kSelectPerThread = 4;
constexpr int kSelectStep = kSelectThreads * kSelectPerThread;  // scores read per round

// Shared entries of select_top_k_kernel: [0, k) the best so far, sorted; then the candidates.
int select_capacity(int k) {
  int capacity = 2048;
  while (capacity < k + kSelectStep) capacity <<= 1;
  return capacity;
}

// Sorts buf[0, size) best first; size a power of two; every thread of the block calls it.
__device__ void bitonic_sort(Candidate* buf, int size) {
  for (int span = 2; span <= size; span <<= 1) {
    for (int stride = span >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < size / 2; t += blockDim.x) {
        const int i = 2 * t - (t & (stride - 1));
        const int j = i + stride;
        const Candidate a = buf[i], b = buf[j];
        const bool best_first = (i & span) == 0;
        if (best_first ? better(b, a) : better(a, b)) {
          buf[i] = b;
          buf[j] = a;
        }
      }
      __syncthreads();
    }
  }
}

__global__ void __launch_bounds__(kSelectThreads)
    select_top_k_kernel(const float* __restrict__ scores, int64_t n, int64_t ld,
                        const uint8_t* __restrict__ allowed, int k, int capacity,
                        uint32_t* __restrict__ out_items, float* __restrict__ out_scores) {
  extern __shared__ __align__(16) unsigned char select_shared[];
  Candidate* buf = reinterpret_cast<Candidate*>(select_shared);
  __shared__ int pending_count, listed;
  __shared__ Candidate kth;
  const float* row = scores + static_cast<int64_t>(blockIdx.x) * ld;
  for (int t = threadIdx.x; t < capacity; t += blockDim.x) buf[t] = Candidate{0.0f, kNone};
  if (threadIdx.x == 0) {
    pending_count = 0;
    listed = 0;
    kth = Candidate{0.0f, kNone};
  }
  __syncthreads();

  // Every thread reads `pending` before any thread appends or merges: the decision is uniform.
  auto merge = [&](int pending) {
    const int used = k + pending;
    int size = 1;
    while (size < used) size <<= 1;
    for (int t = used + threadIdx.x; t < size; t += blockDim.x) buf[t] = Candidate{0.0f, kNone};
    __syncthreads();
    bitonic_sort(buf, size);
    if (threadIdx.x == 0) {
      listed = min(k, listed + pending);
      pending_count = 0;
      if (listed == k) kth = buf[k - 1];
    }
    __syncthreads();
  };

  for (int64_t base = 0; base < n; base += kSelectStep) {
    const int pending = pending_count;
    __syncthreads();
    if (pending + kSelectStep > capacity - k) merge(pending);
    const bool full = listed == k;
    const Candidate bar = kth;
#pragma unroll
    for (int v = 0; v < kSelectPerThread; ++v) {
      const int64_t i = base + v * kSelectThreads + threadIdx.x;
      if (i >= n) break;
      const float s = row[i];
      if (isnan(s) || (allowed != nullptr && allowed[i] == 0)) continue;
      const Candidate c{s, static_cast<uint32_t>(i)};
      if (full && !better(c, bar)) continue;
      buf[k + atomicAdd(&pending_count, 1)] = c;
    }
    __syncthreads();
  }
  merge(pending_count);

  const int64_t out = static_cast<int64_t>(blockIdx.x) * k;
  for (int t = threadIdx.x; t < k; t += blockDim.x) {
    const bool present = t < listed;
    out_items[out + t] = present ? buf[t].index : kNone;
    out_scores[out + t] = present ? buf[t].score : -INFINITY;
  }
}

__global__ void exclude_items_kernel(float* __restrict__ scores, int64_t users, int64_t ld,
                                     const uint64_t* __restrict__ offsets,
                                     const uint32_t* __restrict__ items) {
  for (int64_t u = blockIdx.x; u < users; u += gridDim.x) {
    for (uint64_t j = offsets[u] + threadIdx.x; j < offsets[u + 1]; j += blockDim.x) {
      scores[u * ld + items[j]] = __int_as_float(0x7fc00000);
    }
  }
}

}  // namespace

void select_top_k(const float* d_scores, int64_t users, int64_t n, int64_t ld,
                  const uint8_t* d_allowed, int k, uint32_t* d_items, float* d_top_scores,
                  StreamHandle stream) {
  if (users == 0 || k <= 0) return;
  TB_CHECK(k <= kMaxSelectK, "select_top_k: k above " + std::to_string(kMaxSelectK));
  TB_CHECK(users <= INT32_MAX && n < UINT32_MAX && ld >= n, "select_top_k: bad shape");
  const int capacity = select_capacity(k);
  select_top_k_kernel<<<static_cast<unsigned>(users), kSelectThreads, capacity * sizeof(Candidate),
                        stream>>>(d_scores, n, ld, d_allowed, k, capacity, d_items, d_top_scores);
  TB_CUDA_LAUNCH_CHECK("select_top_k_kernel", stream);
}

void exclude_items(float* d_scores, int64_t users, int64_t ld, const uint64_t* d_offsets,
                   const uint32_t* d_items, StreamHandle stream) {
  if (users == 0) return;
  exclude_items_kernel<<<grid_for(users, 1, 65535), 128, 0, stream>>>(d_scores, users, ld,
                                                                      d_offsets, d_items);
  TB_CUDA_LAUNCH_CHECK("exclude_items_kernel", stream);
}

void top_k(const float* d_scores, int64_t users, int64_t n, int64_t ld, int k, uint32_t* d_out,
           StreamHandle stream) {
  if (users == 0 || k <= 0) return;
  TB_CHECK(users <= INT32_MAX && n < UINT32_MAX && ld >= n, "top_k: bad shape");
  top_k_kernel<<<static_cast<unsigned>(users), kBlock, 0, stream>>>(d_scores, n, ld, k, d_out);
  TB_CUDA_LAUNCH_CHECK("top_k_kernel", stream);
}

}  // namespace tastebud::cuda
