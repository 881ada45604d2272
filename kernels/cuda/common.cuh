// For .cu files only: the check macros and launch helpers over the CUDA headers.
#pragma once

#include <cstdint>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/common.h"
#include "tastebud/error.h"

namespace tastebud::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file,
                                     int line);
// After a launch: the launch error, and with debug_sync() the kernel's own.
void check_launch(const char* kernel, StreamHandle stream, const char* file, int line);

inline unsigned grid_for(int64_t threads, int block, int64_t cap = 65535LL * 32) {
  const int64_t blocks = (threads + block - 1) / block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// How many slices of about rows_per_slice rows a deterministic column sum cuts `rows` into: at
// least one, at most max_slices (the slices then grow). Each slice's partial sums are summed in
// slice order afterwards.
inline int64_t row_slices(int64_t rows, int64_t rows_per_slice, int64_t max_slices) {
  const int64_t slices = (rows + rows_per_slice - 1) / rows_per_slice;
  return slices < 1 ? 1 : (slices > max_slices ? max_slices : slices);
}

// bfloat16 rows (Bf16 in the plain headers): the device type, and the loads and stores kernels
// templated on fp32 or bf16 rows share (arithmetic in fp32, a bf16 store rounded to nearest even).
using bf16 = __nv_bfloat16;
inline const bf16* as_bf16(const Bf16* p) { return reinterpret_cast<const bf16*>(p); }
inline bf16* as_bf16(Bf16* p) { return reinterpret_cast<bf16*>(p); }
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(float* at, float x) { *at = x; }
__device__ __forceinline__ void store(bf16* at, float x) { *at = __float2bfloat16_rn(x); }

// Whether a grid-stride kernel over `count` elements can index them in 32 bits: below 2^30, so
// that an index plus grid_for's largest stride (65535 x 32 blocks of at most 256 threads, under
// 2^30) stays below 2^31.
inline bool index_fits_32(int64_t count) { return count < (int64_t{1} << 30); }

}  // namespace tastebud::cuda

#define TB_CUDA_CHECK(expr)                                                           \
  do {                                                                                \
    const cudaError_t tb_status_ = (expr);                                            \
    if (tb_status_ != cudaSuccess)                                                    \
      ::tastebud::cuda::throw_cuda_error(tb_status_, #expr, __FILE__, __LINE__);      \
  } while (0)

#define TB_CUBLAS_CHECK(expr)                                                         \
  do {                                                                                \
    const cublasStatus_t tb_status_ = (expr);                                         \
    if (tb_status_ != CUBLAS_STATUS_SUCCESS)                                          \
      ::tastebud::cuda::throw_cublas_error(tb_status_, #expr, __FILE__, __LINE__);    \
  } while (0)

#define TB_CUDA_LAUNCH_CHECK(kernel, stream) \
  ::tastebud::cuda::check_launch(kernel, stream, __FILE__, __LINE__)
