// Optimizer updates on the CPU: dense tensors and the touched rows of embedding tables.
#pragma once

#include <cstdint>
#include <span>

#include "tastebud/optim_math.h"

namespace tastebud::cpu {

void dense_update(const OptimizerParams& p, float step_size, float* weights, float* state0,
                  float* state1, const float* grads, int64_t count);

// Lazy update of table rows `rows` (width floats each) with their summed gradients row_grads;
// each row's L2 is row_l2(p.l2, l2, k).
void sparse_update(const OptimizerParams& p, float step_size, float* table, float* state0,
                   float* state1, int64_t width, std::span<const uint32_t> rows,
                   const float* row_grads, const RowL2& l2);

// Dense embedding updates (EmbeddingUpdates::kDense): every row of a table [table_rows x width]
// that `touched` does not flag takes the step with a zero gradient and no L2, as torch.optim.Adam
// moves every row: Adam's moments decay and the weight moves on with them (Adagrad and SGD leave
// such a row where it is). Column constant_column (>= 0: MF's column of ones) is left alone.
void untouched_update(const OptimizerParams& p, float step_size, float* table, float* state0, float* state1,
                      int64_t width, int64_t table_rows, const uint8_t* touched, int64_t constant_column);

}  // namespace tastebud::cpu
