// The SASRec sequence model's ops on the GPU: the twin of cpu/sequence.h (layer norm, causal
// self-attention, gSASRec's sampled loss and its item-gradient scatter) plus the elementwise
// pieces of the pass (the input rows and dropout). float only, device pointers. The attention
// takes a whole batch of packed sequences at once: sequence b owns rows starts[b] .. starts[b+1]
// of every [rows x d] activation, with no padding rows. Every reduction runs in a fixed order
// (no float atomics), so a run repeats bit for bit on the same device.
#pragma once

#include <cstdint>

#include "cuda/common.h"
#include "cuda/embedding.h"
#include "tastebud/feature_view.h"
#include "tastebud/optim_math.h"

namespace tastebud::cuda {

// y = (x - mean) * rstd * gamma + beta row by row over n rows of width d, rstd = 1 / sqrt(var +
// eps), var biased; mean and rstd (n each) saved for the backward pass. One warp per row.
void layer_norm_forward(const float* d_x, const float* d_gamma, const float* d_beta, int64_t n, int64_t d,
                        float eps, float* d_y, float* d_mean, float* d_rstd, StreamHandle stream);

// dx overwritten; dgamma, dbeta accumulated (+=) as on the CPU: per-slice partial sums over rows,
// then the slices added in order. `partial` needs layer_norm_partials(n, d) floats.
int64_t layer_norm_partials(int64_t n, int64_t d);
void layer_norm_backward(const float* d_dy, const float* d_x, const float* d_gamma, const float* d_mean,
                         const float* d_rstd, int64_t n, int64_t d, float* d_dx, float* d_dgamma,
                         float* d_dbeta, float* d_partial, StreamHandle stream);

// Multi-head causal self-attention of `count` packed sequences, q, k, v, out row-major [rows x d],
// d = heads * dh, head h using columns [h*dh, (h+1)*dh). starts (count + 1, starts[count] = rows)
// and prob_offsets (count + 1) are device arrays of int64; sequence b of length n keeps its
// probs [heads x n x n] at prob_offsets[b] (entries above the diagonal 0). Query t of a sequence
// attends to its keys 0..t with softmax(q_t . k_j / sqrt(dh)). One block per (row, head).
void causal_attention_forward(const float* d_q, const float* d_k, const float* d_v, const int64_t* d_starts,
                              const int64_t* d_prob_offsets, int64_t count, int64_t rows, int64_t heads,
                              int64_t dh, float* d_probs, float* d_out, StreamHandle stream);

// dq, dk, dv overwritten ([rows x d]). dS = P o (dP - rowsum(dP o P)) / sqrt(dh) is kept in
// d_dscores, a workspace as large as probs. One block per (row, head) for dq (its query row), then
// one per (row, head) for dk and dv (its key row, summed over the queries in order).
void causal_attention_backward(const float* d_dout, const float* d_q, const float* d_k, const float* d_v,
                               const float* d_probs, const int64_t* d_starts, const int64_t* d_prob_offsets,
                               int64_t count, int64_t rows, int64_t heads, int64_t dh, float* d_dq, float* d_dk,
                               float* d_dv, float* d_dscores, StreamHandle stream);

// The sampled loss at n positions, as cpu::sampled_loss_forward_backward: z = h[p] . table[items[p *
// slots + s]], slot 0 the positive (gBCE with beta), the others negatives (BCE). Writes coef (scale
// * weight[p] * dloss/dz, 0 where weight is 0), dh (overwritten) and position_loss[p] = weight[p] *
// loss_p in double; the caller sums position_loss in a fixed order (as the CPU, which returns the
// sum). One warp per position.
void sampled_loss_forward_backward(const float* d_h, int64_t n, int64_t d, const float* d_table,
                                   const uint32_t* d_items, int64_t slots, const float* d_weight, float beta,
                                   float scale, float* d_coef, float* d_dh, double* d_position_loss,
                                   StreamHandle stream);

// grad_table[item] += coef[p*slots+s] * h[p] for every (p, s) with coef != 0, in (p, s) order for
// each item, as cpu::scatter_item_grads: the n * slots entries are grouped by item with `groups`
// (built here from d_items; it needs max_rows >= n * slots and num_ids >= the table's rows), then
// one warp per item adds its entries in entry order. No float atomics.
void scatter_item_grads(const float* d_coef, const float* d_h, const uint32_t* d_items, int64_t n, int64_t slots,
                        int64_t d, RowGroups& groups, float* d_grad_table, StreamHandle stream);

// x[r] = items_table[input[r]] * sqrt(d) + positions_table[position[r]], rows of width d.
void input_rows_forward(const float* d_items_table, const float* d_positions_table, const uint32_t* d_input,
                        const uint32_t* d_position, int64_t rows, int64_t d, float* d_x, StreamHandle stream);

// The backward of input_rows_forward: grad_positions[position[r]] += dx[r] for every row r in
// ascending order (grouped by position with `groups`: max_rows >= rows, num_ids >= max_sequence),
// and d_input[r] = dx[r] * sqrt(d) (overwritten), the rows' item gradients for the caller to scatter.
void input_rows_backward(const float* d_dx, const uint32_t* d_position, int64_t rows, int64_t d,
                         RowGroups& groups, float* d_grad_positions, float* d_d_input, StreamHandle stream);

// Which dropout stream a site draws from, as SequencePass::apply_dropout: element c of row r of
// sequence b is element ((dropout_id[b] * sites + site) * max_sequence + position[r]) * dpad + c of
// the epoch's stream, dpad = d rounded up to 16, kept iff dropout_keep_bits says so.
struct DropoutSite {
  uint64_t seed = 0;
  uint32_t epoch = 0;
  float rate = 0.0f;
  uint32_t sites = 1;  // 1 + 2 * blocks
  uint32_t site = 0;
  uint32_t max_sequence = 0;
};

// x scaled by 1 / (1 - rate) where kept, 0 where dropped, in place; mask[i] = 1 when kept (uint8).
// starts (count + 1, int64) and dropout_id (count) per sequence, position (uint32) per row.
void dropout_forward(float* d_x, uint8_t* d_mask, const int64_t* d_starts, const uint64_t* d_dropout_id,
                     const uint32_t* d_position, int64_t count, int64_t rows, int64_t d, const DropoutSite& site,
                     StreamHandle stream);

// dx[i] = mask[i] ? dx[i] * (1 / (1 - rate)) : 0, in place (the CPU pass's dropout_backward).
void dropout_backward(float* d_dx, const uint8_t* d_mask, int64_t count, float rate, StreamHandle stream);

// y[i] += x[i] for i < n: the residual adds of the pass.
void add_into(float* d_y, const float* d_x, int64_t n, StreamHandle stream);

// The item rows' step, as the CPU trainer's loop: for each row r = rows[k], k < *num_rows (rows
// null: every row r < max_rows), unless frozen[r] (null: none), every column takes
// apply_update(p, step_size, l2 = p.l2) with the gradient grad[r]; grad[r] is then zeroed, frozen
// or not, ready for the next batch's scatter. p: step_params of the step (Adam's eps).
void item_rows_update(const OptimizerParams& p, float step_size, float* d_table, float* d_m, float* d_v,
                      float* d_grad, int64_t width, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                      const uint8_t* d_frozen, StreamHandle stream);

// Item metadata: unreached[r] = 0 for every feature-table row r that an item rows[k] (k <
// *num_rows, at most max_rows) lists in v (device arrays); the caller sets unreached to 1 first.
// The feature rows a lazy step updates are the ones the batch's items reached, as on the CPU.
void mark_feature_rows(const FeatureView& v, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                       uint8_t* d_unreached, StreamHandle stream);

// d_table[rows[k]] = sum[k] (width floats) for k < *num_rows (at most max_rows): the groups'
// sums of sum_feature_gradients placed in a whole-table gradient.
void place_group_sums(const float* d_sum, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                      int64_t width, float* d_table, StreamHandle stream);

}  // namespace tastebud::cuda
