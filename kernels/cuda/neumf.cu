#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/dense.h"
#include "cuda/neumf.h"

namespace tastebud::cuda {
namespace {

// Short slices: a block is one thread per head column (about four warps), so it takes many
// blocks to keep the loads in flight; the finish then sums up to kHeadMaxSlices partials a column.
constexpr int64_t kHeadRowsPerSlice = 64;
constexpr int64_t kHeadMaxSlices = 8192;

int64_t head_slices(int64_t rows) { return row_slices(rows, kHeadRowsPerSlice, kHeadMaxSlices); }

template <class Index>
__global__ void gmf_product_kernel(const float* __restrict__ u, const float* __restrict__ v,
                                   float* __restrict__ out, Index count) {
  for (Index t = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; t < count;
       t += static_cast<Index>(gridDim.x) * blockDim.x) {
    out[t] = u[t] * v[t];
  }
}

// One warp per row; the dot products are reduced across the warp. With item_gmf (fused), gmf is
// the users' GMF rows and each factor's product is formed here: the same float as gmf_product's.
template <class Top>
__global__ void head_forward_kernel(const float* __restrict__ gmf, const float* __restrict__ item_gmf, int64_t f,
                                    const Top* __restrict__ top, int64_t h, const float* __restrict__ w,
                                    const float* __restrict__ b, int64_t rows, float* __restrict__ logits) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; r < rows; r += warps) {
    float z = 0.0f;
    for (int64_t k = lane; k < f; k += 32) {
      const float g = item_gmf ? gmf[r * f + k] * item_gmf[r * f + k] : gmf[r * f + k];
      z += g * w[k];
    }
    for (int64_t k = lane; k < h; k += 32) z += to_float(top[r * h + k]) * w[f + k];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) z += __shfl_xor_sync(0xffffffffu, z, offset);
    if (lane == 0) logits[r] = b[0] + z;
  }
}

template <class Index>
__global__ void head_backward_kernel(const float* __restrict__ dz, const float* __restrict__ ug,
                                     const float* __restrict__ ig, Index f, Index h,
                                     const float* __restrict__ w, Index rows, float* __restrict__ d_ug,
                                     float* __restrict__ d_ig, float* __restrict__ d_top) {
  const Index width = f + h, total = rows * width;
  for (Index t = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index r = t / width, c = t - r * width;
    const float g = dz[r] * w[c];
    if (c < f) {
      d_ug[r * f + c] = g * ig[r * f + c];
      d_ig[r * f + c] = g * ug[r * f + c];
    } else {
      d_top[r * h + (c - f)] = g;
    }
  }
}

// The fused head backward: block x takes rows [x s, x s + s) of the batch, one thread per column
// of [GMF factors (f) | MLP top (h) | bias]; each writes its column's row gradients and sums the
// head's gradient over its rows in row order into partial[x][column]. One read of the rows
// instead of head_backward_kernel's and three column sums'.
template <class Top>
__global__ void head_backward_fused_kernel(const float* __restrict__ dz, const float* __restrict__ ug,
                                           const float* __restrict__ ig, int64_t f, const Top* __restrict__ top,
                                           int64_t h, const float* __restrict__ w, int64_t rows,
                                           int64_t rows_per_slice, float* __restrict__ d_ug,
                                           float* __restrict__ d_ig, Top* __restrict__ d_top,
                                           float* __restrict__ partial) {
  const int64_t columns = f + h + 1;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * rows_per_slice;
  const int64_t end = begin + rows_per_slice < rows ? begin + rows_per_slice : rows;
  for (int64_t c = threadIdx.x; c < columns; c += blockDim.x) {
    const float wc = c < f + h ? w[c] : 0.0f;
    float total = 0.0f;
#pragma unroll 4
    for (int64_t r = begin; r < end; ++r) {
      const float d = dz[r];
      if (c < f) {
        const float u = ug[r * f + c], v = ig[r * f + c], g = d * wc;
        d_ug[r * f + c] = g * v;
        d_ig[r * f + c] = g * u;
        total += (u * v) * d;
      } else if (c < f + h) {
        store(d_top + r * h + (c - f), d * wc);
        total += to_float(top[r * h + (c - f)]) * d;
      } else {
        total += d;
      }
    }
    partial[static_cast<int64_t>(blockIdx.x) * columns + c] = total;
  }
}

// The head's gradient: the slices' partial sums in slice order, the weights' then the bias's.
__global__ void head_finish_kernel(const float* __restrict__ partial, int64_t slices, int64_t columns,
                                   float* __restrict__ d_w, float* __restrict__ d_b) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < columns;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int64_t s = 0; s < slices; ++s) sum += partial[s * columns + c];
    if (c + 1 < columns) {
      d_w[c] = sum;
    } else {
      d_b[0] = sum;
    }
  }
}

}  // namespace

int64_t neumf_partials(const NeuMFShape& shape, int64_t rows) {
  int64_t widest = std::max<int64_t>(shape.head_inputs(), 1);
  for (int64_t w : shape.layers) widest = std::max(widest, w);
  return std::max(column_sum_partials(rows, widest), head_slices(rows) * (shape.head_inputs() + 1));
}

void gmf_product(const float* d_user_gmf, const float* d_item_gmf, float* d_gmf, int64_t count,
                 StreamHandle stream) {
  if (count == 0) return;
  constexpr int kBlock = 256;
  if (index_fits_32(count)) {
    gmf_product_kernel<int32_t><<<grid_for(count, kBlock), kBlock, 0, stream>>>(d_user_gmf, d_item_gmf, d_gmf,
                                                                                static_cast<int32_t>(count));
  } else {
    gmf_product_kernel<int64_t><<<grid_for(count, kBlock), kBlock, 0, stream>>>(d_user_gmf, d_item_gmf, d_gmf, count);
  }
  TB_CUDA_LAUNCH_CHECK("gmf_product_kernel", stream);
}

namespace {

template <class Top>
void launch_head_forward(const float* d_gmf, const float* d_item_gmf, int64_t f, const Top* d_top, int64_t h,
                         const float* d_head_weight, const float* d_head_bias, int64_t rows, float* d_logits,
                         StreamHandle stream) {
  if (rows == 0) return;
  constexpr int kBlock = 256;
  head_forward_kernel<Top><<<grid_for(rows * 32, kBlock), kBlock, 0, stream>>>(
      d_gmf, d_item_gmf, f, d_top, h, d_head_weight, d_head_bias, rows, d_logits);
  TB_CUDA_LAUNCH_CHECK("head_forward_kernel", stream);
}

template <class Top>
void launch_head_backward_fused(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf, int64_t f,
                                const Top* d_top, int64_t h, const float* d_head_weight, int64_t rows,
                                float* d_d_user_gmf, float* d_d_item_gmf, Top* d_d_top, float* d_d_head_weight,
                                float* d_d_head_bias, float* d_partial, StreamHandle stream) {
  if (rows == 0) return;
  const int64_t columns = f + h + 1, slices = head_slices(rows);
  const int64_t rows_per_slice = (rows + slices - 1) / slices;
  const int block = static_cast<int>(std::min<int64_t>(256, (columns + 31) / 32 * 32));
  head_backward_fused_kernel<Top><<<static_cast<unsigned>(slices), block, 0, stream>>>(
      d_dlogits, d_user_gmf, d_item_gmf, f, d_top, h, d_head_weight, rows, rows_per_slice, d_d_user_gmf,
      d_d_item_gmf, d_d_top, d_partial);
  TB_CUDA_LAUNCH_CHECK("head_backward_fused_kernel", stream);
  head_finish_kernel<<<grid_for(columns, 128), 128, 0, stream>>>(d_partial, slices, columns, d_d_head_weight,
                                                                 d_d_head_bias);
  TB_CUDA_LAUNCH_CHECK("head_finish_kernel", stream);
}

}  // namespace

void head_forward(const float* d_gmf, int64_t f, const float* d_top, int64_t h,
                  const float* d_head_weight, const float* d_head_bias, int64_t rows,
                  float* d_logits, StreamHandle stream) {
  launch_head_forward(d_gmf, nullptr, f, d_top, h, d_head_weight, d_head_bias, rows, d_logits, stream);
}

void head_forward_fused(const float* d_user_gmf, const float* d_item_gmf, int64_t f, const float* d_top, int64_t h,
                        const float* d_head_weight, const float* d_head_bias, int64_t rows, float* d_logits,
                        StreamHandle stream) {
  // Without GMF factors there is no product to form: the plain kernel reads no gmf.
  launch_head_forward(d_user_gmf, f > 0 ? d_item_gmf : nullptr, f, d_top, h, d_head_weight, d_head_bias, rows,
                      d_logits, stream);
}

void head_forward_fused(const float* d_user_gmf, const float* d_item_gmf, int64_t f, const Bf16* d_top, int64_t h,
                        const float* d_head_weight, const float* d_head_bias, int64_t rows, float* d_logits,
                        StreamHandle stream) {
  launch_head_forward(d_user_gmf, f > 0 ? d_item_gmf : nullptr, f, as_bf16(d_top), h, d_head_weight, d_head_bias,
                      rows, d_logits, stream);
}

void head_backward(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf,
                   const float* d_gmf, int64_t f, const float* d_top, int64_t h,
                   const float* d_head_weight, int64_t rows, float* d_d_user_gmf,
                   float* d_d_item_gmf, float* d_d_top, float* d_d_head_weight,
                   float* d_d_head_bias, float* d_partial, StreamHandle stream) {
  if (rows == 0) return;
  constexpr int kBlock = 256;
  const unsigned grid = grid_for(rows * (f + h), kBlock);
  if (index_fits_32(rows * (f + h))) {
    head_backward_kernel<int32_t><<<grid, kBlock, 0, stream>>>(
        d_dlogits, d_user_gmf, d_item_gmf, static_cast<int32_t>(f), static_cast<int32_t>(h), d_head_weight,
        static_cast<int32_t>(rows), d_d_user_gmf, d_d_item_gmf, d_d_top);
  } else {
    head_backward_kernel<int64_t><<<grid, kBlock, 0, stream>>>(d_dlogits, d_user_gmf, d_item_gmf, f, h, d_head_weight,
                                                               rows, d_d_user_gmf, d_d_item_gmf, d_d_top);
  }
  TB_CUDA_LAUNCH_CHECK("head_backward_kernel", stream);
  if (f > 0) column_sums(d_gmf, d_dlogits, rows, f, d_partial, d_d_head_weight, stream);
  if (h > 0) column_sums(d_top, d_dlogits, rows, h, d_partial, d_d_head_weight + f, stream);
  column_sums(d_dlogits, nullptr, rows, 1, d_partial, d_d_head_bias, stream);
}

void head_backward_fused(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf, int64_t f,
                         const float* d_top, int64_t h, const float* d_head_weight, int64_t rows,
                         float* d_d_user_gmf, float* d_d_item_gmf, float* d_d_top, float* d_d_head_weight,
                         float* d_d_head_bias, float* d_partial, StreamHandle stream) {
  launch_head_backward_fused(d_dlogits, d_user_gmf, d_item_gmf, f, d_top, h, d_head_weight, rows, d_d_user_gmf,
                             d_d_item_gmf, d_d_top, d_d_head_weight, d_d_head_bias, d_partial, stream);
}

void head_backward_fused(const float* d_dlogits, const float* d_user_gmf, const float* d_item_gmf, int64_t f,
                         const Bf16* d_top, int64_t h, const float* d_head_weight, int64_t rows,
                         float* d_d_user_gmf, float* d_d_item_gmf, Bf16* d_d_top, float* d_d_head_weight,
                         float* d_d_head_bias, float* d_partial, StreamHandle stream) {
  launch_head_backward_fused(d_dlogits, d_user_gmf, d_item_gmf, f, as_bf16(d_top), h, d_head_weight, rows,
                             d_d_user_gmf, d_d_item_gmf, as_bf16(d_d_top), d_d_head_weight, d_d_head_bias, d_partial,
                             stream);
}

namespace {

// bf16 activations apply to a model with dense layers; their buffers must all be there.
bool bf16_mlp(const Blas& blas, const NeuMFShape& shape, const DenseParams& p, const BatchRows& c) {
  const int64_t layers = shape.dense_layers();
  if (!blas.bf16_activations() || layers == 0) return false;
  TB_CHECK(c.x0_16 != nullptr && static_cast<int64_t>(c.acts16.size()) > layers &&
               static_cast<int64_t>(c.act_grads16.size()) > layers &&
               static_cast<int64_t>(p.weights16.size()) >= layers,
           "neumf: bf16 activations without their buffers");
  return true;
}

void neumf_forward_bf16(const Blas& blas, const NeuMFShape& shape, const DenseParams& p, BatchRows& c,
                        StreamHandle stream) {
  const int64_t f = shape.factors, h = shape.mlp_out(), layers = shape.dense_layers();
  to_bf16(c.acts[0], c.x0_16, c.rows * shape.layers[0], stream);
  for (int64_t j = 0; j < layers; ++j) {
    dense_forward_bf16(blas, j == 0 ? c.x0_16 : c.acts16[j], c.rows, shape.layers[j], p.weights16[j], p.biases[j],
                       shape.layers[j + 1], true, c.acts16[j + 1]);
  }
  head_forward_fused(c.user_gmf, c.item_gmf, f, static_cast<const Bf16*>(c.acts16[layers]), h, p.head_weight,
                     p.head_bias, c.rows, c.logits, stream);
}

void neumf_backward_bf16(const Blas& blas, const NeuMFShape& shape, const DenseParams& p, BatchRows& c,
                         DenseGrads& g, StreamHandle stream) {
  const int64_t f = shape.factors, h = shape.mlp_out(), layers = shape.dense_layers();
  head_backward_fused(c.dlogits, c.user_gmf, c.item_gmf, f, static_cast<const Bf16*>(c.acts16[layers]), h,
                      p.head_weight, c.rows, c.user_gmf_grad, c.item_gmf_grad, c.act_grads16[layers], g.head_weight,
                      g.head_bias, c.partial, stream);
  for (int64_t j = layers - 1; j >= 0; --j) {
    // The MLP input's gradient reaches the embedding rows in fp32.
    dense_backward_bf16(blas, j == 0 ? c.x0_16 : c.acts16[j], c.acts16[j + 1], c.act_grads16[j + 1], c.rows,
                        shape.layers[j], p.weights16[j], shape.layers[j + 1], true, g.weights[j], g.biases[j],
                        j == 0 ? nullptr : c.act_grads16[j], j == 0 ? c.act_grads[0] : nullptr, c.partial, stream);
  }
}

}  // namespace

void neumf_forward(const Blas& blas, const NeuMFShape& shape, const DenseParams& p,
                   BatchRows& c, StreamHandle stream) {
  if (bf16_mlp(blas, shape, p, c)) return neumf_forward_bf16(blas, shape, p, c, stream);
  const int64_t f = shape.factors, h = shape.mlp_out(), layers = shape.dense_layers();
  if (f > 0 && !blas.fused()) gmf_product(c.user_gmf, c.item_gmf, c.gmf, c.rows * f, stream);
  for (int64_t j = 0; j < layers; ++j) {
    dense_forward(blas, c.acts[j], c.rows, shape.layers[j], p.weights[j], p.biases[j], shape.layers[j + 1],
                  true, c.acts[j + 1]);
  }
  const float* top = h > 0 ? c.acts[layers] : nullptr;
  if (blas.fused()) {
    head_forward_fused(c.user_gmf, c.item_gmf, f, top, h, p.head_weight, p.head_bias, c.rows, c.logits, stream);
  } else {
    head_forward(c.gmf, f, top, h, p.head_weight, p.head_bias, c.rows, c.logits, stream);
  }
}

void neumf_backward(const Blas& blas, const NeuMFShape& shape, const DenseParams& p,
                    BatchRows& c, DenseGrads& g, StreamHandle stream) {
  if (bf16_mlp(blas, shape, p, c)) return neumf_backward_bf16(blas, shape, p, c, g, stream);
  const int64_t f = shape.factors, h = shape.mlp_out(), layers = shape.dense_layers();
  const float* top = h > 0 ? c.acts[layers] : nullptr;
  float* d_top = h > 0 ? c.act_grads[layers] : nullptr;
  if (blas.fused()) {
    head_backward_fused(c.dlogits, c.user_gmf, c.item_gmf, f, top, h, p.head_weight, c.rows, c.user_gmf_grad,
                        c.item_gmf_grad, d_top, g.head_weight, g.head_bias, c.partial, stream);
  } else {
    head_backward(c.dlogits, c.user_gmf, c.item_gmf, c.gmf, f, top, h, p.head_weight, c.rows, c.user_gmf_grad,
                  c.item_gmf_grad, d_top, g.head_weight, g.head_bias, c.partial, stream);
  }
  for (int64_t j = layers - 1; j >= 0; --j) {
    dense_backward(blas, c.acts[j], c.acts[j + 1], c.act_grads[j + 1], c.rows, shape.layers[j], p.weights[j],
                   shape.layers[j + 1], true, g.weights[j], g.biases[j], c.act_grads[j], c.partial, stream);
  }
}

}  // namespace tastebud::cuda
