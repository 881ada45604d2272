// Dense layers on the CPU: row-major activations [rows x width], weights [in x out]. Templates,
// so the gradient checks run the same steps in double precision (through Eigen's products; single
// precision over at most kSmallGemmRows rows goes through cpu::gemm, tested against them).
#pragma once

#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

#include "cpu/gemm.h"

namespace tastebud::cpu {

// cpu::gemm wins on a training chunk's few hundred rows; over thousands of rows (a sequence model's
// chunk of positions, a huge batch's chunk) Eigen's cache blocking does.
inline constexpr int64_t kSmallGemmRows = 512;

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>>;

// out[i] = rows[i] . v for the n row-major rows of width d: one matrix-vector product (vectorized,
// rows in blocks), how a catalog is scored against one query vector.
inline void row_dots(const float* rows, int64_t n, int64_t d, const float* v, float* out) {
  Eigen::Map<Eigen::VectorXf>(out, n).noalias() = ConstMatrixMap<float>(rows, n, d) * Eigen::Map<const Eigen::VectorXf>(v, d);
}

// out = max(0, in * weight + bias), or without the ReLU.
template <class T>
void dense_forward(const T* in, int64_t rows, int64_t in_width, const T* weight, const T* bias,
                   int64_t out_width, bool apply_relu, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    if (rows <= kSmallGemmRows) {
      gemm({rows, out_width, in_width, in, in_width, 1, weight, out_width, out, out_width}, false, bias, apply_relu);
      return;
    }
  }
  ConstMatrixMap<T> x(in, rows, in_width);
  ConstMatrixMap<T> w(weight, in_width, out_width);
  Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> b(bias, out_width);
  MatrixMap<T> y(out, rows, out_width);
  y.noalias() = x * w;
  y.rowwise() += b;
  if (apply_relu) y = y.cwiseMax(T(0));
}

// Backward through out = relu(in * weight + bias). d_out is masked in place by the ReLU;
// d_weight and d_bias are accumulated (+=); d_in, when not null, is overwritten.
template <class T>
void dense_backward(const T* in, const T* out, T* d_out, int64_t rows, int64_t in_width,
                    const T* weight, int64_t out_width, bool apply_relu, T* d_weight, T* d_bias,
                    T* d_in) {
  ConstMatrixMap<T> x(in, rows, in_width);
  ConstMatrixMap<T> y(out, rows, out_width);
  MatrixMap<T> dy(d_out, rows, out_width);
  if (apply_relu) dy = (y.array() > T(0)).select(dy, T(0));
  Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> db(d_bias, out_width);
  db += dy.colwise().sum();
  if constexpr (std::is_same_v<T, float>) {
    if (rows <= kSmallGemmRows) {
      // d_weight += in^T d_out (A read transposed in place), d_in = d_out weight^T.
      gemm({in_width, out_width, rows, in, 1, in_width, d_out, out_width, d_weight, out_width}, true, nullptr, false);
      if (d_in != nullptr) gemm_bt({rows, in_width, out_width, d_out, out_width, 1, nullptr, 0, d_in, in_width}, weight, out_width);
      return;
    }
  }
  MatrixMap<T> dw(d_weight, in_width, out_width);
  dw.noalias() += x.transpose() * dy;
  if (d_in != nullptr) {
    ConstMatrixMap<T> w(weight, in_width, out_width);
    MatrixMap<T> dx(d_in, rows, in_width);
    dx.noalias() = dy * w.transpose();
  }
}

}  // namespace tastebud::cpu
