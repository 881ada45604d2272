#include <cmath>

#include "cuda/common.cuh"
#include "cuda/sequence.h"
#include "tastebud/loss_math.h"
#include "tastebud/sequence_math.h"

namespace tastebud::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kBlock = 256;
constexpr int kAttentionBlock = 128;
constexpr int kLayerNormRowsPerSlice = 64;
constexpr int kColumnTile = 32, kRowLanes = 8;

// Butterfly sum: every lane ends with the same bits (each step adds the same pair on both lanes).
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum (or max) over the block: warp results added in warp order by every thread, so all threads
// hold the same bits. `scratch` holds 32 floats of shared memory.
__device__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = (blockDim.x + kWarp - 1) / kWarp;
  __syncthreads();  // the scratch's previous use is over
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = scratch[0];
  for (int w = 1; w < warps; ++w) total += scratch[w];
  return total;
}

__device__ float block_max(float v, float* scratch) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = (blockDim.x + kWarp - 1) / kWarp;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float top = scratch[0];
  for (int w = 1; w < warps; ++w) top = fmaxf(top, scratch[w]);
  return top;
}

// The sequence that owns row r: the largest b with starts[b] <= r (empty sequences skipped).
__device__ int64_t sequence_of(const int64_t* __restrict__ starts, int64_t count, int64_t r) {
  int64_t lo = 0, hi = count - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (starts[mid] <= r) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// ---- layer norm -------------------------------------------------------------------------------

__global__ void layer_norm_forward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                          const float* __restrict__ beta, int64_t n, int64_t d, float eps,
                                          float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; r < n; r += warps) {
    const float* xr = x + r * d;
    float sum = 0.0f;
    for (int64_t j = lane; j < d; j += kWarp) sum += xr[j];
    const float mu = warp_sum(sum) / static_cast<float>(d);
    float squares = 0.0f;
    for (int64_t j = lane; j < d; j += kWarp) squares += (xr[j] - mu) * (xr[j] - mu);
    const float var = warp_sum(squares) / static_cast<float>(d);
    const float inv = 1.0f / sqrtf(var + eps);
    for (int64_t j = lane; j < d; j += kWarp) y[r * d + j] = (xr[j] - mu) * inv * gamma[j] + beta[j];
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = inv;
    }
  }
}

__global__ void layer_norm_dx_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                     const float* __restrict__ gamma, const float* __restrict__ mean,
                                     const float* __restrict__ rstd, int64_t n, int64_t d, float* __restrict__ dx) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; r < n; r += warps) {
    const float mu = mean[r], inv = rstd[r];
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
    for (int64_t j = lane; j < d; j += kWarp) {
      const float xhat = (x[r * d + j] - mu) * inv, dxhat = dy[r * d + j] * gamma[j];
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
    }
    const float mean_dxhat = warp_sum(sum_dxhat) / static_cast<float>(d);
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / static_cast<float>(d);
    for (int64_t j = lane; j < d; j += kWarp) {
      const float xhat = (x[r * d + j] - mu) * inv, dxhat = dy[r * d + j] * gamma[j];
      dx[r * d + j] = inv * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
    }
  }
}

// Block (32, 8) sums dy * xhat and dy over the rows of slice blockIdx.y for columns [32 bx, 32 bx
// + 32): partial[slice * d + j] (dgamma) and partial[(slices + slice) * d + j] (dbeta).
__global__ void layer_norm_partials_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                           const float* __restrict__ mean, const float* __restrict__ rstd,
                                           int64_t n, int64_t d, float* __restrict__ partial) {
  __shared__ float tile_g[kRowLanes][kColumnTile + 1], tile_b[kRowLanes][kColumnTile + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * kLayerNormRowsPerSlice;
  const int64_t end = begin + kLayerNormRowsPerSlice < n ? begin + kLayerNormRowsPerSlice : n;
  float g = 0.0f, b = 0.0f;
  if (col < d) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) {
      const float grad = dy[r * d + col];
      g += grad * ((x[r * d + col] - mean[r]) * rstd[r]);
      b += grad;
    }
  }
  tile_g[threadIdx.y][threadIdx.x] = g;
  tile_b[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    float sum_g = 0.0f, sum_b = 0.0f;
    for (int i = 0; i < kRowLanes; ++i) {
      sum_g += tile_g[i][threadIdx.x];
      sum_b += tile_b[i][threadIdx.x];
    }
    partial[static_cast<int64_t>(blockIdx.y) * d + col] = sum_g;
    partial[(static_cast<int64_t>(gridDim.y) + blockIdx.y) * d + col] = sum_b;
  }
}

__global__ void layer_norm_finish_kernel(const float* __restrict__ partial, int64_t slices, int64_t d,
                                         float* __restrict__ dgamma, float* __restrict__ dbeta) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < d;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float g = 0.0f, b = 0.0f;
    for (int64_t s = 0; s < slices; ++s) {
      g += partial[s * d + j];
      b += partial[(slices + s) * d + j];
    }
    dgamma[j] += g;
    dbeta[j] += b;
  }
}

int64_t slices_for(int64_t n) { return (n + kLayerNormRowsPerSlice - 1) / kLayerNormRowsPerSlice; }

// ---- causal attention ------------------------------------------------------------------------

// Where row r's query sits: its sequence's first row, length, its index t in the sequence, and
// the start of its probs for head h.
struct QueryRow {
  int64_t r0, n, t, probs;
};

__device__ QueryRow query_row(const int64_t* __restrict__ starts, const int64_t* __restrict__ prob_offsets,
                              int64_t count, int64_t r, int64_t h) {
  const int64_t b = sequence_of(starts, count, r);
  QueryRow row;
  row.r0 = starts[b];
  row.n = starts[b + 1] - row.r0;
  row.t = r - row.r0;
  row.probs = prob_offsets[b] + h * row.n * row.n;
  return row;
}

__device__ float head_dot(const float* __restrict__ a, const float* __restrict__ b, int64_t dh) {
  float sum = 0.0f;
  for (int64_t c = 0; c < dh; ++c) sum += a[c] * b[c];
  return sum;
}

// Block (row r, head h): scores of r's query against keys 0..t, the masked softmax written to
// probs row t (zeros right of t), then out[r, head h] = P . V.
__global__ void attention_forward_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                         const float* __restrict__ v, const int64_t* __restrict__ starts,
                                         const int64_t* __restrict__ prob_offsets, int64_t count, int64_t heads,
                                         int64_t dh, float scale, float* probs, float* __restrict__ out) {
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x, h = blockIdx.y, d = heads * dh;
  const QueryRow row = query_row(starts, prob_offsets, count, r, h);
  float* p = probs + row.probs + row.t * row.n;
  const float* qr = q + r * d + h * dh;
  float top = -INFINITY;
  for (int64_t j = threadIdx.x; j < row.n; j += blockDim.x) {
    const float s = j <= row.t ? head_dot(qr, k + (row.r0 + j) * d + h * dh, dh) * scale : 0.0f;
    p[j] = s;
    if (j <= row.t) top = fmaxf(top, s);
  }
  top = block_max(top, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= row.t; j += blockDim.x) {
    const float e = expf(p[j] - top);
    p[j] = e;
    sum += e;
  }
  sum = block_sum(sum, scratch);
  for (int64_t j = threadIdx.x; j <= row.t; j += blockDim.x) p[j] /= sum;
  __syncthreads();
  for (int64_t c = threadIdx.x; c < dh; c += blockDim.x) {
    float total = 0.0f;
    for (int64_t j = 0; j <= row.t; ++j) total += p[j] * v[(row.r0 + j) * d + h * dh + c];
    out[r * d + h * dh + c] = total;
  }
}

// Block (row r, head h) as a query: dP = dout_r . v_j, dS = P o (dP - rowsum(dP o P)) * scale into
// dscores (same layout as probs), then dq[r, head h] = dS . K.
__global__ void attention_dq_kernel(const float* __restrict__ dout, const float* __restrict__ k,
                                    const float* __restrict__ v, const float* __restrict__ probs,
                                    const int64_t* __restrict__ starts, const int64_t* __restrict__ prob_offsets,
                                    int64_t count, int64_t heads, int64_t dh, float scale, float* dscores,
                                    float* __restrict__ dq) {
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x, h = blockIdx.y, d = heads * dh;
  const QueryRow row = query_row(starts, prob_offsets, count, r, h);
  const float* p = probs + row.probs + row.t * row.n;
  float* ds = dscores + row.probs + row.t * row.n;
  const float* dor = dout + r * d + h * dh;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < row.n; j += blockDim.x) {
    const float dp = j <= row.t ? head_dot(dor, v + (row.r0 + j) * d + h * dh, dh) : 0.0f;
    ds[j] = dp;
    dot += dp * p[j];
  }
  dot = block_sum(dot, scratch);
  for (int64_t j = threadIdx.x; j < row.n; j += blockDim.x) ds[j] = j <= row.t ? p[j] * (ds[j] - dot) * scale : 0.0f;
  __syncthreads();
  for (int64_t c = threadIdx.x; c < dh; c += blockDim.x) {
    float total = 0.0f;
    for (int64_t j = 0; j <= row.t; ++j) total += ds[j] * k[(row.r0 + j) * d + h * dh + c];
    dq[r * d + h * dh + c] = total;
  }
}

// Block (row r, head h) as a key j = t: dv = sum over queries i >= j of P[i, j] dout_i, dk = sum of
// dS[i, j] q_i, the queries in ascending order.
__global__ void attention_dkv_kernel(const float* __restrict__ dout, const float* __restrict__ q,
                                     const float* __restrict__ probs, const float* __restrict__ dscores,
                                     const int64_t* __restrict__ starts, const int64_t* __restrict__ prob_offsets,
                                     int64_t count, int64_t heads, int64_t dh, float* __restrict__ dk,
                                     float* __restrict__ dv) {
  const int64_t r = blockIdx.x, h = blockIdx.y, d = heads * dh;
  const QueryRow row = query_row(starts, prob_offsets, count, r, h);
  const int64_t j = row.t;
  for (int64_t c = threadIdx.x; c < dh; c += blockDim.x) {
    float sum_v = 0.0f, sum_k = 0.0f;
    for (int64_t i = j; i < row.n; ++i) {
      const int64_t at = row.probs + i * row.n + j, col = (row.r0 + i) * d + h * dh + c;
      sum_v += probs[at] * dout[col];
      sum_k += dscores[at] * q[col];
    }
    dv[r * d + h * dh + c] = sum_v;
    dk[r * d + h * dh + c] = sum_k;
  }
}

// ---- sampled loss and the item scatter ---------------------------------------------------------

__global__ void sampled_loss_kernel(const float* __restrict__ h, int64_t n, int64_t d,
                                    const float* __restrict__ table, const uint32_t* __restrict__ items,
                                    int64_t slots, const float* __restrict__ weight, float beta, float scale,
                                    float* __restrict__ coef, float* __restrict__ dh,
                                    double* __restrict__ position_loss) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t p = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; p < n; p += warps) {
    float* dhp = dh + p * d;
    for (int64_t j = lane; j < d; j += kWarp) dhp[j] = 0.0f;
    const float w = weight[p];
    if (w == 0.0f) {
      for (int64_t s = lane; s < slots; s += kWarp) coef[p * slots + s] = 0.0f;
      if (lane == 0) position_loss[p] = 0.0;
      continue;
    }
    const float* hp = h + p * d;
    double loss = 0.0;
    for (int64_t s = 0; s < slots; ++s) {
      const float* item_row = table + static_cast<int64_t>(items[p * slots + s]) * d;
      float partial = 0.0f;
      for (int64_t j = lane; j < d; j += kWarp) partial += hp[j] * item_row[j];
      const float z = warp_sum(partial);
      const float l = s == 0 ? gbce_positive_loss(z, beta) : bce_loss(z, 0.0f);
      const float g = s == 0 ? gbce_positive_grad(z, beta) : bce_grad(z, 0.0f);
      const float c = scale * w * g;
      for (int64_t j = lane; j < d; j += kWarp) dhp[j] += c * item_row[j];
      if (lane == 0) coef[p * slots + s] = c;
      loss += static_cast<double>(w * l);
    }
    if (lane == 0) position_loss[p] = loss;
  }
}

// One warp per group of `groups`: grad[key * d + j] += sum over the group's entries e, in order, of
// (coef ? coef[e] : 1) * rows[(e / per_row) * d + j], skipping entries whose coef is 0.
__global__ void grouped_row_add_kernel(const uint32_t* __restrict__ keys, const uint32_t* __restrict__ order,
                                       const uint32_t* __restrict__ group_starts, const int* __restrict__ num_groups,
                                       const float* __restrict__ coef, const float* __restrict__ rows,
                                       int64_t per_row, int64_t d, float* __restrict__ grad) {
  const int groups = *num_groups;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t g = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; g < groups; g += warps) {
    const uint32_t begin = group_starts[g], end = group_starts[g + 1];
    float* out = grad + static_cast<int64_t>(keys[g]) * d;
    for (int64_t j = lane; j < d; j += kWarp) {
      float total = out[j];
      for (uint32_t e = begin; e < end; ++e) {
        const uint32_t entry = order[e];
        const float* row = rows + static_cast<int64_t>(entry / per_row) * d;
        if (coef == nullptr) {
          total += row[j];
        } else {
          const float c = coef[entry];
          if (c != 0.0f) total += c * row[j];
        }
      }
      out[j] = total;
    }
  }
}

void grouped_row_add(const RowGroups& groups, const float* d_coef, const float* d_rows, int64_t per_row, int64_t d,
                     float* d_grad, StreamHandle stream) {
  grouped_row_add_kernel<<<grid_for(groups.max_groups() * kWarp, kBlock), kBlock, 0, stream>>>(
      groups.rows(), groups.order(), groups.starts(), groups.num_groups(), d_coef, d_rows, per_row, d, d_grad);
  TB_CUDA_LAUNCH_CHECK("grouped_row_add_kernel", stream);
}

// ---- the input rows and dropout ----------------------------------------------------------------

__global__ void input_rows_kernel(const float* __restrict__ items_table, const float* __restrict__ positions_table,
                                  const uint32_t* __restrict__ input, const uint32_t* __restrict__ position,
                                  int64_t rows, int64_t d, float scale, float* __restrict__ x) {
  const int64_t total = rows * d;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / d, c = i - r * d;
    x[i] = items_table[static_cast<int64_t>(input[r]) * d + c] * scale +
           positions_table[static_cast<int64_t>(position[r]) * d + c];
  }
}

__global__ void scale_kernel(const float* __restrict__ in, int64_t count, float scale, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = in[i] * scale;
  }
}

// One thread per 16 columns of a row: one dropout_keep_bits draw.
__global__ void dropout_forward_kernel(float* __restrict__ x, uint8_t* __restrict__ mask,
                                       const int64_t* __restrict__ starts, const uint64_t* __restrict__ dropout_id,
                                       const uint32_t* __restrict__ position, int64_t count, int64_t rows, int64_t d,
                                       DropoutSite site, float keep_scale) {
  const int64_t chunks = (d + 15) / 16, dpad = chunks * 16, total = rows * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / chunks, c0 = (i - r * chunks) * 16;
    const int64_t b = sequence_of(starts, count, r);
    const uint64_t base =
        ((dropout_id[b] * site.sites + site.site) * site.max_sequence + position[r]) * static_cast<uint64_t>(dpad);
    const uint32_t bits = dropout_keep_bits(site.seed, site.epoch, (base + c0) / 16, site.rate);
    const int64_t end = c0 + 16 < d ? c0 + 16 : d;
    for (int64_t c = c0; c < end; ++c) {
      const uint8_t keep = static_cast<uint8_t>((bits >> (c - c0)) & 1u);
      mask[r * d + c] = keep;
      x[r * d + c] = keep ? x[r * d + c] * keep_scale : 0.0f;
    }
  }
}

__global__ void dropout_backward_kernel(float* __restrict__ dx, const uint8_t* __restrict__ mask, int64_t count,
                                        float keep_scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dx[i] = mask[i] ? dx[i] * keep_scale : 0.0f;
  }
}

__global__ void add_into_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += x[i];
  }
}

struct RowStep {
  OptimizerKind kind;
  float step_size, beta1, beta2, eps, l2;
};

// One thread per (row, column); rows null: row k is row k.
__global__ void item_rows_update_kernel(RowStep a, float* __restrict__ table, float* __restrict__ m,
                                        float* __restrict__ v, float* __restrict__ grad, int64_t width,
                                        const uint32_t* __restrict__ rows, const int* __restrict__ num_rows,
                                        int64_t max_rows, const uint8_t* __restrict__ frozen) {
  const int64_t count = num_rows != nullptr ? static_cast<int64_t>(*num_rows) : max_rows;
  const int64_t total = count * width;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = t / width, j = t - k * width;
    const int64_t r = rows != nullptr ? static_cast<int64_t>(rows[k]) : k, i = r * width + j;
    step_and_clear(a.kind, a.step_size, a.beta1, a.beta2, a.eps, a.l2, frozen != nullptr && frozen[r], table[i], m[i],
                   v[i], grad[i]);
  }
}

// One warp per listed item; its lanes walk the item's feature rows.
__global__ void mark_feature_rows_kernel(const uint64_t* __restrict__ offsets, const uint32_t* __restrict__ feature_rows,
                                         const uint32_t* __restrict__ rows, const int* __restrict__ num_rows,
                                         uint8_t* __restrict__ unreached) {
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  for (int64_t k = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; k < *num_rows; k += warps) {
    const uint32_t item = rows[k];
    for (uint64_t p = offsets[item] + lane; p < offsets[item + 1]; p += kWarp) unreached[feature_rows[p]] = 0;
  }
}

__global__ void place_group_sums_kernel(const float* __restrict__ sum, const uint32_t* __restrict__ rows,
                                        const int* __restrict__ num_rows, int64_t width, float* __restrict__ table) {
  const int64_t total = static_cast<int64_t>(*num_rows) * width;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = t / width, j = t - k * width;
    table[static_cast<int64_t>(rows[k]) * width + j] = sum[t];
  }
}

}  // namespace

void layer_norm_forward(const float* d_x, const float* d_gamma, const float* d_beta, int64_t n, int64_t d,
                        float eps, float* d_y, float* d_mean, float* d_rstd, StreamHandle stream) {
  if (n == 0 || d == 0) return;
  layer_norm_forward_kernel<<<grid_for(n * kWarp, kBlock), kBlock, 0, stream>>>(d_x, d_gamma, d_beta, n, d, eps,
                                                                                 d_y, d_mean, d_rstd);
  TB_CUDA_LAUNCH_CHECK("layer_norm_forward_kernel", stream);
}

int64_t layer_norm_partials(int64_t n, int64_t d) { return 2 * slices_for(n) * d; }

void layer_norm_backward(const float* d_dy, const float* d_x, const float* d_gamma, const float* d_mean,
                         const float* d_rstd, int64_t n, int64_t d, float* d_dx, float* d_dgamma,
                         float* d_dbeta, float* d_partial, StreamHandle stream) {
  if (n == 0 || d == 0) return;
  TB_CHECK(slices_for(n) <= 65535, "layer_norm_backward: too many rows for one pass");
  layer_norm_dx_kernel<<<grid_for(n * kWarp, kBlock), kBlock, 0, stream>>>(d_dy, d_x, d_gamma, d_mean, d_rstd, n,
                                                                            d, d_dx);
  TB_CUDA_LAUNCH_CHECK("layer_norm_dx_kernel", stream);
  const int64_t slices = slices_for(n);
  const dim3 grid(static_cast<unsigned>((d + kColumnTile - 1) / kColumnTile), static_cast<unsigned>(slices));
  layer_norm_partials_kernel<<<grid, dim3(kColumnTile, kRowLanes), 0, stream>>>(d_dy, d_x, d_mean, d_rstd, n, d,
                                                                               d_partial);
  TB_CUDA_LAUNCH_CHECK("layer_norm_partials_kernel", stream);
  layer_norm_finish_kernel<<<grid_for(d, 128), 128, 0, stream>>>(d_partial, slices, d, d_dgamma, d_dbeta);
  TB_CUDA_LAUNCH_CHECK("layer_norm_finish_kernel", stream);
}

void causal_attention_forward(const float* d_q, const float* d_k, const float* d_v, const int64_t* d_starts,
                              const int64_t* d_prob_offsets, int64_t count, int64_t rows, int64_t heads,
                              int64_t dh, float* d_probs, float* d_out, StreamHandle stream) {
  if (rows == 0 || count == 0) return;
  TB_CHECK(rows < (1ll << 31) && heads > 0 && heads <= 65535 && dh > 0, "causal_attention_forward: bad shape");
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(heads));
  attention_forward_kernel<<<grid, kAttentionBlock, 0, stream>>>(d_q, d_k, d_v, d_starts, d_prob_offsets, count,
                                                                 heads, dh, scale, d_probs, d_out);
  TB_CUDA_LAUNCH_CHECK("attention_forward_kernel", stream);
}

void causal_attention_backward(const float* d_dout, const float* d_q, const float* d_k, const float* d_v,
                               const float* d_probs, const int64_t* d_starts, const int64_t* d_prob_offsets,
                               int64_t count, int64_t rows, int64_t heads, int64_t dh, float* d_dq, float* d_dk,
                               float* d_dv, float* d_dscores, StreamHandle stream) {
  if (rows == 0 || count == 0) return;
  TB_CHECK(rows < (1ll << 31) && heads > 0 && heads <= 65535 && dh > 0, "causal_attention_backward: bad shape");
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(heads));
  attention_dq_kernel<<<grid, kAttentionBlock, 0, stream>>>(d_dout, d_k, d_v, d_probs, d_starts, d_prob_offsets,
                                                            count, heads, dh, scale, d_dscores, d_dq);
  TB_CUDA_LAUNCH_CHECK("attention_dq_kernel", stream);
  attention_dkv_kernel<<<grid, kAttentionBlock, 0, stream>>>(d_dout, d_q, d_probs, d_dscores, d_starts,
                                                             d_prob_offsets, count, heads, dh, d_dk, d_dv);
  TB_CUDA_LAUNCH_CHECK("attention_dkv_kernel", stream);
}

void sampled_loss_forward_backward(const float* d_h, int64_t n, int64_t d, const float* d_table,
                                   const uint32_t* d_items, int64_t slots, const float* d_weight, float beta,
                                   float scale, float* d_coef, float* d_dh, double* d_position_loss,
                                   StreamHandle stream) {
  if (n == 0) return;
  sampled_loss_kernel<<<grid_for(n * kWarp, kBlock), kBlock, 0, stream>>>(
      d_h, n, d, d_table, d_items, slots, d_weight, beta, scale, d_coef, d_dh, d_position_loss);
  TB_CUDA_LAUNCH_CHECK("sampled_loss_kernel", stream);
}

void scatter_item_grads(const float* d_coef, const float* d_h, const uint32_t* d_items, int64_t n, int64_t slots,
                        int64_t d, RowGroups& groups, float* d_grad_table, StreamHandle stream) {
  if (n == 0 || slots == 0 || d == 0) return;
  groups.build(d_items, n * slots, stream);
  grouped_row_add(groups, d_coef, d_h, slots, d, d_grad_table, stream);
}

void input_rows_forward(const float* d_items_table, const float* d_positions_table, const uint32_t* d_input,
                        const uint32_t* d_position, int64_t rows, int64_t d, float* d_x, StreamHandle stream) {
  if (rows == 0 || d == 0) return;
  const float scale = std::sqrt(static_cast<float>(d));
  input_rows_kernel<<<grid_for(rows * d, kBlock), kBlock, 0, stream>>>(d_items_table, d_positions_table, d_input,
                                                                       d_position, rows, d, scale, d_x);
  TB_CUDA_LAUNCH_CHECK("input_rows_kernel", stream);
}

void input_rows_backward(const float* d_dx, const uint32_t* d_position, int64_t rows, int64_t d,
                         RowGroups& groups, float* d_grad_positions, float* d_d_input, StreamHandle stream) {
  if (rows == 0 || d == 0) return;
  const float scale = std::sqrt(static_cast<float>(d));
  scale_kernel<<<grid_for(rows * d, kBlock), kBlock, 0, stream>>>(d_dx, rows * d, scale, d_d_input);
  TB_CUDA_LAUNCH_CHECK("scale_kernel", stream);
  groups.build(d_position, rows, stream);
  grouped_row_add(groups, nullptr, d_dx, 1, d, d_grad_positions, stream);
}

void dropout_forward(float* d_x, uint8_t* d_mask, const int64_t* d_starts, const uint64_t* d_dropout_id,
                     const uint32_t* d_position, int64_t count, int64_t rows, int64_t d, const DropoutSite& site,
                     StreamHandle stream) {
  if (rows == 0 || d == 0 || count == 0) return;
  const float keep_scale = 1.0f / (1.0f - site.rate);
  dropout_forward_kernel<<<grid_for(rows * ((d + 15) / 16), kBlock), kBlock, 0, stream>>>(
      d_x, d_mask, d_starts, d_dropout_id, d_position, count, rows, d, site, keep_scale);
  TB_CUDA_LAUNCH_CHECK("dropout_forward_kernel", stream);
}

void dropout_backward(float* d_dx, const uint8_t* d_mask, int64_t count, float rate, StreamHandle stream) {
  if (count == 0) return;
  const float keep_scale = 1.0f / (1.0f - rate);
  dropout_backward_kernel<<<grid_for(count, kBlock), kBlock, 0, stream>>>(d_dx, d_mask, count, keep_scale);
  TB_CUDA_LAUNCH_CHECK("dropout_backward_kernel", stream);
}

void add_into(float* d_y, const float* d_x, int64_t n, StreamHandle stream) {
  if (n == 0) return;
  add_into_kernel<<<grid_for(n, kBlock), kBlock, 0, stream>>>(d_y, d_x, n);
  TB_CUDA_LAUNCH_CHECK("add_into_kernel", stream);
}

void item_rows_update(const OptimizerParams& p, float step_size, float* d_table, float* d_m, float* d_v,
                      float* d_grad, int64_t width, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                      const uint8_t* d_frozen, StreamHandle stream) {
  if (max_rows == 0 || width == 0) return;
  const RowStep a{p.kind, step_size, p.beta1, p.beta2, p.eps, p.l2};
  item_rows_update_kernel<<<grid_for(max_rows * width, kBlock), kBlock, 0, stream>>>(
      a, d_table, d_m, d_v, d_grad, width, d_rows, d_num_rows, max_rows, d_frozen);
  TB_CUDA_LAUNCH_CHECK("item_rows_update_kernel", stream);
}

void mark_feature_rows(const FeatureView& v, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                       uint8_t* d_unreached, StreamHandle stream) {
  if (max_rows == 0 || v.offsets == nullptr) return;
  mark_feature_rows_kernel<<<grid_for(max_rows * kWarp, kBlock), kBlock, 0, stream>>>(v.offsets, v.rows, d_rows,
                                                                                       d_num_rows, d_unreached);
  TB_CUDA_LAUNCH_CHECK("mark_feature_rows_kernel", stream);
}

void place_group_sums(const float* d_sum, const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                      int64_t width, float* d_table, StreamHandle stream) {
  if (max_rows == 0 || width == 0) return;
  place_group_sums_kernel<<<grid_for(max_rows * width, kBlock), kBlock, 0, stream>>>(d_sum, d_rows, d_num_rows, width,
                                                                                     d_table);
  TB_CUDA_LAUNCH_CHECK("place_group_sums_kernel", stream);
}

}  // namespace tastebud::cuda
