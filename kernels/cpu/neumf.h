// The NeuMF forward and backward pass over one chunk of gathered rows on the CPU. Templates over
// the scalar, so the gradient checks run this exact code in double precision.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/dense.h"
#include "tastebud/neumf_shape.h"

namespace tastebud::cpu {

using NeuMFShape = tastebud::NeuMFShape;

template <class T>
struct DenseParams {
  std::vector<const T*> weights, biases;  // per dense layer
  const T* head_weight = nullptr;
  const T* head_bias = nullptr;
};

template <class T>
struct DenseGrads {
  std::vector<T*> weights, biases;
  T* head_weight = nullptr;
  T* head_bias = nullptr;
};

// Pointers to one chunk's rows. Inputs: user_gmf and item_gmf [rows x factors] (the gathered
// factors), acts[0] [rows x layers[0]] (user and item MLP embeddings side by side). Forward fills
// gmf, acts[1..] and logits; backward reads dlogits and fills user_gmf_grad, item_gmf_grad and
// act_grads[0] (act_grads[1..] are scratch).
template <class T>
struct ChunkRows {
  int64_t rows = 0;
  const T* user_gmf = nullptr;
  const T* item_gmf = nullptr;
  T* gmf = nullptr;
  std::vector<T*> acts;
  std::vector<T*> act_grads;
  T* logits = nullptr;
  const T* dlogits = nullptr;
  T* user_gmf_grad = nullptr;
  T* item_gmf_grad = nullptr;
};

template <class T>
void neumf_forward(const NeuMFShape& shape, const DenseParams<T>& p, ChunkRows<T>& c) {
  const int64_t f = shape.factors, h = shape.mlp_out();
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t k = 0; k < f; ++k) c.gmf[r * f + k] = c.user_gmf[r * f + k] * c.item_gmf[r * f + k];
  }
  for (int64_t j = 0; j < shape.dense_layers(); ++j) {
    dense_forward<T>(c.acts[j], c.rows, shape.layers[j], p.weights[j], p.biases[j],
                     shape.layers[j + 1], true, c.acts[j + 1]);
  }
  const T* top = h > 0 ? c.acts[shape.dense_layers()] : nullptr;
  for (int64_t r = 0; r < c.rows; ++r) {
    T z = p.head_bias[0];
    for (int64_t k = 0; k < f; ++k) z += c.gmf[r * f + k] * p.head_weight[k];
    for (int64_t k = 0; k < h; ++k) z += top[r * h + k] * p.head_weight[f + k];
    c.logits[r] = z;
  }
}

// Accumulates the dense gradients into g (+=) and writes the per-row embedding gradients.
template <class T>
void neumf_backward(const NeuMFShape& shape, const DenseParams<T>& p, ChunkRows<T>& c,
                    DenseGrads<T>& g) {
  const int64_t f = shape.factors, h = shape.mlp_out(), layers = shape.dense_layers();
  T* d_top = h > 0 ? c.act_grads[layers] : nullptr;
  const T* top = h > 0 ? c.acts[layers] : nullptr;
  for (int64_t r = 0; r < c.rows; ++r) {
    const T dz = c.dlogits[r];
    g.head_bias[0] += dz;
    for (int64_t k = 0; k < f; ++k) {
      g.head_weight[k] += dz * c.gmf[r * f + k];
      const T d_gmf = dz * p.head_weight[k];
      c.user_gmf_grad[r * f + k] = d_gmf * c.item_gmf[r * f + k];
      c.item_gmf_grad[r * f + k] = d_gmf * c.user_gmf[r * f + k];
    }
    for (int64_t k = 0; k < h; ++k) {
      g.head_weight[f + k] += dz * top[r * h + k];
      d_top[r * h + k] = dz * p.head_weight[f + k];
    }
  }
  for (int64_t j = layers - 1; j >= 0; --j) {
    dense_backward<T>(c.acts[j], c.acts[j + 1], c.act_grads[j + 1], c.rows, shape.layers[j],
                      p.weights[j], shape.layers[j + 1], true, g.weights[j], g.biases[j],
                      c.act_grads[j]);
  }
}

}  // namespace tastebud::cpu
