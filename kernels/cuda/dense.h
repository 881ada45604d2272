// Dense layers on the GPU: the twin of cpu/dense.h. Row-major activations [rows x width],
// weights [in x out], everything float32 (with TF32 tensor cores when the Blas handle asks).
#pragma once

#include <cstdint>

#include "cuda/common.h"

namespace tastebud::cuda {

// Row-major C[m x n] = alpha * op(A)[m x k] * op(B)[k x n] + beta * C, where A is stored [m x k]
// ([k x m] when trans_a) and B [k x n] ([n x k] when trans_b). The one place that talks to
// cublasGemmEx; it checks the shapes and throws on any cuBLAS error.
void gemm(const Blas& blas, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          float alpha, const float* d_a, const float* d_b, float beta, float* d_c);

// Row-major C[m x n] = A[m x k] * B[k x n] + bias[n], then the ReLU when asked, in one cuBLASLt
// matmul with the bias (and ReLU) as its epilogue (gemm_lt.cu). Returns false, having done
// nothing, when blas has no cuBLASLt plans (separate kernels) or cuBLASLt no algorithm for it.
bool gemm_bias_epilogue(const Blas& blas, int64_t m, int64_t n, int64_t k, const float* d_a, const float* d_b,
                        const float* d_bias, bool apply_relu, float* d_c);

// y[r, :] = relu(y[r, :] + bias) (or without the ReLU), in place.
void bias_relu(float* d_y, const float* d_bias, int64_t rows, int64_t width, bool apply_relu,
               StreamHandle stream);

// d_out[i] = out[i] > 0 ? d_out[i] : 0.
void relu_backward(float* d_d_out, const float* d_out, int64_t count, StreamHandle stream);

// out[j] = sum over rows r of m[r, j] * (row_scale ? row_scale[r] : 1), summed in a fixed order
// (per-slice partial sums, then the slices in order): deterministic, no atomics. `partial` needs
// column_sum_partials(rows, width) floats.
int64_t column_sum_partials(int64_t rows, int64_t width);
void column_sums(const float* d_m, const float* d_row_scale, int64_t rows, int64_t width,
                 float* d_partial, float* d_out, StreamHandle stream);

// The fused ReLU backward and bias gradient: dy[i] = y[i] > 0 ? dy[i] : 0 in place, and
// d_bias[j] the column sums of the masked dy, in one pass over dy (column_sums' slices and order).
void relu_bias_gradient(float* d_dy, const float* d_y, int64_t rows, int64_t width, float* d_partial,
                        float* d_bias, StreamHandle stream);

// bfloat16 activations (Blas::bf16_activations()): the same layers over bf16 operands, products
// accumulated in fp32. out[i] = bf16(in[i]), rounded to nearest even.
void to_bf16(const float* d_in, Bf16* d_out, int64_t count, StreamHandle stream);
// out = relu(in * weight + bias) in bf16, the bias fp32: one cuBLASLt epilogue GEMM (or the GEMM
// and then a bias+ReLU pass where cuBLASLt has no algorithm).
void dense_forward_bf16(const Blas& blas, const Bf16* d_in, int64_t rows, int64_t in_width, const Bf16* d_weight,
                        const float* d_bias, int64_t out_width, bool apply_relu, Bf16* d_out);
// The backward pass: d_out masked in place by the ReLU, d_weight and d_bias (fp32) overwritten,
// and the input's gradient into d_d_in16 (bf16, a hidden layer's) or d_d_in32 (fp32, the MLP
// input's, which reaches the embedding rows); at most one of them non-null.
void dense_backward_bf16(const Blas& blas, const Bf16* d_in, const Bf16* d_out, Bf16* d_d_out, int64_t rows,
                         int64_t in_width, const Bf16* d_weight, int64_t out_width, bool apply_relu,
                         float* d_d_weight, float* d_d_bias, Bf16* d_d_in16, float* d_d_in32, float* d_partial,
                         StreamHandle stream);
// gemm_bias_epilogue over bf16 operands and output, the bias fp32.
bool gemm_bias_epilogue_bf16(const Blas& blas, int64_t m, int64_t n, int64_t k, const Bf16* d_a, const Bf16* d_b,
                             const float* d_bias, bool apply_relu, Bf16* d_c);

// out = relu(in * weight + bias), or without the ReLU (fused kernels: one epilogue GEMM).
void dense_forward(const Blas& blas, const float* d_in, int64_t rows, int64_t in_width,
                   const float* d_weight, const float* d_bias, int64_t out_width, bool apply_relu,
                   float* d_out);

// Backward through out = relu(in * weight + bias). d_out is masked in place by the ReLU. Unlike
// the CPU twin, which accumulates (+=) into per-chunk buffers, d_weight and d_bias are
// overwritten: the GPU takes the whole batch in one pass. d_in, when not null, is overwritten.
// Fused kernels: the mask and the bias gradient in one pass (relu_bias_gradient).
void dense_backward(const Blas& blas, const float* d_in, const float* d_out, float* d_d_out,
                    int64_t rows, int64_t in_width, const float* d_weight, int64_t out_width,
                    bool apply_relu, float* d_d_weight, float* d_d_bias, float* d_d_in,
                    float* d_partial, StreamHandle stream);

}  // namespace tastebud::cuda
