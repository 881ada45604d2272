// The NeuMF forward and backward pass over one batch of gathered rows on the GPU: the twin of
// cpu/neumf.h (which the GPU runs over the whole batch at once instead of per chunk).
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/common.h"
#include "tastebud/neumf_shape.h"

namespace tastebud::cuda {

using NeuMFShape = tastebud::NeuMFShape;

struct DenseParams {
  std::vector<const float*> weights, biases;  // per dense layer, device pointers
  std::vector<const Bf16*> weights16;          // bf16 activations: the weights' bf16 copies
  const float* head_weight = nullptr;
  const float* head_bias = nullptr;
};

struct DenseGrads {
  std::vector<float*> weights, biases;
  float* head_weight = nullptr;
  float* head_bias = nullptr;
};

// Device pointers to one batch's rows, laid out as cpu::ChunkRows. `partial` is scratch for the
// column sums: neumf_partials(shape, rows) floats.
struct BatchRows {
  int64_t rows = 0;
  const float* user_gmf = nullptr;
  const float* item_gmf = nullptr;
  float* gmf = nullptr;
  std::vector<float*> acts;
  std::vector<float*> act_grads;
  // bf16 activations (Blas::bf16_activations() and an MLP): the MLP input's bf16 copy (x0_16) and
  // the hidden layers' outputs and gradients in bf16 (acts16[j], act_grads16[j] for j >= 1, whose
  // fp32 twins are then unused); acts[0] and act_grads[0] stay fp32.
  Bf16* x0_16 = nullptr;
  std::vector<Bf16*> acts16, act_grads16;
  float* logits = nullptr;
  const float* dlogits = nullptr;
  float* user_gmf_grad = nullptr;
  float* item_gmf_grad = nullptr;
  float* partial = nullptr;
};
int64_t neumf_partials(const NeuMFShape& shape, int64_t rows);

// gmf[i] = user_gmf[i] * item_gmf[i].
void gmf_product(const float* d_user_gmf, const float* d_item_gmf, float* d_gmf, int64_t count,
                 StreamHandle stream);

// logits[r] = head_bias + gmf[r, :] . head_weight[0 .. f) + top[r, :] . head_weight[f .. f + h).
void head_forward(const float* d_gmf, int64_t f, const float* d_top, int64_t h,
                  const float* d_head_weight, const float* d_head_bias, int64_t rows,
                  float* d_logits, StreamHandle stream);

// The same with the GMF product formed inside (fused kernels): no gmf rows are written or read.
// The MLP top in fp32, or in bf16 (bf16 activations).
void head_forward_fused(const float* d_user_gmf, const float* d_item_gmf, int64_t f, const float* d_top, int64_t h,
                        const float* d_head_weight, const float* d_head_bias, int64_t rows, float* d_logits,
                        StreamHandle stream);
void head_forward_fused(const float* d_user_gmf, const float* d_item_gmf, int64_t f, const Bf16* d_top, int64_t h,
                        const float* d_head_weight, const float* d_head_bias, int64_t rows, float* d_logits,
                        StreamHandle stream);

// The head's backward: per-row gradients of the GMF factors and the MLP top, and the head's own
// gradients (overwritten) summed deterministically over the rows.
void head_backward(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf,
                   const float* d_gmf, int64_t f, const float* d_top, int64_t h,
                   const float* d_head_weight, int64_t rows, float* d_d_user_gmf,
                   float* d_d_item_gmf, float* d_d_top, float* d_d_head_weight,
                   float* d_d_head_bias, float* d_partial, StreamHandle stream);

// The same in one pass over the rows and one over the slices' sums (fused kernels), the GMF
// product formed from the factors; `partial` as neumf_partials sizes it.
void head_backward_fused(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf, int64_t f,
                         const float* d_top, int64_t h, const float* d_head_weight, int64_t rows,
                         float* d_d_user_gmf, float* d_d_item_gmf, float* d_d_top, float* d_d_head_weight,
                         float* d_d_head_bias, float* d_partial, StreamHandle stream);
void head_backward_fused(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf, int64_t f,
                         const Bf16* d_top, int64_t h, const float* d_head_weight, int64_t rows,
                         float* d_d_user_gmf, float* d_d_item_gmf, Bf16* d_d_top, float* d_d_head_weight,
                         float* d_d_head_bias, float* d_partial, StreamHandle stream);

// Fused kernels (blas.fused()): the epilogue GEMMs, the fused head, and no gmf rows; with
// blas.bf16_activations() the MLP runs on the batch's bf16 buffers and p.weights16.
void neumf_forward(const Blas& blas, const NeuMFShape& shape, const DenseParams& p,
                   BatchRows& batch, StreamHandle stream);

// Overwrites the dense gradients in g and writes the per-row embedding gradients (user_gmf_grad,
// item_gmf_grad, act_grads[0]).
void neumf_backward(const Blas& blas, const NeuMFShape& shape, const DenseParams& p,
                    BatchRows& batch, DenseGrads& g, StreamHandle stream);

}  // namespace tastebud::cuda
