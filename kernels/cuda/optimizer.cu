#include "cuda/common.cuh"
#include "cuda/graph.h"
#include "cuda/optimizer.h"

namespace tastebud::cuda {
namespace {

struct UpdateArgs {
  OptimizerKind kind;
  float step_size, beta1, beta2, eps, l2;
  const StepScalars* step;  // a replayed step: its step size, epsilon and stamp, on the device
};

UpdateArgs args_of(const OptimizerParams& p, float step_size, const StepScalars* d_step) {
  return UpdateArgs{p.kind, step_size, p.beta1, p.beta2, p.eps, p.l2, d_step};
}

// The arguments as this launch steps with them: a replayed step's scalars from the device.
__device__ __forceinline__ UpdateArgs current(UpdateArgs a) {
  if (a.step != nullptr) {
    a.step_size = a.step->step_size;
    a.eps = a.step->eps;
  }
  return a;
}
__device__ __forceinline__ uint32_t current_stamp(const StepScalars* step, uint32_t stamp) {
  return step != nullptr ? step->stamp : stamp;
}

__global__ void dense_update_kernel(UpdateArgs a, float* __restrict__ w, float* __restrict__ s0,
                                    float* __restrict__ s1, const float* __restrict__ g, int64_t count,
                                    const int* __restrict__ halted) {
  if (halted != nullptr && *halted) return;
  a = current(a);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    apply_update(a.kind, a.step_size, a.beta1, a.beta2, a.eps, a.l2, w[i], s0[i], s1[i], g[i]);
  }
}

// One thread per (touched row, column); consecutive threads walk a row's columns.
__global__ void sparse_update_kernel(UpdateArgs a, float* __restrict__ table, float* __restrict__ s0,
                                     float* __restrict__ s1, int64_t width, const uint32_t* __restrict__ rows,
                                     const int* __restrict__ num_rows, const float* __restrict__ row_grads,
                                     RowL2 l2, const int* __restrict__ halted, const uint8_t* __restrict__ trainable) {
  if (halted != nullptr && *halted) return;
  a = current(a);
  const int64_t total = static_cast<int64_t>(*num_rows) * width;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = t / width, j = t - k * width;
    if (trainable != nullptr && !trainable[rows[k]]) continue;
    const int64_t i = static_cast<int64_t>(rows[k]) * width + j;
    apply_update(a.kind, a.step_size, a.beta1, a.beta2, a.eps, row_l2(a.l2, l2, k), table[i], s0[i], s1[i],
                 row_grads[t]);
  }
}

// One warp per group, lanes over its columns; the adds in sum_row_gradients_kernel's order.
__global__ void grouped_update_kernel(UpdateArgs a, float* __restrict__ table, float* __restrict__ s0,
                                      float* __restrict__ s1, const uint32_t* __restrict__ rows,
                                      const uint32_t* __restrict__ order, const uint32_t* __restrict__ starts,
                                      const int* __restrict__ num_groups, const float* __restrict__ grads,
                                      int64_t stride, int64_t offset, int64_t width, float loss_scale,
                                      RowStepMasks masks, const int* __restrict__ halted) {
  if (halted != nullptr && *halted) return;
  a = current(a);
  const int groups = *num_groups;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const RowL2 l2{starts, loss_scale};
  for (int64_t k = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; k < groups; k += warps) {
    const uint32_t row = rows[k];
    if (masks.trainable != nullptr && !masks.trainable[row]) continue;
    const bool dropped = masks.trained != nullptr && !masks.trained[row];
    const uint32_t begin = starts[k], end = starts[k + 1];
    const float coefficient = row_l2(a.l2, l2, k);
    for (int64_t j = lane; j < width; j += 32) {
      float total = 0.0f;
#pragma unroll 4
      for (uint32_t q = begin; q < end; ++q) total += grads[static_cast<int64_t>(order[q]) * stride + offset + j];
      const int64_t i = static_cast<int64_t>(row) * width + j;
      apply_update(a.kind, a.step_size, a.beta1, a.beta2, a.eps, coefficient, table[i], s0[i], s1[i],
                   dropped ? 0.0f : total);
      if (j == masks.constant_column) table[i] = 1.0f;
    }
  }
}

// Each group's row stamped with this step and its group (dense_grouped_update's first pass).
__global__ void stamp_groups_kernel(const uint32_t* __restrict__ rows, const int* __restrict__ num_rows,
                                    uint32_t* __restrict__ stamps, uint32_t stamp, uint32_t* __restrict__ group,
                                    const StepScalars* __restrict__ step) {
  stamp = current_stamp(step, stamp);
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < *num_rows;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    stamps[rows[k]] = stamp;
    group[rows[k]] = static_cast<uint32_t>(k);
  }
}

// One thread per (row, column) of the whole table: a stamped row sums its group's gradient column
// (grouped_update_kernel's order) and steps with it; any other row takes Adam's zero-gradient step.
__global__ void dense_grouped_update_kernel(UpdateArgs a, float* __restrict__ table, float* __restrict__ s0,
                                            float* __restrict__ s1, int64_t width, int64_t total,
                                            const uint32_t* __restrict__ stamps, uint32_t stamp,
                                            const uint32_t* __restrict__ group, const uint32_t* __restrict__ order,
                                            const uint32_t* __restrict__ starts, const float* __restrict__ grads,
                                            int64_t stride, int64_t offset, float loss_scale, RowStepMasks masks,
                                            const int* __restrict__ halted) {
  if (halted != nullptr && *halted) return;
  a = current(a);
  stamp = current_stamp(a.step, stamp);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, j = i - r * width;
    if (stamps[r] != stamp) {
      if (j != masks.constant_column && a.kind == OptimizerKind::kAdam) {
        apply_update(a.kind, a.step_size, a.beta1, a.beta2, a.eps, 0.0f, table[i], s0[i], s1[i], 0.0f);
      }
      continue;
    }
    if (masks.trainable != nullptr && !masks.trainable[r]) continue;
    const uint32_t k = group[r], begin = starts[k], end = starts[k + 1];
    float total_grad = 0.0f;
#pragma unroll 4
    for (uint32_t q = begin; q < end; ++q) total_grad += grads[static_cast<int64_t>(order[q]) * stride + offset + j];
    const bool dropped = masks.trained != nullptr && !masks.trained[r];
    apply_update(a.kind, a.step_size, a.beta1, a.beta2, a.eps, row_l2(a.l2, RowL2{starts, loss_scale}, k), table[i],
                 s0[i], s1[i], dropped ? 0.0f : total_grad);
    if (j == masks.constant_column) table[i] = 1.0f;
  }
}

__global__ void stamp_rows_kernel(const uint32_t* __restrict__ rows, const int* __restrict__ num_rows,
                                  uint32_t* __restrict__ stamps, uint32_t stamp, const StepScalars* __restrict__ step) {
  stamp = current_stamp(step, stamp);
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < *num_rows;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    stamps[rows[k]] = stamp;
  }
}

// One thread per (row, column) of the whole table; rows stamped this step are skipped.
__global__ void untouched_update_kernel(UpdateArgs a, float* __restrict__ table, float* __restrict__ s0,
                                        float* __restrict__ s1, int64_t width, int64_t total,
                                        const uint32_t* __restrict__ stamps, uint32_t stamp, int64_t constant,
                                        const int* __restrict__ halted) {
  if (halted != nullptr && *halted) return;
  a = current(a);
  stamp = current_stamp(a.step, stamp);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / width;
    if (stamps[r] == stamp || i - r * width == constant) continue;
    apply_update(a.kind, a.step_size, a.beta1, a.beta2, a.eps, 0.0f, table[i], s0[i], s1[i], 0.0f);
  }
}

}  // namespace

void untouched_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0, float* d_state1,
                      int64_t width, int64_t table_rows, const uint32_t* d_rows, const int* d_num_rows,
                      int64_t max_rows, uint32_t* d_stamp, uint32_t stamp, int64_t constant_column,
                      const int* d_halted, StreamHandle stream, const StepScalars* d_step) {
  if (p.kind != OptimizerKind::kAdam || width == 0 || table_rows == 0) return;
  constexpr int kBlock = 256;
  if (max_rows > 0) {
    stamp_rows_kernel<<<grid_for(max_rows, kBlock), kBlock, 0, stream>>>(d_rows, d_num_rows, d_stamp, stamp,
                                                                          d_step);
    TB_CUDA_LAUNCH_CHECK("stamp_rows_kernel", stream);
  }
  untouched_update_kernel<<<grid_for(table_rows * width, kBlock), kBlock, 0, stream>>>(
      args_of(p, step_size, d_step), d_table, d_state0, d_state1, width, table_rows * width, d_stamp, stamp, constant_column,
      d_halted);
  TB_CUDA_LAUNCH_CHECK("untouched_update_kernel", stream);
}

void grouped_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0, float* d_state1,
                    const RowGroups& groups, const float* d_grads, int64_t stride, int64_t offset, int64_t width,
                    float loss_scale, const RowStepMasks& masks, const int* d_halted, StreamHandle stream,
                    const StepScalars* d_step) {
  if (width == 0 || groups.max_groups() == 0) return;
  constexpr int kBlock = 256;
  grouped_update_kernel<<<grid_for(groups.max_groups() * 32, kBlock), kBlock, 0, stream>>>(
      args_of(p, step_size, d_step), d_table, d_state0, d_state1, groups.rows(), groups.order(), groups.starts(),
      groups.num_groups(), d_grads, stride, offset, width, loss_scale, masks, d_halted);
  TB_CUDA_LAUNCH_CHECK("grouped_update_kernel", stream);
}

void dense_grouped_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0, float* d_state1,
                          int64_t table_rows, const RowGroups& groups, const float* d_grads, int64_t stride,
                          int64_t offset, int64_t width, float loss_scale, const RowStepMasks& masks,
                          uint32_t* d_stamp, uint32_t stamp, uint32_t* d_group, const int* d_halted,
                          StreamHandle stream, const StepScalars* d_step) {
  if (width == 0 || table_rows == 0) return;
  constexpr int kBlock = 256;
  if (groups.max_groups() > 0) {
    stamp_groups_kernel<<<grid_for(groups.max_groups(), kBlock), kBlock, 0, stream>>>(
        groups.rows(), groups.num_groups(), d_stamp, stamp, d_group, d_step);
    TB_CUDA_LAUNCH_CHECK("stamp_groups_kernel", stream);
  }
  dense_grouped_update_kernel<<<grid_for(table_rows * width, kBlock), kBlock, 0, stream>>>(
      args_of(p, step_size, d_step), d_table, d_state0, d_state1, width, table_rows * width, d_stamp, stamp, d_group,
      groups.order(), groups.starts(), d_grads, stride, offset, loss_scale, masks, d_halted);
  TB_CUDA_LAUNCH_CHECK("dense_grouped_update_kernel", stream);
}

void dense_update(const OptimizerParams& p, float step_size, float* d_weights, float* d_state0,
                  float* d_state1, const float* d_grads, int64_t count, const int* d_halted,
                  StreamHandle stream, const StepScalars* d_step) {
  if (count == 0) return;
  constexpr int kBlock = 256;
  dense_update_kernel<<<grid_for(count, kBlock), kBlock, 0, stream>>>(args_of(p, step_size, d_step), d_weights, d_state0,
                                                                      d_state1, d_grads, count, d_halted);
  TB_CUDA_LAUNCH_CHECK("dense_update_kernel", stream);
}

void sparse_update(const OptimizerParams& p, float step_size, float* d_table, float* d_state0,
                   float* d_state1, int64_t width, const uint32_t* d_rows, const int* d_num_rows,
                   int64_t max_rows, const float* d_row_grads, const RowL2& l2, const int* d_halted,
                   StreamHandle stream, const uint8_t* d_trainable, const StepScalars* d_step) {
  if (width == 0 || max_rows == 0) return;
  constexpr int kBlock = 256;
  sparse_update_kernel<<<grid_for(max_rows * width, kBlock), kBlock, 0, stream>>>(
      args_of(p, step_size, d_step), d_table, d_state0, d_state1, width, d_rows, d_num_rows, d_row_grads, l2, d_halted,
      d_trainable);
  TB_CUDA_LAUNCH_CHECK("sparse_update_kernel", stream);
}

}  // namespace tastebud::cuda
