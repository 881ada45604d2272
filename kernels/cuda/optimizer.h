// Optimizer updates on the GPU: the twin of cpu/optimizer.h, through apply_update from
// tastebud/optim_math.h. Both kernels do nothing when `halted` (a device flag, may be null) is
// set: the batch's loss was not finite and the epoch stops there, as on the CPU.
#pragma once

#include <cstdint>

#include "cuda/common.h"
#include "tastebud/optim_math.h"

namespace tastebud::cuda {

// One fused pass over every dense parameter (all layers, head) laid out in one flat buffer.
void dense_update(const OptimizerParams& p, float step_size, float* d_weights, float* d_state0,
                  float* d_state1, const float* d_grads, int64_t count, const int* d_halted,
                  StreamHandle stream);

// Lazy update of the touched table rows rows[0 .. *num_rows) (a count on the device, at most
// max_rows) with their summed gradients row_grads [max_rows x width].
// Each row's L2 is row_l2(p.l2, l2, k), l2.starts on the device. Update mode: a row whose
// d_trainable flag (per table row, on the device; null: every row trains) is 0 is left out, its
// values and state untouched, as the CPU backend's trainable groups leave it.
void sparse_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0,
                   float* d_state1, int64_t width, const uint32_t* d_rows, const int* d_num_rows,
                   int64_t max_rows, const float* d_row_grads, const RowL2& l2, const int* d_halted,
                   StreamHandle stream, const uint8_t* d_trainable = nullptr);

// Dense embedding updates, the twin of cpu::untouched_update: every row of the table
// [table_rows x width] not among rows[0 .. *num_rows) takes the step with a zero gradient and no
// L2 (Adam only), column constant_column (>= 0) left alone. d_stamp [table_rows], zeroed once,
// marks the touched rows with `stamp` (the step number, never 0), so it is never cleared.
void untouched_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0, float* d_state1,
                      int64_t width, int64_t table_rows, const uint32_t* d_rows, const int* d_num_rows,
                      int64_t max_rows, uint32_t* d_stamp, uint32_t stamp, int64_t constant_column,
                      const int* d_halted, StreamHandle stream);

}  // namespace tastebud::cuda
