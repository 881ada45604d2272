#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/dense.h"
#include "cuda/neumf.h"

namespace tastebud::cuda {
namespace {

__global__ void gmf_product_kernel(const float* __restrict__ u, const float* __restrict__ v,
                                   float* __restrict__ out, int64_t count) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < count;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[t] = u[t] * v[t];
  }
}

// One warp per row; the dot products are reduced across the warp.
__global__ void head_forward_kernel(const float* __restrict__ gmf, int64_t f, const float* __restrict__ top,
                                    int64_t h, const float* __restrict__ w, const float* __restrict__ b,
                                    int64_t rows, float* __restrict__ logits) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; r < rows; r += warps) {
    float z = 0.0f;
    for (int64_t k = lane; k < f; k += 32) z += gmf[r * f + k] * w[k];
    for (int64_t k = lane; k < h; k += 32) z += top[r * h + k] * w[f + k];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) z += __shfl_xor_sync(0xffffffffu, z, offset);
    if (lane == 0) logits[r] = b[0] + z;
  }
}

__global__ void head_backward_kernel(const float* __restrict__ dz, const float* __restrict__ ug,
                                     const float* __restrict__ ig, int64_t f, int64_t h,
                                     const float* __restrict__ w, int64_t rows, float* __restrict__ d_ug,
                                     float* __restrict__ d_ig, float* __restrict__ d_top) {
  const int64_t width = f + h, total = rows * width;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / width, c = t - r * width;
    const float g = dz[r] * w[c];
    if (c < f) {
      d_ug[r * f + c] = g * ig[r * f + c];
      d_ig[r * f + c] = g * ug[r * f + c];
    } else {
      d_top[r * h + (c - f)] = g;
    }
  }
}

}  // namespace

int64_t neumf_partials(const NeuMFShape& shape, int64_t rows) {
  int64_t widest = std::max<int64_t>(shape.head_inputs(), 1);
  for (int64_t w : shape.layers) widest = std::max(widest, w);
  return column_sum_partials(rows, widest);
}

void gmf_product(const float* d_user_gmf, const float* d_item_gmf, float* d_gmf, int64_t count,
                 StreamHandle stream) {
  if (count == 0) return;
  constexpr int kBlock = 256;
  gmf_product_kernel<<<grid_for(count, kBlock), kBlock, 0, stream>>>(d_user_gmf, d_item_gmf, d_gmf, count);
  TB_CUDA_LAUNCH_CHECK("gmf_product_kernel", stream);
}

void head_forward(const float* d_gmf, int64_t f, const float* d_top, int64_t h,
                  const float* d_head_weight, const float* d_head_bias, int64_t rows,
                  float* d_logits, StreamHandle stream) {
  if (rows == 0) return;
  constexpr int kBlock = 256;
  head_forward_kernel<<<grid_for(rows * 32, kBlock), kBlock, 0, stream>>>(d_gmf, f, d_top, h, d_head_weight,
                                                                         d_head_bias, rows, d_logits);
  TB_CUDA_LAUNCH_CHECK("head_forward_kernel", stream);
}

void head_backward(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf,
                   const float* d_gmf, int64_t f, const float* d_top, int64_t h,
                   const float* d_head_weight, int64_t rows, float* d_d_user_gmf,
                   float* d_d_item_gmf, float* d_d_top, float* d_d_head_weight,
                   float* d_d_head_bias, float* d_partial, StreamHandle stream) {
  if (rows == 0) return;
  constexpr int kBlock = 256;
  head_backward_kernel<<<grid_for(rows * (f + h), kBlock), kBlock, 0, stream>>>(
      d_dlogits, d_user_gmf, d_item_gmf, f, h, d_head_weight, rows, d_d_user_gmf, d_d_item_gmf, d_d_top);
  TB_CUDA_LAUNCH_CHECK("head_backward_kernel", stream);
  if (f > 0) column_sums(d_gmf, d_dlogits, rows, f, d_partial, d_d_head_weight, stream);
  if (h > 0) column_sums(d_top, d_dlogits, rows, h, d_partial, d_d_head_weight + f, stream);
  column_sums(d_dlogits, nullptr, rows, 1, d_partial, d_d_head_bias, stream);
}

void neumf_forward(const Blas& blas, const NeuMFShape& shape, const DenseParams& p,
                   BatchRows& c, StreamHandle stream) {
  const int64_t f = shape.factors, h = shape.mlp_out(), layers = shape.dense_layers();
  if (f > 0) gmf_product(c.user_gmf, c.item_gmf, c.gmf, c.rows * f, stream);
  for (int64_t j = 0; j < layers; ++j) {
    dense_forward(blas, c.acts[j], c.rows, shape.layers[j], p.weights[j], p.biases[j], shape.layers[j + 1],
                  true, c.acts[j + 1]);
  }
  head_forward(c.gmf, f, h > 0 ? c.acts[layers] : nullptr, h, p.head_weight, p.head_bias, c.rows, c.logits,
               stream);
}

void neumf_backward(const Blas& blas, const NeuMFShape& shape, const DenseParams& p,
                    BatchRows& c, DenseGrads& g, StreamHandle stream) {
  const int64_t f = shape.factors, h = shape.mlp_out(), layers = shape.dense_layers();
  head_backward(c.dlogits, c.user_gmf, c.item_gmf, c.gmf, f, h > 0 ? c.acts[layers] : nullptr, h,
                p.head_weight, c.rows, c.user_gmf_grad, c.item_gmf_grad, h > 0 ? c.act_grads[layers] : nullptr,
                g.head_weight, g.head_bias, c.partial, stream);
  for (int64_t j = layers - 1; j >= 0; --j) {
    dense_backward(blas, c.acts[j], c.acts[j + 1], c.act_grads[j + 1], c.rows, shape.layers[j], p.weights[j],
                   shape.layers[j + 1], true, g.weights[j], g.biases[j], c.act_grads[j], c.partial, stream);
  }
}

}  // namespace tastebud::cuda
