// The NeuMF family (He et al., Neural Collaborative Filtering, 2017): a GMF branch (element-wise
// product of user and item factors) and an MLP branch (concatenated user and item embeddings
// through ReLU layers), joined by one linear layer into a logit. GMF and MLP alone are the same
// model with one branch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tastebud {

enum class ModelKind : uint32_t { kNeuMF = 0, kGMF = 1, kMLP = 2 };

std::string to_string(ModelKind kind);
ModelKind parse_model_kind(const std::string& name);  // neumf | gmf | mlp

struct ModelConfig {
  ModelKind kind = ModelKind::kNeuMF;
  uint32_t num_users = 0;
  uint32_t num_items = 0;
  uint32_t factors = 8;                       // GMF width
  std::vector<uint32_t> layers{64, 32, 16, 8};  // MLP: layers[0] = concatenated embedding width

  bool has_gmf() const { return kind != ModelKind::kMLP; }
  bool has_mlp() const { return kind != ModelKind::kGMF; }
  uint32_t mlp_embedding() const { return has_mlp() ? layers.front() / 2 : 0; }
  uint32_t mlp_output() const { return has_mlp() ? layers.back() : 0; }
  uint32_t head_inputs() const { return (has_gmf() ? factors : 0) + mlp_output(); }
  size_t num_dense_layers() const { return has_mlp() ? layers.size() - 1 : 0; }
  // Throws tastebud::Error when the shape is unusable (odd layers[0], zero widths, ...).
  void validate() const;
};

// A named float tensor, row-major.
struct Tensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> values;

  uint64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  uint64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
};

// All parameters on the host. Dense layer j maps width layers[j] to layers[j+1]; its weight is
// stored [in x out] so that a batch of rows times the weight gives the layer's output.
struct ModelParams {
  ModelConfig config;
  Tensor user_gmf, item_gmf;      // [users x factors], [items x factors]
  Tensor user_mlp, item_mlp;      // [users x E], [items x E], E = layers[0] / 2
  std::vector<Tensor> weights;    // [layers[j] x layers[j+1]]
  std::vector<Tensor> biases;     // [layers[j+1]]
  Tensor head_weight;             // [head_inputs]: GMF part first, then the MLP part
  Tensor head_bias;               // [1]

  // Embeddings N(0, 0.01) (standard deviation 0.01, as in the paper), dense layers uniform with
  // He fan-in scaling, head uniform with fan-in scaling; every draw from Philox keyed by seed.
  static ModelParams initialize(const ModelConfig& config, uint64_t seed);

  // Every tensor in a fixed order: the embedding tables first, then the dense parameters.
  std::vector<Tensor*> tensors();
  std::vector<const Tensor*> tensors() const;
  static constexpr size_t kEmbeddingTables = 4;
};

}  // namespace tastebud
