#include <cub/device/device_radix_sort.cuh>

#include "cuda/common.cuh"
#include "cuda/graph.h"
#include "cuda/sampler.h"
#include "tastebud/batch_rows.h"
#include "tastebud/sampler_math.h"

namespace tastebud::cuda {
namespace {

__global__ void shuffle_keys_kernel(uint64_t seed, uint32_t epoch, uint64_t count, uint64_t* keys,
                                    uint32_t* index) {
  for (uint64_t p = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; p < count;
       p += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    keys[p] = shuffle_key(seed, epoch, p);
    index[p] = static_cast<uint32_t>(p);
  }
}

__device__ __forceinline__ uint32_t negative_of(const SampleSpec& spec, const PositivesView& pos,
                                                uint32_t user, uint64_t draw) {
  const uint64_t begin = pos.user_offsets[user];
  const uint64_t count = pos.user_offsets[user + 1] - begin;
  return draw_negative(spec.seed, RandomStream::kNegatives, spec.epoch, draw, pos.item + begin,
                       count, pos.num_items, pos.alias_probability, pos.alias_index);
}

__global__ void fill_rows_kernel(SampleSpec spec, PositivesView pos, const uint32_t* order,
                                 uint64_t first, uint32_t samples, BatchRowsOut out,
                                 unsigned long long* impression_negatives, const int* halted,
                                 const StepScalars* step) {
  if (step != nullptr) {
    first = step->first;
    spec.epoch = step->epoch;
  }
  uint32_t impressions_used = 0;
  for (uint32_t s = blockIdx.x * blockDim.x + threadIdx.x; s < samples; s += gridDim.x * blockDim.x) {
    impressions_used += fill_sample(spec, pos, order, first, s, out);
  }
  if (impression_negatives == nullptr) return;
  // Every thread of the block gets here (the block is whole warps), so the warp sum is complete;
  // one integer atomic per warp keeps the count exact whatever the order.
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    impressions_used += __shfl_down_sync(0xffffffffu, impressions_used, offset);
  }
  if ((threadIdx.x & 31) == 0 && impressions_used > 0 && (halted == nullptr || *halted == 0)) {
    atomicAdd(impression_negatives, static_cast<unsigned long long>(impressions_used));
  }
}

__global__ void draw_negatives_kernel(uint64_t seed, uint32_t epoch, PositivesView pos,
                                      const uint64_t* draw_index, const uint32_t* user,
                                      int64_t count, uint32_t* out) {
  SampleSpec spec;
  spec.seed = seed;
  spec.epoch = epoch;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = negative_of(spec, pos, user[i], draw_index[i]);
  }
}

}  // namespace

Shuffler::Shuffler(uint64_t count) : count_(count) {
  TB_CHECK(count < (1ull << 31), "the CUDA shuffle handles at most 2^31 positives");
  keys_.resize(count);
  sorted_keys_.resize(count);
  index_.resize(count);
  size_t temp_bytes = 0;
  TB_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_.data(), sorted_keys_.data(),
                                                index_.data(), index_.data(), static_cast<int>(count)));
  temp_.resize(temp_bytes > 0 ? temp_bytes : 1);
}

void Shuffler::run(uint64_t seed, uint32_t epoch, uint32_t* d_order, StreamHandle stream) {
  if (count_ == 0) return;
  constexpr int kBlock = 256;
  shuffle_keys_kernel<<<grid_for(count_, kBlock), kBlock, 0, stream>>>(seed, epoch, count_, keys_.data(),
                                                                      index_.data());
  TB_CUDA_LAUNCH_CHECK("shuffle_keys_kernel", stream);
  size_t temp_bytes = temp_.size();
  TB_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp_.data(), temp_bytes, keys_.data(),
                                                sorted_keys_.data(), index_.data(), d_order,
                                                static_cast<int>(count_), 0, 64, stream));
  TB_CUDA_LAUNCH_CHECK("DeviceRadixSort::SortPairs (shuffle)", stream);
}

void fill_rows(const SampleSpec& spec, const PositivesView& positives, const uint32_t* d_order,
               uint64_t first, uint32_t samples, uint32_t* d_users, uint32_t* d_items,
               float* d_labels, float* d_weights, uint32_t* d_positives,
               unsigned long long* d_impression_negatives, const int* d_halted, StreamHandle stream,
               const StepScalars* d_step) {
  if (samples == 0) return;
  constexpr int kBlock = 256;  // whole warps: the impression count is summed per warp
  fill_rows_kernel<<<grid_for(samples, kBlock), kBlock, 0, stream>>>(
      spec, positives, d_order, first, samples, BatchRowsOut{d_users, d_items, d_labels, d_weights, d_positives},
      d_impression_negatives, d_halted, d_step);
  TB_CUDA_LAUNCH_CHECK("fill_rows_kernel", stream);
}

void draw_negatives(uint64_t seed, uint32_t epoch, const PositivesView& positives,
                    const uint64_t* d_draw_index, const uint32_t* d_user, int64_t count,
                    uint32_t* d_out, StreamHandle stream) {
  if (count == 0) return;
  constexpr int kBlock = 256;
  draw_negatives_kernel<<<grid_for(count, kBlock), kBlock, 0, stream>>>(
      seed, epoch, positives, d_draw_index, d_user, count, d_out);
  TB_CUDA_LAUNCH_CHECK("draw_negatives_kernel", stream);
}

}  // namespace tastebud::cuda
