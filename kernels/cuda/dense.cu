#include <climits>
#include <string>

#include "cuda/common.cuh"
#include "cuda/dense.h"

namespace tastebud::cuda {
namespace {

constexpr int kColumnTile = 32;      // columns per block, one per lane
constexpr int kRowLanes = 8;         // rows read at once per block
constexpr int64_t kRowsPerSlice = 1024;
constexpr int64_t kMaxSlices = 2048;

int64_t slices_for(int64_t rows) { return row_slices(rows, kRowsPerSlice, kMaxSlices); }

// Index: int32_t where the element count fits (index_fits_32), else int64_t; the division and
// remainder of 64-bit indices cost several times the 32-bit ones. T: fp32 rows, or bf16 rows
// (the sum in fp32, rounded once).
template <class Index, class T = float>
__global__ void bias_relu_kernel(T* __restrict__ y, const float* __restrict__ bias, Index rows,
                                 Index width, bool apply_relu) {
  const Index total = rows * width;
  for (Index t = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<Index>(gridDim.x) * blockDim.x) {
    const float v = to_float(y[t]) + bias[t % width];
    store(y + t, apply_relu ? fmaxf(v, 0.0f) : v);
  }
}

template <class Index>
__global__ void relu_backward_kernel(float* __restrict__ dy, const float* __restrict__ y, Index count) {
  for (Index t = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; t < count;
       t += static_cast<Index>(gridDim.x) * blockDim.x) {
    if (!(y[t] > 0.0f)) dy[t] = 0.0f;
  }
}

// Block (32, 8) sums columns [32 bx, 32 bx + 32) over the rows of slice by; lanes read 128
// consecutive bytes of a row (64 of bf16 rows), summing in fp32. With relu_out (the fused ReLU
// backward), each element is first masked by relu_out > 0 and written back so.
template <class T>
__global__ void column_partials_kernel(T* __restrict__ m, const float* __restrict__ scale,
                                       const T* __restrict__ relu_out, int64_t rows, int64_t width,
                                       int64_t rows_per_slice, float* __restrict__ partial) {
  __shared__ float tile[kRowLanes][kColumnTile + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_slice;
  const int64_t end = begin + rows_per_slice < rows ? begin + rows_per_slice : rows;
  float total = 0.0f;
  if (col < width) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) {
      float v = to_float(m[r * width + col]);
      if (relu_out != nullptr && !(to_float(relu_out[r * width + col]) > 0.0f)) {
        v = 0.0f;
        store(m + r * width + col, 0.0f);
      }
      total += scale ? v * scale[r] : v;
    }
  }
  tile[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && col < width) {
    float sum = 0.0f;
    for (int i = 0; i < kRowLanes; ++i) sum += tile[i][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.y) * width + col] = sum;
  }
}

__global__ void to_bf16_kernel(const float* __restrict__ in, bf16* __restrict__ out, int64_t count) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < count;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[t] = __float2bfloat16_rn(in[t]);
  }
}

__global__ void column_finish_kernel(const float* __restrict__ partial, int64_t slices, int64_t width,
                                     float* __restrict__ out) {
  for (int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; col < width;
       col += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int64_t s = 0; s < slices; ++s) sum += partial[s * width + col];
    out[col] = sum;
  }
}

}  // namespace

namespace {

// gemm() over any operand and output types cuBLAS takes with fp32 accumulation: fp32 operands at
// the Blas's precision, bf16 operands (already rounded) in plain fp32 compute.
void gemm_typed(const Blas& blas, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const void* d_a, cudaDataType a_type, const void* d_b, cudaDataType b_type, float beta, void* d_c,
                cudaDataType c_type) {
  TB_CHECK(m > 0 && n > 0 && k > 0,
           "gemm: empty shape " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k));
  TB_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX, "gemm: a dimension exceeds cuBLAS's int range");
  TB_CHECK(d_a != nullptr && d_b != nullptr && d_c != nullptr, "gemm: null operand");
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands and read
  // each row-major matrix as its column-major transpose.
  const int lda = static_cast<int>(trans_a ? m : k);
  const int ldb = static_cast<int>(trans_b ? k : n);
  const cublasComputeType_t compute = a_type == CUDA_R_16BF                       ? CUBLAS_COMPUTE_32F
                                      : blas.precision() == GemmPrecision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                      : blas.precision() == GemmPrecision::kBf16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                                                 : CUBLAS_COMPUTE_32F;
  TB_CUBLAS_CHECK(cublasGemmEx(blas.get(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                               trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                               static_cast<int>(m), static_cast<int>(k), &alpha, d_b, b_type, ldb,
                               d_a, a_type, lda, &beta, d_c, c_type, static_cast<int>(n),
                               compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void gemm(const Blas& blas, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          float alpha, const float* d_a, const float* d_b, float beta, float* d_c) {
  gemm_typed(blas, trans_a, trans_b, m, n, k, alpha, d_a, CUDA_R_32F, d_b, CUDA_R_32F, beta, d_c, CUDA_R_32F);
}

void bias_relu(float* d_y, const float* d_bias, int64_t rows, int64_t width, bool apply_relu,
               StreamHandle stream) {
  if (rows * width == 0) return;
  constexpr int kBlock = 256;
  const unsigned grid = grid_for(rows * width, kBlock);
  if (index_fits_32(rows * width)) {
    bias_relu_kernel<int32_t><<<grid, kBlock, 0, stream>>>(d_y, d_bias, static_cast<int32_t>(rows),
                                                           static_cast<int32_t>(width), apply_relu);
  } else {
    bias_relu_kernel<int64_t><<<grid, kBlock, 0, stream>>>(d_y, d_bias, rows, width, apply_relu);
  }
  TB_CUDA_LAUNCH_CHECK("bias_relu_kernel", stream);
}

void relu_backward(float* d_d_out, const float* d_out, int64_t count, StreamHandle stream) {
  if (count == 0) return;
  constexpr int kBlock = 256;
  if (index_fits_32(count)) {
    relu_backward_kernel<int32_t><<<grid_for(count, kBlock), kBlock, 0, stream>>>(d_d_out, d_out,
                                                                                  static_cast<int32_t>(count));
  } else {
    relu_backward_kernel<int64_t><<<grid_for(count, kBlock), kBlock, 0, stream>>>(d_d_out, d_out, count);
  }
  TB_CUDA_LAUNCH_CHECK("relu_backward_kernel", stream);
}

int64_t column_sum_partials(int64_t rows, int64_t width) { return slices_for(rows) * width; }

namespace {

// column_sums, and with relu_out the fused ReLU backward (m masked in place).
void column_sums_of(float* d_m, const float* d_row_scale, const float* d_relu_out, int64_t rows, int64_t width,
                    float* d_partial, float* d_out, StreamHandle stream) {
  if (width == 0) return;
  if (rows == 0) {
    fill_zero(d_out, sizeof(float) * width, stream);
    return;
  }
  const int64_t slices = slices_for(rows);
  const int64_t rows_per_slice = (rows + slices - 1) / slices;
  const dim3 grid(static_cast<unsigned>((width + kColumnTile - 1) / kColumnTile), static_cast<unsigned>(slices));
  column_partials_kernel<float><<<grid, dim3(kColumnTile, kRowLanes), 0, stream>>>(
      d_m, d_row_scale, d_relu_out, rows, width, rows_per_slice, d_partial);
  TB_CUDA_LAUNCH_CHECK("column_partials_kernel", stream);
  column_finish_kernel<<<grid_for(width, 128), 128, 0, stream>>>(d_partial, slices, width, d_out);
  TB_CUDA_LAUNCH_CHECK("column_finish_kernel", stream);
}

}  // namespace

void column_sums(const float* d_m, const float* d_row_scale, int64_t rows, int64_t width,
                 float* d_partial, float* d_out, StreamHandle stream) {
  // Without relu_out the kernel only reads m.
  column_sums_of(const_cast<float*>(d_m), d_row_scale, nullptr, rows, width, d_partial, d_out, stream);
}

void relu_bias_gradient(float* d_dy, const float* d_y, int64_t rows, int64_t width, float* d_partial,
                        float* d_bias, StreamHandle stream) {
  column_sums_of(d_dy, nullptr, d_y, rows, width, d_partial, d_bias, stream);
}

void dense_forward(const Blas& blas, const float* d_in, int64_t rows, int64_t in_width,
                   const float* d_weight, const float* d_bias, int64_t out_width, bool apply_relu,
                   float* d_out) {
  if (rows == 0) return;
  if (blas.fused() && gemm_bias_epilogue(blas, rows, out_width, in_width, d_in, d_weight, d_bias, apply_relu, d_out)) {
    return;
  }
  gemm(blas, false, false, rows, out_width, in_width, 1.0f, d_in, d_weight, 0.0f, d_out);
  StreamHandle stream = nullptr;
  TB_CUBLAS_CHECK(cublasGetStream(blas.get(), &stream));
  bias_relu(d_out, d_bias, rows, out_width, apply_relu, stream);
}

void dense_backward(const Blas& blas, const float* d_in, const float* d_out, float* d_d_out,
                    int64_t rows, int64_t in_width, const float* d_weight, int64_t out_width,
                    bool apply_relu, float* d_d_weight, float* d_d_bias, float* d_d_in,
                    float* d_partial, StreamHandle stream) {
  if (rows == 0) return;
  if (apply_relu && blas.fused()) {
    relu_bias_gradient(d_d_out, d_out, rows, out_width, d_partial, d_d_bias, stream);
  } else {
    if (apply_relu) relu_backward(d_d_out, d_out, rows * out_width, stream);
    column_sums(d_d_out, nullptr, rows, out_width, d_partial, d_d_bias, stream);
  }
  // dW [in x out] = in^T [in x rows] * dY [rows x out]
  gemm(blas, true, false, in_width, out_width, rows, 1.0f, d_in, d_d_out, 0.0f, d_d_weight);
  // dX [rows x in] = dY [rows x out] * W^T [out x in]
  if (d_d_in != nullptr) gemm(blas, false, true, rows, in_width, out_width, 1.0f, d_d_out, d_weight, 0.0f, d_d_in);
}

void to_bf16(const float* d_in, Bf16* d_out, int64_t count, StreamHandle stream) {
  if (count == 0) return;
  constexpr int kBlock = 256;
  to_bf16_kernel<<<grid_for(count, kBlock), kBlock, 0, stream>>>(d_in, as_bf16(d_out), count);
  TB_CUDA_LAUNCH_CHECK("to_bf16_kernel", stream);
}

void dense_forward_bf16(const Blas& blas, const Bf16* d_in, int64_t rows, int64_t in_width, const Bf16* d_weight,
                        const float* d_bias, int64_t out_width, bool apply_relu, Bf16* d_out) {
  if (rows == 0) return;
  if (gemm_bias_epilogue_bf16(blas, rows, out_width, in_width, d_in, d_weight, d_bias, apply_relu, d_out)) return;
  gemm_typed(blas, false, false, rows, out_width, in_width, 1.0f, d_in, CUDA_R_16BF, d_weight, CUDA_R_16BF, 0.0f,
             d_out, CUDA_R_16BF);
  StreamHandle stream = nullptr;
  TB_CUBLAS_CHECK(cublasGetStream(blas.get(), &stream));
  constexpr int kBlock = 256;
  bias_relu_kernel<int64_t, bf16><<<grid_for(rows * out_width, kBlock), kBlock, 0, stream>>>(
      as_bf16(d_out), d_bias, rows, out_width, apply_relu);
  TB_CUDA_LAUNCH_CHECK("bias_relu_kernel", stream);
}

void dense_backward_bf16(const Blas& blas, const Bf16* d_in, const Bf16* d_out, Bf16* d_d_out, int64_t rows,
                         int64_t in_width, const Bf16* d_weight, int64_t out_width, bool apply_relu,
                         float* d_d_weight, float* d_d_bias, Bf16* d_d_in16, float* d_d_in32, float* d_partial,
                         StreamHandle stream) {
  if (rows == 0) return;
  TB_CHECK(d_d_in16 == nullptr || d_d_in32 == nullptr, "dense_backward_bf16: two input gradients");
  const int64_t slices = slices_for(rows);
  const int64_t rows_per_slice = (rows + slices - 1) / slices;
  const dim3 grid(static_cast<unsigned>((out_width + kColumnTile - 1) / kColumnTile), static_cast<unsigned>(slices));
  column_partials_kernel<bf16><<<grid, dim3(kColumnTile, kRowLanes), 0, stream>>>(
      as_bf16(d_d_out), nullptr, apply_relu ? as_bf16(d_out) : nullptr, rows, out_width, rows_per_slice, d_partial);
  TB_CUDA_LAUNCH_CHECK("column_partials_kernel", stream);
  column_finish_kernel<<<grid_for(out_width, 128), 128, 0, stream>>>(d_partial, slices, out_width, d_d_bias);
  TB_CUDA_LAUNCH_CHECK("column_finish_kernel", stream);
  // dW [in x out] = in^T [in x rows] * dY [rows x out], into fp32
  gemm_typed(blas, true, false, in_width, out_width, rows, 1.0f, d_in, CUDA_R_16BF, d_d_out, CUDA_R_16BF, 0.0f,
             d_d_weight, CUDA_R_32F);
  // dX [rows x in] = dY [rows x out] * W^T [out x in]
  if (d_d_in16 != nullptr) {
    gemm_typed(blas, false, true, rows, in_width, out_width, 1.0f, d_d_out, CUDA_R_16BF, d_weight, CUDA_R_16BF, 0.0f,
               d_d_in16, CUDA_R_16BF);
  } else if (d_d_in32 != nullptr) {
    gemm_typed(blas, false, true, rows, in_width, out_width, 1.0f, d_d_out, CUDA_R_16BF, d_weight, CUDA_R_16BF, 0.0f,
               d_d_in32, CUDA_R_32F);
  }
}

}  // namespace tastebud::cuda
