#include <algorithm>
#include <string>

#include "cuda/common.cuh"
#include "cuda/scoring.h"

namespace tastebud::cuda {
namespace {

constexpr int kTowerThreads = 128;
// Each block sweeps 1024 items, so it loads the tower into shared memory once for all of them.
constexpr int kTowerItemsPerThread = 8;
constexpr int kThreads = 256;

// ---- the fused tower ----------------------------------------------------------------------------

struct TowerArgs {
  const float* item_gmf;
  const float* item_part;
  const float* tower;
  const float* user_part;
  const float* user_head;
  float* scores;
  int64_t items, users, ld, tower_floats;
  int factors;
  float head_bias;
};

template <int First, int... Rest>
constexpr int first_of = First;

// A 16-byte shared-memory load. Written out because nvcc splits plain float4 loads into four
// scalar ones in the 64-wide towers (one LDS per two FMAs instead of one per eight).
__device__ __forceinline__ float4 shared4(const float* p) {
  float4 v;
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(address));
  return v;
}

// out[p] = bias + relu(in[p]) * w, for P rows at once; In and Out are multiples of 4 and w, b are
// 16-byte aligned shared memory read by the whole warp at one address (a broadcast).
template <int P, int In, int Out>
__device__ __forceinline__ void dense_layer(const float (&in)[P][In], float (&out)[P][Out],
                                            const float* w, const float* b) {
#pragma unroll
  for (int j = 0; j < Out; j += 4) {
    const float4 b4 = shared4(b + j);
#pragma unroll
    for (int p = 0; p < P; ++p) {
      out[p][j] = b4.x;
      out[p][j + 1] = b4.y;
      out[p][j + 2] = b4.z;
      out[p][j + 3] = b4.w;
    }
  }
#pragma unroll
  for (int k = 0; k < In; ++k) {
    float a[P];
#pragma unroll
    for (int p = 0; p < P; ++p) a[p] = fmaxf(in[p][k], 0.0f);
#pragma unroll
    for (int j = 0; j < Out; j += 4) {
      const float4 w4 = shared4(w + k * Out + j);
#pragma unroll
      for (int p = 0; p < P; ++p) {
        out[p][j] = fmaf(a[p], w4.x, out[p][j]);
        out[p][j + 1] = fmaf(a[p], w4.y, out[p][j + 1]);
        out[p][j + 2] = fmaf(a[p], w4.z, out[p][j + 2]);
        out[p][j + 3] = fmaf(a[p], w4.w, out[p][j + 3]);
      }
    }
  }
}

// The layers after the first: `in` holds pre-activations of width In; w points at the next layer's
// packed weight (or, when no layer is left, at the head's MLP half).
template <int P, int In, int... Rest>
__device__ __forceinline__ void tower_rest(const float (&in)[P][In], const float* w,
                                           float (&z)[P]) {
  if constexpr (sizeof...(Rest) == 0) {
#pragma unroll
    for (int k = 0; k < In; k += 4) {
      const float4 h4 = shared4(w + k);
#pragma unroll
      for (int p = 0; p < P; ++p) {
        z[p] = fmaf(fmaxf(in[p][k], 0.0f), h4.x, z[p]);
        z[p] = fmaf(fmaxf(in[p][k + 1], 0.0f), h4.y, z[p]);
        z[p] = fmaf(fmaxf(in[p][k + 2], 0.0f), h4.z, z[p]);
        z[p] = fmaf(fmaxf(in[p][k + 3], 0.0f), h4.w, z[p]);
      }
    }
  } else {
    constexpr int Out = first_of<Rest...>;
    float out[P][Out];
    dense_layer<P, In, Out>(in, out, w, w + In * Out);
    tower_rest<P, Rest...>(out, w + In * Out + Out, z);
  }
}

// The first layer's activations relu(user_part + item_part) are formed as the second layer consumes
// them, so they never occupy registers as a whole. up: P user rows [P x L1] in shared memory; ip:
// the item's row in global memory (16-byte aligned: L1 is a multiple of 4).
template <int P, int L1, int... Rest>
__device__ __forceinline__ void tower(const float* up, const float* __restrict__ ip, const float* w,
                                      float (&z)[P]) {
  const float4* ip4 = reinterpret_cast<const float4*>(ip);
  if constexpr (sizeof...(Rest) == 0) {
#pragma unroll
    for (int k = 0; k < L1; k += 4) {
      const float4 i4 = __ldg(ip4 + k / 4);
      const float4 h4 = shared4(w + k);
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const float4 u4 = shared4(up + p * L1 + k);
        z[p] = fmaf(fmaxf(u4.x + i4.x, 0.0f), h4.x, z[p]);
        z[p] = fmaf(fmaxf(u4.y + i4.y, 0.0f), h4.y, z[p]);
        z[p] = fmaf(fmaxf(u4.z + i4.z, 0.0f), h4.z, z[p]);
        z[p] = fmaf(fmaxf(u4.w + i4.w, 0.0f), h4.w, z[p]);
      }
    }
  } else {
    constexpr int L2 = first_of<Rest...>;
    const float* b = w + L1 * L2;
    float h[P][L2];
#pragma unroll
    for (int j = 0; j < L2; j += 4) {
      const float4 b4 = shared4(b + j);
#pragma unroll
      for (int p = 0; p < P; ++p) {
        h[p][j] = b4.x;
        h[p][j + 1] = b4.y;
        h[p][j + 2] = b4.z;
        h[p][j + 3] = b4.w;
      }
    }
#pragma unroll
    for (int k = 0; k < L1; k += 4) {
      const float4 i4 = __ldg(ip4 + k / 4);
      float a[P][4];
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const float4 u4 = shared4(up + p * L1 + k);
        a[p][0] = fmaxf(u4.x + i4.x, 0.0f);
        a[p][1] = fmaxf(u4.y + i4.y, 0.0f);
        a[p][2] = fmaxf(u4.z + i4.z, 0.0f);
        a[p][3] = fmaxf(u4.w + i4.w, 0.0f);
      }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int j = 0; j < L2; j += 4) {
          const float4 w4 = shared4(w + (k + kk) * L2 + j);
#pragma unroll
          for (int p = 0; p < P; ++p) {
            h[p][j] = fmaf(a[p][kk], w4.x, h[p][j]);
            h[p][j + 1] = fmaf(a[p][kk], w4.y, h[p][j + 1]);
            h[p][j + 2] = fmaf(a[p][kk], w4.z, h[p][j + 2]);
            h[p][j + 3] = fmaf(a[p][kk], w4.w, h[p][j + 3]);
          }
        }
      }
    }
    tower_rest<P, Rest...>(h, b + L2, z);
  }
}

template <int... W>
constexpr int first_width() {
  if constexpr (sizeof...(W) == 0) {
    return 0;
  } else {
    return first_of<W...>;
  }
}

// Block (x, y): users [P y, P y + P) of the chunk against the items x * 128 + threadIdx.x, strided
// by the grid. Shared memory: the packed tower, then the P users' first-layer halves [P x L1], then
// their GMF rows [P x factors]. Missing users of the last group read zeros and write nothing.
template <int P, int... W>
__global__ void __launch_bounds__(kTowerThreads) score_tower_kernel(TowerArgs a) {
  constexpr int L1 = first_width<W...>();
  extern __shared__ float4 tower_shared[];
  float* w = reinterpret_cast<float*>(tower_shared);
  float* up = w + a.tower_floats;
  float* uh = up + P * L1;
  const int f = a.factors;
  const int64_t first_user = static_cast<int64_t>(blockIdx.y) * P;
  const int group = static_cast<int>(a.users - first_user < P ? a.users - first_user : P);

  const float4* tower4 = reinterpret_cast<const float4*>(a.tower);
  for (int64_t t = threadIdx.x; t < a.tower_floats / 4; t += blockDim.x)
    tower_shared[t] = __ldg(tower4 + t);
  if constexpr (L1 > 0) {
    for (int t = threadIdx.x; t < P * L1; t += blockDim.x) {
      const int p = t / L1;
      up[t] = p < group ? a.user_part[(first_user + p) * L1 + t % L1] : 0.0f;
    }
  }
  for (int t = threadIdx.x; t < P * f; t += blockDim.x) {
    const int p = t / f;
    uh[t] = p < group ? a.user_head[(first_user + p) * f + t % f] : 0.0f;
  }
  __syncthreads();

  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.items;
       i += step) {
    float z[P];
#pragma unroll
    for (int p = 0; p < P; ++p) z[p] = a.head_bias;
    const float* ig = a.item_gmf + i * f;
    if ((f & 3) == 0) {
      for (int j = 0; j < f; j += 4) {
        const float4 g4 = __ldg(reinterpret_cast<const float4*>(ig + j));
#pragma unroll
        for (int p = 0; p < P; ++p) {
          const float4 u4 = shared4(uh + p * f + j);
          z[p] = fmaf(u4.x, g4.x, z[p]);
          z[p] = fmaf(u4.y, g4.y, z[p]);
          z[p] = fmaf(u4.z, g4.z, z[p]);
          z[p] = fmaf(u4.w, g4.w, z[p]);
        }
      }
    } else {
      for (int j = 0; j < f; ++j) {
        const float g = __ldg(ig + j);
#pragma unroll
        for (int p = 0; p < P; ++p) z[p] = fmaf(uh[p * f + j], g, z[p]);
      }
    }
    if constexpr (L1 > 0) tower<P, W...>(up, a.item_part + i * L1, w, z);
#pragma unroll
    for (int p = 0; p < P; ++p) {
      if (p < group) a.scores[(first_user + p) * a.ld + i] = z[p];
    }
  }
}

template <int P, int... W>
void launch_tower(const TowerArgs& a, StreamHandle stream) {
  constexpr int L1 = first_width<W...>();
  const size_t shared =
      static_cast<size_t>(a.tower_floats + P * L1 + P * a.factors) * sizeof(float);
  if (shared > 48 * 1024) {
    TB_CUDA_CHECK(cudaFuncSetAttribute(score_tower_kernel<P, W...>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared)));
  }
  const int64_t groups = (a.users + P - 1) / P;
  TB_CHECK(groups <= 65535, "score_catalog_fused: too many users in one launch");
  const int64_t tiles =
      (a.items + kTowerThreads * kTowerItemsPerThread - 1) / (kTowerThreads * kTowerItemsPerThread);
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(tiles, 1), INT32_MAX)),
                  static_cast<unsigned>(groups));
  score_tower_kernel<P, W...><<<grid, kTowerThreads, shared, stream>>>(a);
  TB_CUDA_LAUNCH_CHECK("score_tower_kernel", stream);
}

// The instantiated shapes, smallest first within a depth. P: users per block, as many as the
// registers allow (the widest layer pair's accumulators, P x (L_j + L_j+1), stay under ~130).
struct FusedShape {
  std::vector<int64_t> widths;
  int users;
  void (*launch)(const TowerArgs&, StreamHandle);
};

const std::vector<FusedShape>& fused_shapes() {
  static const std::vector<FusedShape> shapes = {
      {{}, 4, launch_tower<4>},
      {{16}, 4, launch_tower<4, 16>},
      {{32}, 4, launch_tower<4, 32>},
      {{64}, 4, launch_tower<4, 64>},
      {{16, 8}, 4, launch_tower<4, 16, 8>},
      {{32, 16}, 4, launch_tower<4, 32, 16>},
      {{64, 32}, 2, launch_tower<2, 64, 32>},
      {{32, 16, 8}, 4, launch_tower<4, 32, 16, 8>},
      {{64, 32, 16}, 2, launch_tower<2, 64, 32, 16>},
      {{64, 32, 16, 8}, 2, launch_tower<2, 64, 32, 16, 8>},
  };
  return shapes;
}

const FusedShape* find_shape(std::span<const int64_t> padded) {
  for (const FusedShape& s : fused_shapes()) {
    if (std::equal(s.widths.begin(), s.widths.end(), padded.begin(), padded.end())) return &s;
  }
  return nullptr;
}

// ---- the small kernels --------------------------------------------------------------------------

__global__ void gather_user_inputs_kernel(const float* __restrict__ user_mlp, int64_t e,
                                          const float* __restrict__ user_gmf, int64_t f,
                                          const float* __restrict__ head_weight,
                                          const uint32_t* __restrict__ users, int64_t count,
                                          const float* __restrict__ contexts,
                                          float* __restrict__ mlp_rows,
                                          float* __restrict__ head_rows) {
  const int64_t width = e + f, total = count * width;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / width, j = t - r * width;
    const int64_t user = users[r];
    if (j < e) {
      const float v = user_mlp[user * e + j];
      mlp_rows[r * e + j] = contexts ? v + contexts[r * e + j] : v;
    } else {
      const int64_t g = j - e;
      head_rows[r * f + g] = user_gmf[user * f + g] * head_weight[g];
    }
  }
}

// Thread per output: the warp's lanes share a row of `in` (a broadcast) and read consecutive
// columns of the weight.
__global__ void first_layer_half_kernel(const float* __restrict__ in, int64_t rows,
                                        int64_t in_width, const float* __restrict__ weight,
                                        const float* __restrict__ bias, int64_t width,
                                        int64_t padded, float* __restrict__ out) {
  const int64_t total = rows * padded;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / padded, j = t - r * padded;
    float sum = 0.0f;
    if (j < width) {
      const float* x = in + r * in_width;
      for (int64_t k = 0; k < in_width; ++k) sum = fmaf(x[k], weight[k * width + j], sum);
      if (bias) sum += bias[j];
    }
    out[t] = sum;
  }
}

__global__ void pair_first_layer_kernel(const float* __restrict__ user_part,
                                        const float* __restrict__ item_part, int64_t first_item,
                                        int64_t items, int64_t width, int64_t total,
                                        float* __restrict__ out) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / width, j = t - r * width;
    const int64_t u = r / items, i = first_item + (r - u * items);
    out[t] = fmaxf(user_part[u * width + j] + item_part[i * width + j], 0.0f);
  }
}

// One warp per pair, the dot products reduced across the warp (as head_forward in neumf.cu).
__global__ void pair_head_kernel(const float* __restrict__ top, int64_t h,
                                 const float* __restrict__ head_mlp,
                                 const float* __restrict__ user_head,
                                 const float* __restrict__ item_gmf, int64_t f, float head_bias,
                                 int64_t first_item, int64_t items, int64_t rows,
                                 float* __restrict__ scores, int64_t ld) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; r < rows;
       r += warps) {
    const int64_t u = r / items, i = first_item + (r - u * items);
    float z = 0.0f;
    for (int64_t k = lane; k < f; k += 32) z = fmaf(user_head[u * f + k], item_gmf[i * f + k], z);
    for (int64_t k = lane; k < h; k += 32) z = fmaf(top[r * h + k], head_mlp[k], z);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) z += __shfl_xor_sync(0xffffffffu, z, offset);
    if (lane == 0) scores[u * ld + i] = head_bias + z;
  }
}

}  // namespace

void gather_user_inputs(const float* d_user_mlp, int64_t e, const float* d_user_gmf, int64_t f,
                        const float* d_head_weight, const uint32_t* d_users, int64_t count,
                        const float* d_contexts, float* d_mlp_rows, float* d_head_rows,
                        StreamHandle stream) {
  if (count == 0 || e + f == 0) return;
  gather_user_inputs_kernel<<<grid_for(count * (e + f), kThreads), kThreads, 0, stream>>>(
      d_user_mlp, e, d_user_gmf, f, d_head_weight, d_users, count, d_contexts, d_mlp_rows,
      d_head_rows);
  TB_CUDA_LAUNCH_CHECK("gather_user_inputs_kernel", stream);
}

void first_layer_half(const float* d_in, int64_t rows, int64_t in_width, const float* d_weight,
                      const float* d_bias, int64_t width, int64_t padded, float* d_out,
                      StreamHandle stream) {
  if (rows == 0 || padded == 0) return;
  TB_CHECK(padded >= width, "first_layer_half: padded width below the layer width");
  first_layer_half_kernel<<<grid_for(rows * padded, kThreads), kThreads, 0, stream>>>(
      d_in, rows, in_width, d_weight, d_bias, width, padded, d_out);
  TB_CUDA_LAUNCH_CHECK("first_layer_half_kernel", stream);
}

int fused_tower_users(std::span<const int64_t> padded_widths) {
  const FusedShape* shape = find_shape(padded_widths);
  TB_CHECK(shape != nullptr, "fused_tower_users: not a fused shape");
  return shape->users;
}

std::vector<int64_t> fused_tower_widths(std::span<const int64_t> hidden) {
  if (hidden.empty()) return {};
  for (const FusedShape& s : fused_shapes()) {
    if (s.widths.size() != hidden.size()) continue;
    bool fits = true;
    for (size_t j = 0; j < hidden.size(); ++j) fits = fits && hidden[j] <= s.widths[j];
    if (fits) return s.widths;
  }
  return {};
}

std::vector<float> pack_tower(std::span<const int64_t> widths, std::span<const int64_t> padded,
                              std::span<const float* const> weights,
                              std::span<const float* const> biases, const float* head_mlp) {
  TB_CHECK(widths.size() == padded.size() && weights.size() == widths.size() &&
               biases.size() == widths.size(),
           "pack_tower: widths, padded widths and layers differ in count");
  std::vector<float> packed;
  for (size_t j = 1; j < widths.size(); ++j) {
    const int64_t in = widths[j - 1], out = widths[j], pin = padded[j - 1], pout = padded[j];
    TB_CHECK(pin >= in && pout >= out && pin % 4 == 0 && pout % 4 == 0, "pack_tower: bad padding");
    const size_t w = packed.size();
    packed.resize(w + pin * pout + pout, 0.0f);
    for (int64_t k = 0; k < in; ++k)
      for (int64_t c = 0; c < out; ++c) packed[w + k * pout + c] = weights[j][k * out + c];
    for (int64_t c = 0; c < out; ++c) packed[w + pin * pout + c] = biases[j][c];
  }
  if (!widths.empty()) {
    const size_t at = packed.size();
    TB_CHECK(padded.back() % 4 == 0 && padded.back() >= widths.back(), "pack_tower: bad padding");
    packed.resize(at + padded.back(), 0.0f);
    for (int64_t c = 0; c < widths.back(); ++c) packed[at + c] = head_mlp[c];
  }
  return packed;
}

void score_catalog_fused(const CatalogModel& model, const float* d_user_part,
                         const float* d_user_head, int64_t users, float* d_scores, int64_t ld,
                         StreamHandle stream) {
  if (users == 0 || model.items == 0) return;
  const FusedShape* shape = find_shape(model.widths);
  TB_CHECK(shape != nullptr, "score_catalog_fused: the model's widths are not a fused shape");
  TB_CHECK(model.factors == 0 || (model.item_gmf != nullptr && d_user_head != nullptr),
           "score_catalog_fused: GMF rows missing");
  TB_CHECK(model.widths.empty() ||
               (model.item_part != nullptr && d_user_part != nullptr && model.tower != nullptr),
           "score_catalog_fused: MLP rows missing");
  TB_CHECK(model.tower_floats % 4 == 0 && ld >= model.items, "score_catalog_fused: bad shape");
  TowerArgs a{};
  a.item_gmf = model.item_gmf;
  a.item_part = model.item_part;
  a.tower = model.tower;
  a.user_part = d_user_part;
  a.user_head = d_user_head;
  a.scores = d_scores;
  a.items = model.items;
  a.users = users;
  a.ld = ld;
  a.tower_floats = model.tower_floats;
  a.factors = static_cast<int>(model.factors);
  a.head_bias = model.head_bias;
  shape->launch(a, stream);
}

void pair_first_layer(const float* d_user_part, int64_t users, const float* d_item_part,
                      int64_t first_item, int64_t items, int64_t width, float* d_out,
                      StreamHandle stream) {
  const int64_t total = users * items * width;
  if (total == 0) return;
  pair_first_layer_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      d_user_part, d_item_part, first_item, items, width, total, d_out);
  TB_CUDA_LAUNCH_CHECK("pair_first_layer_kernel", stream);
}

void pair_head(const float* d_top, int64_t h, const float* d_head_mlp, const float* d_user_head,
               const float* d_item_gmf, int64_t f, float head_bias, int64_t users,
               int64_t first_item, int64_t items, float* d_scores, int64_t ld,
               StreamHandle stream) {
  const int64_t rows = users * items;
  if (rows == 0) return;
  pair_head_kernel<<<grid_for(rows * 32, kThreads), kThreads, 0, stream>>>(
      d_top, h, d_head_mlp, d_user_head, d_item_gmf, f, head_bias, first_item, items, rows,
      d_scores, ld);
  TB_CUDA_LAUNCH_CHECK("pair_head_kernel", stream);
}

}  // namespace tastebud::cuda
