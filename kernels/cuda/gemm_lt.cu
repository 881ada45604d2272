// The dense layers' GEMM with its bias and ReLU as a cuBLASLt epilogue (fused step kernels): one
// pass over the output instead of the GEMM's and then bias_relu's. Plans (descriptors, layouts
// and the heuristic's algorithm) are made once per shape and kept with the Blas.
#include <cstdint>
#include <map>
#include <tuple>

#include <cublasLt.h>

#include "cuda/common.cuh"
#include "cuda/dense.h"

namespace tastebud::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

cublasComputeType_t compute_type(GemmPrecision p) {
  return p == GemmPrecision::kTf32   ? CUBLAS_COMPUTE_32F_FAST_TF32
         : p == GemmPrecision::kBf16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                     : CUBLAS_COMPUTE_32F;
}

// One shape's matmul: D' [n x m] = B' [n x k] * A' [k x m] in column-major terms (the row-major
// product C = A B read as its transpose, as gemm() does), with the bias along D's rows.
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;  // the heuristic found an algorithm

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// m, n, k, relu, precision, every operand 16-byte aligned (the heuristic's choice depends on it),
// bf16 operands and output (the bias stays fp32).
using PlanKey = std::tuple<int64_t, int64_t, int64_t, bool, int, bool, bool>;

}  // namespace

struct LtPlans {
  cublasLtHandle_t handle = nullptr;
  StreamHandle stream = nullptr;
  DeviceBuffer<unsigned char> workspace;
  std::map<PlanKey, LtPlan> plans;

  ~LtPlans() {
    plans.clear();
    if (handle) cublasLtDestroy(handle);
  }

  // The plan of this shape, made on first use. A shape cuBLASLt has no algorithm for keeps an
  // unusable plan, and its callers take the separate kernels.
  const LtPlan& plan(const PlanKey& key, GemmPrecision precision, const float* d_bias) {
    auto found = plans.find(key);
    if (found != plans.end()) return found->second;
    LtPlan& p = plans[key];
    const int64_t m = std::get<0>(key), n = std::get<1>(key), k = std::get<2>(key);
    const bool relu = std::get<3>(key), bf16 = std::get<6>(key);
    // bf16 operands are already rounded: plain fp32 accumulation.
    TB_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, bf16 ? CUBLAS_COMPUTE_32F : compute_type(precision), CUDA_R_32F));
    if (bf16) {
      const cudaDataType bias_type = CUDA_R_32F;
      TB_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    }
    const cudaDataType type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasOperation_t none = CUBLAS_OP_N;
    TB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &none, sizeof(none)));
    TB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)));
    const cublasLtEpilogue_t epilogue = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    TB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    TB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &d_bias, sizeof(d_bias)));
    TB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, type, static_cast<uint64_t>(n), static_cast<uint64_t>(k), n));
    TB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, type, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
    TB_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, type, static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));
    cublasLtMatmulPreference_t preference = nullptr;
    TB_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    cublasLtMatmulHeuristicResult_t result{};
    int found_count = 0;
    const size_t bytes = kWorkspaceBytes;
    cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes, sizeof(bytes));
    if (status == CUBLAS_STATUS_SUCCESS) {
      status = cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, preference, 1, &result, &found_count);
    }
    cublasLtMatmulPreferenceDestroy(preference);
    p.usable = status == CUBLAS_STATUS_SUCCESS && found_count > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (p.usable) p.algo = result.algo;
    return p;
  }
};

std::shared_ptr<LtPlans> make_lt_plans(StreamHandle stream) {
  auto lt = std::make_shared<LtPlans>();
  TB_CUBLAS_CHECK(cublasLtCreate(&lt->handle));
  lt->stream = stream;
  lt->workspace.resize(kWorkspaceBytes);
  return lt;
}

namespace {

// One epilogue matmul of the row-major product C = A B + bias (then ReLU), on fp32 or bf16
// operands; false when there are no plans or no algorithm.
bool epilogue_matmul(const Blas& blas, int64_t m, int64_t n, int64_t k, const void* d_a, const void* d_b,
                     const float* d_bias, bool apply_relu, void* d_c, bool bf16) {
  LtPlans* lt = blas.lt();
  if (lt == nullptr || m <= 0 || n <= 0 || k <= 0) return false;
  const bool aligned = aligned16(d_a) && aligned16(d_b) && aligned16(d_c) && aligned16(d_bias);
  const PlanKey key{m, n, k, apply_relu, static_cast<int>(blas.precision()), aligned, bf16};
  const LtPlan& p = lt->plan(key, blas.precision(), d_bias);
  if (!p.usable) return false;
  TB_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &d_bias, sizeof(d_bias)));
  const float alpha = 1.0f, beta = 0.0f;
  TB_CUBLAS_CHECK(cublasLtMatmul(lt->handle, p.op, &alpha, d_b, p.a, d_a, p.b, &beta, d_c, p.c, d_c, p.c, &p.algo,
                                 lt->workspace.data(), kWorkspaceBytes, lt->stream));
  return true;
}

}  // namespace

bool gemm_bias_epilogue(const Blas& blas, int64_t m, int64_t n, int64_t k, const float* d_a, const float* d_b,
                        const float* d_bias, bool apply_relu, float* d_c) {
  return epilogue_matmul(blas, m, n, k, d_a, d_b, d_bias, apply_relu, d_c, false);
}

bool gemm_bias_epilogue_bf16(const Blas& blas, int64_t m, int64_t n, int64_t k, const Bf16* d_a, const Bf16* d_b,
                             const float* d_bias, bool apply_relu, Bf16* d_c) {
  return epilogue_matmul(blas, m, n, k, d_a, d_b, d_bias, apply_relu, d_c, true);
}

}  // namespace tastebud::cuda
