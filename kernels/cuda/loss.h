// Losses on logits on the GPU: the twin of cpu/loss.h, through the same TASTEBUD_HD formulas.
// The loss stays on the device: per-row values are reduced into the batch's sum and folded into
// an epoch accumulator that the host reads once per epoch.
#pragma once

#include <cstdint>

#include "cuda/common.h"

namespace tastebud::cuda {

// dlogits[r] = scale * weights[r] * d bce / d z; row_loss[r] = weights[r] * bce (in double, as the
// CPU sums it).
void bce_loss_and_grad(const float* d_logits, const float* d_labels, const float* d_weights,
                       int64_t rows, float scale, float* d_dlogits, double* d_row_loss,
                       StreamHandle stream);

// Rows in pairs (2t positive, 2t + 1 negative) weighted by weights[2t]; pair_loss[t].
void bpr_loss_and_grad(const float* d_logits, const float* d_weights, int64_t rows, float scale,
                       float* d_dlogits, double* d_pair_loss, StreamHandle stream);

// The epoch's running totals, on the device. A batch whose loss is not finite sets `halted`: it
// and every later batch of the epoch are neither counted nor applied (the update kernels read
// the flag), which is where the CPU backend stops its epoch.
struct EpochTotals {
  double loss = 0.0;
  unsigned long long samples = 0;
  unsigned long long batches = 0;
  int halted = 0;
};

// Sums per-row losses into the epoch's totals without leaving the device.
class LossAccumulator {
 public:
  explicit LossAccumulator(int64_t max_rows);
  void reset(StreamHandle stream);  // zeroes the totals at the start of an epoch
  // Adds sum(d_row_loss[0 .. count)) as one batch of `samples` samples; also stores the batch's
  // loss in batch_losses[batch] when that buffer is given (the first batches, for tests).
  void add_batch(const double* d_row_loss, int64_t count, uint32_t samples, uint64_t batch,
                 double* d_batch_losses, uint64_t batch_losses_size, StreamHandle stream);
  const int* halted() const;  // device pointer, read by the update kernels
  EpochTotals read(StreamHandle stream) const;  // the one host round trip of an epoch

 private:
  int64_t max_rows_ = 0;
  DeviceBuffer<EpochTotals> totals_;
  DeviceBuffer<double> batch_sum_;
  DeviceBuffer<unsigned char> temp_;
};

}  // namespace tastebud::cuda
