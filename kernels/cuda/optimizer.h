// Optimizer updates on the GPU: the twin of cpu/optimizer.h, through apply_update from
// tastebud/optim_math.h. Every update does nothing when `halted` (a device flag, may be null) is
// set: the batch's loss was not finite and the epoch stops there, as on the CPU. d_step (a step
// replayed from a CUDA graph, cuda/graph.h; null otherwise): the step size, Adam's epsilon and the
// stamp are read there on the device, not from the arguments.
#pragma once

#include <cstdint>

#include "cuda/common.h"
#include "cuda/embedding.h"
#include "tastebud/optim_math.h"

namespace tastebud::cuda {

struct StepScalars;  // cuda/graph.h

// One fused pass over every dense parameter (all layers, head) laid out in one flat buffer.
void dense_update(const OptimizerParams& p, float step_size, float* d_weights, float* d_state0,
                  float* d_state1, const float* d_grads, int64_t count, const int* d_halted,
                  StreamHandle stream, const StepScalars* d_step = nullptr);

// Lazy update of the touched table rows rows[0 .. *num_rows) (a count on the device, at most
// max_rows) with their summed gradients row_grads [max_rows x width].
// Each row's L2 is row_l2(p.l2, l2, k), l2.starts on the device. Update mode: a row whose
// d_trainable flag (per table row, on the device; null: every row trains) is 0 is left out, its
// values and state untouched, as the CPU backend's trainable groups leave it.
void sparse_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0,
                   float* d_state1, int64_t width, const uint32_t* d_rows, const int* d_num_rows,
                   int64_t max_rows, const float* d_row_grads, const RowL2& l2, const int* d_halted,
                   StreamHandle stream, const uint8_t* d_trainable = nullptr, const StepScalars* d_step = nullptr);

// What a grouped table step leaves out or pins; null or -1: nothing.
struct RowStepMasks {
  const uint8_t* trainable = nullptr;      // update mode: rows whose flag is 0 keep their values and state
  const unsigned char* trained = nullptr;  // item metadata: rows whose flag is 0 step with a zero gradient
  int64_t constant_column = -1;            // MF: this column is set to one after the step
};

// The fused table step: for each group k of `groups` (table row rows()[k]), its batch rows'
// gradient columns [offset, offset + width) of grads (rows `stride` apart) summed in ascending
// batch-row order and applied at once, with row_l2's L2 (loss_scale: 1 / samples). The same
// floats as sum_row_gradients, drop_untrained_gradients, sparse_update and set_column in turn,
// in one pass with no summed-gradient buffer.
void grouped_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0, float* d_state1,
                    const RowGroups& groups, const float* d_grads, int64_t stride, int64_t offset, int64_t width,
                    float loss_scale, const RowStepMasks& masks, const int* d_halted, StreamHandle stream,
                    const StepScalars* d_step = nullptr);

// Dense embedding updates in one pass (fused kernels): every row of the table [table_rows x width]
// steps once, a row among the groups as grouped_update steps it, every other row as
// untouched_update does (Adam only: a zero gradient, no L2, constant_column left alone). d_stamp
// as untouched_update's; d_group [table_rows] is scratch (each stamped row's group).
void dense_grouped_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0, float* d_state1,
                          int64_t table_rows, const RowGroups& groups, const float* d_grads, int64_t stride,
                          int64_t offset, int64_t width, float loss_scale, const RowStepMasks& masks,
                          uint32_t* d_stamp, uint32_t stamp, uint32_t* d_group, const int* d_halted,
                          StreamHandle stream, const StepScalars* d_step = nullptr);

// Dense embedding updates, the twin of cpu::untouched_update: every row of the table
// [table_rows x width] not among rows[0 .. *num_rows) takes the step with a zero gradient and no
// L2 (Adam only), column constant_column (>= 0) left alone. d_stamp [table_rows], zeroed once,
// marks the touched rows with `stamp` (the step number, never 0), so it is never cleared.
void untouched_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0, float* d_state1,
                      int64_t width, int64_t table_rows, const uint32_t* d_rows, const int* d_num_rows,
                      int64_t max_rows, uint32_t* d_stamp, uint32_t stamp, int64_t constant_column,
                      const int* d_halted, StreamHandle stream, const StepScalars* d_step = nullptr);

}  // namespace tastebud::cuda
