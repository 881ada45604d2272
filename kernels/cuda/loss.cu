#include <cstddef>

#include <cub/device/device_reduce.cuh>

#include "cuda/common.cuh"
#include "cuda/loss.h"
#include "tastebud/loss_math.h"

namespace tastebud::cuda {
namespace {

__global__ void bce_kernel(const float* __restrict__ logits, const float* __restrict__ labels,
                           const float* __restrict__ weights, int64_t rows, float scale,
                           float* __restrict__ dlogits, double* __restrict__ row_loss) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    row_loss[r] = static_cast<double>(weights[r]) * bce_loss(logits[r], labels[r]);
    dlogits[r] = scale * weights[r] * bce_grad(logits[r], labels[r]);
  }
}

__global__ void bpr_kernel(const float* __restrict__ logits, const float* __restrict__ weights,
                           int64_t pairs, float scale, float* __restrict__ dlogits,
                           double* __restrict__ pair_loss) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < pairs;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float w = weights[2 * t];
    const float zp = logits[2 * t], zn = logits[2 * t + 1];
    pair_loss[t] = static_cast<double>(w) * bpr_loss(zp, zn);
    const float g = scale * w * bpr_grad_pos(zp, zn);
    dlogits[2 * t] = g;
    dlogits[2 * t + 1] = -g;
  }
}

__global__ void add_batch_kernel(const double* __restrict__ batch_sum, uint32_t samples, uint64_t batch,
                                 double* __restrict__ batch_losses, uint64_t batch_losses_size,
                                 EpochTotals* __restrict__ totals) {
  if (totals->halted) return;
  const double loss = *batch_sum;
  if (batch_losses != nullptr && batch < batch_losses_size) batch_losses[batch] = loss;
  if (!isfinite(loss)) {
    totals->halted = 1;
    return;
  }
  totals->loss += loss;
  totals->samples += samples;
  totals->batches += 1;
}

}  // namespace

void bce_loss_and_grad(const float* d_logits, const float* d_labels, const float* d_weights,
                       int64_t rows, float scale, float* d_dlogits, double* d_row_loss,
                       StreamHandle stream) {
  if (rows == 0) return;
  constexpr int kBlock = 256;
  bce_kernel<<<grid_for(rows, kBlock), kBlock, 0, stream>>>(d_logits, d_labels, d_weights, rows, scale,
                                                            d_dlogits, d_row_loss);
  TB_CUDA_LAUNCH_CHECK("bce_kernel", stream);
}

void bpr_loss_and_grad(const float* d_logits, const float* d_weights, int64_t rows, float scale,
                       float* d_dlogits, double* d_pair_loss, StreamHandle stream) {
  const int64_t pairs = rows / 2;
  if (pairs == 0) return;
  constexpr int kBlock = 256;
  bpr_kernel<<<grid_for(pairs, kBlock), kBlock, 0, stream>>>(d_logits, d_weights, pairs, scale, d_dlogits,
                                                             d_pair_loss);
  TB_CUDA_LAUNCH_CHECK("bpr_kernel", stream);
}

LossAccumulator::LossAccumulator(int64_t max_rows) : max_rows_(max_rows) {
  TB_CHECK(max_rows > 0 && max_rows < (1ll << 31), "LossAccumulator: rows must be in [1, 2^31)");
  totals_.resize(1);
  batch_sum_.resize(1);
  size_t bytes = 0;
  TB_CUDA_CHECK(cub::DeviceReduce::Sum(nullptr, bytes, static_cast<const double*>(nullptr), batch_sum_.data(),
                                       static_cast<int>(max_rows)));
  temp_.resize(bytes > 0 ? bytes : 1);
  // Zeroed on the legacy stream and waited for, so no later stream can race with it.
  totals_.zero();
  synchronize(nullptr);
}

void LossAccumulator::reset(StreamHandle stream) { totals_.zero(stream); }

void LossAccumulator::add_batch(const double* d_row_loss, int64_t count, uint32_t samples, uint64_t batch,
                                double* d_batch_losses, uint64_t batch_losses_size, StreamHandle stream) {
  TB_CHECK(count > 0 && count <= max_rows_, "LossAccumulator::add_batch: bad row count");
  size_t bytes = temp_.size();
  // CUB's reduction is deterministic for a given size and device.
  TB_CUDA_CHECK(cub::DeviceReduce::Sum(temp_.data(), bytes, d_row_loss, batch_sum_.data(),
                                       static_cast<int>(count), stream));
  TB_CUDA_LAUNCH_CHECK("DeviceReduce::Sum (loss)", stream);
  add_batch_kernel<<<1, 1, 0, stream>>>(batch_sum_.data(), samples, batch, d_batch_losses, batch_losses_size,
                                        totals_.data());
  TB_CUDA_LAUNCH_CHECK("add_batch_kernel", stream);
}

const int* LossAccumulator::halted() const {
  return reinterpret_cast<const int*>(reinterpret_cast<const char*>(totals_.data()) + offsetof(EpochTotals, halted));
}

EpochTotals LossAccumulator::read(StreamHandle stream) const {
  EpochTotals totals;
  copy_to_host(&totals, totals_.data(), sizeof(totals), stream);
  return totals;
}

}  // namespace tastebud::cuda
