// The ops of a SASRec sequence model on the CPU (Eigen + OpenMP): layer norm, multi-head causal
// self-attention over one left-padded sequence, and gSASRec's sampled loss with its deterministic
// item-gradient scatter. Templates, so the gradient checks run the same code in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "cpu/dense.h"
#include "tastebud/sequence_math.h"

namespace tastebud::cpu {

template <class T>
using StridedMap = Eigen::Map<RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using ConstStridedMap = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using RowVectorMap = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;
template <class T>
using ConstRowVectorMap = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>;

// Row-wise layer norm of n rows of width d: y = (x - mean) * rstd * gamma + beta,
// rstd = 1 / sqrt(var + eps), var biased. mean and rstd (n each) are saved for the backward pass.
template <class T>
void layer_norm_forward(const T* x, const T* gamma, const T* beta, int64_t n, int64_t d, T eps,
                        T* y, T* mean, T* rstd) {
  ConstMatrixMap<T> xs(x, n, d);
  MatrixMap<T> ys(y, n, d);
  ConstRowVectorMap<T> g(gamma, d), b(beta, d);
  Eigen::Array<T, 1, Eigen::Dynamic> centered(d);
  for (int64_t r = 0; r < n; ++r) {
    const T mu = xs.row(r).mean();
    centered = xs.row(r).array() - mu;
    const T var = centered.square().sum() / T(d);
    const T inv = T(1) / std::sqrt(var + eps);
    ys.row(r) = (centered * inv * g.array() + b.array()).matrix();
    mean[r] = mu;
    rstd[r] = inv;
  }
}

// dx overwritten; dgamma, dbeta accumulated (+=).
template <class T>
void layer_norm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd,
                         int64_t n, int64_t d, T* dx, T* dgamma, T* dbeta) {
  ConstMatrixMap<T> dys(dy, n, d);
  ConstMatrixMap<T> xs(x, n, d);
  MatrixMap<T> dxs(dx, n, d);
  ConstRowVectorMap<T> g(gamma, d);
  RowVectorMap<T> dg(dgamma, d), db(dbeta, d);
  Eigen::Array<T, 1, Eigen::Dynamic> xhat(d), dxhat(d);
  for (int64_t r = 0; r < n; ++r) {
    xhat = (xs.row(r).array() - mean[r]) * rstd[r];
    dg.array() += dys.row(r).array() * xhat;
    db += dys.row(r);
    dxhat = dys.row(r).array() * g.array();
    const T mean_dxhat = dxhat.mean();
    const T mean_dxhat_xhat = (dxhat * xhat).mean();
    dxs.row(r) = (rstd[r] * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)).matrix();
  }
}

namespace detail {

// One query's attention weights in place: its scores scaled, then the softmax (less the maximum).
template <class Row, class T>
void scaled_softmax(Row&& row, T scale) {
  row *= scale;
  const T top = row.maxCoeff();
  row = (row - top).exp();
  row /= row.sum();
}

// Softmax over columns 0..i of row i of the scores s (scaled first), zero to the right: the
// causal attention weights of the valid block.
template <class T>
void causal_softmax_rows(StridedMap<T>& s, T scale) {
  const int64_t m = s.rows();
  for (int64_t i = 0; i < m; ++i) {
    scaled_softmax(s.row(i).head(i + 1).array(), scale);
    s.row(i).tail(m - 1 - i).setZero();
  }
}

}  // namespace detail

// Multi-head causal self-attention of ONE sequence of L positions, row-major q, k, v, out of
// [L x d], d = heads * dh, head h using columns [h*dh, (h+1)*dh). Positions < first are padding:
// they attend to nothing and output zero rows, and no position attends to them. Query t attends
// to keys first..t with softmax(q_t . k_j / sqrt(dh)). probs: [heads x L x L] saved for backward
// (entries outside the causal valid region are 0).
template <class T>
void causal_attention_forward(const T* q, const T* k, const T* v, int64_t L, int64_t first,
                              int64_t heads, int64_t dh, T* probs, T* out) {
  const int64_t d = heads * dh;
  const int64_t m = L - first;
  std::fill(probs, probs + heads * L * L, T(0));
  std::fill(out, out + L * d, T(0));
  if (m <= 0) return;
  const T scale = T(1) / std::sqrt(T(dh));
  const Eigen::OuterStride<> row_stride(d), prob_stride(L);
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t offset = first * d + h * dh;
    ConstStridedMap<T> qh(q + offset, m, dh, row_stride), kh(k + offset, m, dh, row_stride);
    ConstStridedMap<T> vh(v + offset, m, dh, row_stride);
    StridedMap<T> p(probs + h * L * L + first * L + first, m, m, prob_stride);
    StridedMap<T> oh(out + offset, m, dh, row_stride);
    p.noalias() = qh * kh.transpose();
    detail::causal_softmax_rows(p, scale);
    oh.noalias() = p.template triangularView<Eigen::Lower>() * vh;
  }
}

// Answering: the attention of a sequence's newest position alone, its query q [1 x d] over the n
// keys and values k, v [n x d] (the newest last), out [1 x d] overwritten: the last row of
// causal_attention_forward's output without the n x n weights.
template <class T>
void newest_query_attention(const T* q, const T* k, const T* v, int64_t n, int64_t heads, int64_t dh, T* out) {
  const int64_t d = heads * dh;
  const T scale = T(1) / std::sqrt(T(dh));
  const Eigen::OuterStride<> row_stride(d);
  Eigen::Matrix<T, 1, Eigen::Dynamic> p(n);
  for (int64_t h = 0; h < heads; ++h) {
    ConstStridedMap<T> kh(k + h * dh, n, dh, row_stride), vh(v + h * dh, n, dh, row_stride);
    ConstRowVectorMap<T> qh(q + h * dh, dh);
    RowVectorMap<T> oh(out + h * dh, dh);
    p.noalias() = qh * kh.transpose();
    detail::scaled_softmax(p.array(), scale);
    oh.noalias() = p * vh;
  }
}

// dq, dk, dv overwritten ([L x d]; padding rows 0).
template <class T>
void causal_attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs,
                               int64_t L, int64_t first, int64_t heads, int64_t dh, T* dq, T* dk,
                               T* dv) {
  const int64_t d = heads * dh;
  const int64_t m = L - first;
  std::fill(dq, dq + L * d, T(0));
  std::fill(dk, dk + L * d, T(0));
  std::fill(dv, dv + L * d, T(0));
  if (m <= 0) return;
  const T scale = T(1) / std::sqrt(T(dh));
  const Eigen::OuterStride<> row_stride(d), prob_stride(L);
  RowMatrix<T> ds(m, m);
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t offset = first * d + h * dh;
    ConstStridedMap<T> qh(q + offset, m, dh, row_stride), kh(k + offset, m, dh, row_stride);
    ConstStridedMap<T> vh(v + offset, m, dh, row_stride), doh(dout + offset, m, dh, row_stride);
    ConstStridedMap<T> p(probs + h * L * L + first * L + first, m, m, prob_stride);
    StridedMap<T> dqh(dq + offset, m, dh, row_stride), dkh(dk + offset, m, dh, row_stride);
    StridedMap<T> dvh(dv + offset, m, dh, row_stride);
    dvh.noalias() = p.transpose() * doh;
    ds.noalias() = doh * vh.transpose();  // dP
    // dS = P o (dP - rowsum(dP o P)) / sqrt(dh): zero wherever P is, so above the diagonal too.
    const Eigen::Matrix<T, Eigen::Dynamic, 1> dot = (ds.array() * p.array()).rowwise().sum();
    ds = (p.array() * (ds.array().colwise() - dot.array()) * scale).matrix();
    dqh.noalias() = ds * kh;
    dkh.noalias() = ds.transpose() * qh;
  }
}

namespace detail {

// Position p's part of the sampled loss: writes its coef row and dh row, returns its loss.
template <class T>
double position_loss(const T* h, int64_t p, int64_t d, const T* table, const uint32_t* items,
                     int64_t slots, T w, T beta, T scale, T* coef, T* dh) {
  RowVectorMap<T> dhp(dh + p * d, d);
  dhp.setZero();
  if (w == T(0)) {
    std::fill(coef + p * slots, coef + (p + 1) * slots, T(0));
    return 0.0;
  }
  ConstRowVectorMap<T> hp(h + p * d, d);
  double loss = 0.0;
  for (int64_t s = 0; s < slots; ++s) {
    ConstRowVectorMap<T> row(table + static_cast<int64_t>(items[p * slots + s]) * d, d);
    const T z = hp.dot(row);
    const T l = s == 0 ? gbce_positive_loss(z, beta) : bce_loss(z, T(0));
    const T g = s == 0 ? gbce_positive_grad(z, beta) : bce_grad(z, T(0));
    const T c = scale * w * g;
    coef[p * slots + s] = c;
    dhp += c * row;
    loss += static_cast<double>(w * l);
  }
  return loss;
}

}  // namespace detail

// The sampled loss at n positions: position p's hidden row h[p] (width d) scores
// items[p*slots + s] of `table` (row-major [rows x d]); slot 0 is the target (positive), slots
// 1..slots-1 negatives. z = h[p] . table[item]. loss_p = weight[p] * (gbce_positive_loss(z0, beta)
// + sum_s bce_loss(z_s, 0)); positions with weight 0 are skipped (padding). Returns sum_p loss_p
// (double), summed in fixed chunks so it does not depend on the thread count. Writes
// coef[p*slots+s] = scale * weight[p] * dloss/dz (0 for skipped), and dh[p] = sum_s coef *
// table[item] (overwritten; 0 rows for skipped positions).
template <class T>
double sampled_loss_forward_backward(const T* h, int64_t n, int64_t d, const T* table,
                                     const uint32_t* items, int64_t slots, const T* weight, T beta,
                                     T scale, T* coef, T* dh) {
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (n * slots * d > (1 << 15))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kChunk);
    double sum = 0.0;
    for (int64_t p = c * kChunk; p < end; ++p)
      sum += detail::position_loss(h, p, d, table, items, slots, weight[p], beta, scale, coef, dh);
    partial[static_cast<size_t>(c)] = sum;
  }
  double total = 0.0;
  for (const double value : partial) total += value;
  return total;
}

// grad_table[item] += coef[p*slots+s] * h[p] for every (p, s) with coef != 0, in (p, s) order
// for each item, so the sum is the same whatever `threads` is: thread t of `threads` handles only
// items with item % threads == t.
template <class T>
void scatter_item_grads(const T* coef, const T* h, const uint32_t* items, int64_t n, int64_t slots,
                        int64_t d, int threads, T* grad_table) {
  const int owners = std::max(threads, 1);
#pragma omp parallel for schedule(static, 1) num_threads(owners)
  for (int t = 0; t < owners; ++t) {
    for (int64_t p = 0; p < n; ++p) {
      ConstRowVectorMap<T> hp(h + p * d, d);
      for (int64_t s = 0; s < slots; ++s) {
        const T c = coef[p * slots + s];
        const uint32_t item = items[p * slots + s];
        if (c == T(0) || item % static_cast<uint32_t>(owners) != static_cast<uint32_t>(t)) continue;
        RowVectorMap<T>(grad_table + static_cast<int64_t>(item) * d, d) += c * hp;
      }
    }
  }
}

}  // namespace tastebud::cpu
