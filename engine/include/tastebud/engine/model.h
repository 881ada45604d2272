// The NeuMF family (He et al., Neural Collaborative Filtering, 2017): a GMF branch (element-wise
// product of user and item factors) and an MLP branch (concatenated user and item embeddings
// through ReLU layers), joined by one linear layer into a logit. GMF and MLP alone are the same
// model with one branch. MF (biased matrix factorisation, the baseline of Rendle et al. 2020) is
// the GMF branch with a head of ones that never trains and two more columns per row: users
// [p, b_u, 1], items [q, 1, b_i], so the logit is p . q + b_u + b_i + b, with b the head bias.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tastebud/engine/param_layout.h"
#include "tastebud/neumf_shape.h"

namespace tastebud {

enum class ModelKind : uint32_t { kNeuMF = 0, kGMF = 1, kMLP = 2, kMF = 3 };

std::string to_string(ModelKind kind);

// Value i of tensor `tensor_id` at initialisation: a normal draw keyed by (seed, tensor, index)
// (Philox, Box-Muller), the same on every backend and rank. Every model's init draws through it.
float normal_draw(uint64_t seed, uint32_t tensor_id, uint64_t i, float stddev);
ModelKind parse_model_kind(const std::string& name);  // neumf | gmf | mlp | mf

// One side's metadata (users or items) as the model sees it. Every categorical field and the
// textual field own a block of rows of one feature table per side (the field's vocabulary, or the
// text hash buckets): one table with row blocks is the same math as one table per field and keeps
// a single lazily updated tensor. Numerical fields are standardised with mean and stddev (from the
// data at training time, kept here so that scoring applies the same transform) and projected by a
// learned [numerical x width] matrix.
struct FeatureSpec {
  std::vector<std::string> categorical;        // field names
  std::vector<uint32_t> categorical_rows;      // vocabulary size of each
  std::string textual;                         // empty: no textual field
  uint32_t text_buckets = 0;                   // token hashes folded modulo this
  std::vector<std::string> numerical;          // field names
  std::vector<float> numerical_mean, numerical_stddev;

  bool enabled() const { return !categorical.empty() || !textual.empty() || !numerical.empty(); }
  uint64_t table_rows() const;                 // sum of categorical_rows + text_buckets
  uint64_t categorical_base(size_t field) const;  // first row of a categorical field
  uint64_t text_base() const { return table_rows() - (textual.empty() ? 0 : text_buckets); }
};

struct ModelConfig {
  ModelKind kind = ModelKind::kNeuMF;
  uint32_t num_users = 0;
  uint32_t num_items = 0;
  uint32_t factors = 8;                       // GMF width (MF: the latent factors + 2, see above)
  std::vector<uint32_t> layers{64, 32, 16, 8};  // MLP: layers[0] = concatenated embedding width

  bool has_gmf() const { return kind != ModelKind::kMLP; }
  bool has_mlp() const { return kind != ModelKind::kGMF && kind != ModelKind::kMF; }
  // MF: the extra columns a GMF row carries, the head that stays at ones, and the column of each
  // id table that stays at one (-1: none).
  static constexpr uint32_t kMfBiasColumns = 2;
  bool frozen_head() const { return kind == ModelKind::kMF; }
  // MF with metadata: a side's feature rows (and numeric projections) are f wide like its id rows
  // and add to its factors and to its own bias (a cold item's b_i comes from its genres); their
  // column at the side's constant column stays at zero, so the sum keeps the one.
  int64_t constant_column(bool items) const {
    return kind != ModelKind::kMF ? -1 : items ? static_cast<int64_t>(factors) - 2 : static_cast<int64_t>(factors) - 1;
  }
  uint32_t mlp_embedding() const { return has_mlp() ? layers.front() / 2 : 0; }
  uint32_t mlp_output() const { return has_mlp() ? layers.back() : 0; }
  uint32_t head_inputs() const { return (has_gmf() ? factors : 0) + mlp_output(); }
  size_t num_dense_layers() const { return has_mlp() ? layers.size() - 1 : 0; }
  // Metadata features (empty specs: the id-only model, and the file layout of before).
  FeatureSpec user_features, item_features;
  bool has_metadata() const { return user_features.enabled() || item_features.enabled(); }
  // Contextual categorical fields of the interactions (DEVICE_TYPE, ...; categorical entries of
  // the spec only): each value owns a row of the context table, whose sum over the fields of an
  // interaction is added to the user's half of the MLP input. Empty: no context.
  FeatureSpec context;
  bool has_context() const { return !context.categorical.empty(); }
  // Width of a feature row: the GMF part, then the MLP part, split like the id tables.
  uint32_t feature_width() const { return (has_gmf() ? factors : 0) + mlp_embedding(); }
  // The shape the kernels of both backends take.
  NeuMFShape neumf_shape() const {
    NeuMFShape shape;
    shape.factors = has_gmf() ? factors : 0;
    if (has_mlp()) shape.layers.assign(layers.begin(), layers.end());
    return shape;
  }
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
  // Metadata, present in tensors() only when the config enables it: feature tables
  // [FeatureSpec::table_rows() x feature_width()] and numeric projections
  // [numerical x feature_width()]; columns [0, factors) feed GMF, the rest the MLP half.
  Tensor user_features, item_features;
  Tensor user_numeric, item_numeric;
  // Context: [FeatureSpec::table_rows() x mlp_embedding()], present when the config has context.
  Tensor context_features;

  // Rows of a table of `rows` that rank `rank` of `ranks` owns when id tables are sharded by row
  // (rows u % ranks == rank, held in ascending order, local row u / ranks).
  static uint64_t shard_rows(uint64_t rows, uint64_t rank, uint64_t ranks) {
    return rows > rank ? (rows - rank + ranks - 1) / ranks : 0;
  }
  // The id tables' rows these values hold: all of them (shard_ranks 1), or only rank shard_rank's
  // own rows u % shard_ranks == shard_rank, in ascending order (a sharded initialisation or
  // resume on several ranks, see engine/src/sharded_tables.h). The shapes stay the whole tables'.
  uint32_t shard_rank = 0, shard_ranks = 1;
  bool sharded() const { return shard_ranks > 1; }
  // Rows of an id table of `rows` rows that these values hold.
  uint64_t held_rows(uint64_t rows) const { return shard_rows(rows, shard_rank, shard_ranks); }

  // Embeddings N(0, 0.01) (standard deviation 0.01, as in the paper), dense layers uniform with
  // He fan-in scaling, head uniform with fan-in scaling; every draw from Philox keyed by seed.
  static ModelParams initialize(const ModelConfig& config, uint64_t seed);
  // The same values, but the id tables hold only rank's rows (see shard_rank): no process of
  // several ever holds the whole tables. Row u's values are the bits initialize gives row u.
  static ModelParams initialize_shard(const ModelConfig& config, uint64_t seed, uint32_t rank, uint32_t ranks);
  // Row `row` of id table `table` (0 user_gmf, 1 item_gmf, 2 user_mlp, 3 item_mlp) as initialize
  // draws it, MF's bias and constant columns included; out has the table's width.
  static void initial_id_row(const ModelConfig& config, uint64_t seed, size_t table, uint64_t row, float* out);

  // Every tensor in the order of ParamLayout(config) (tastebud/engine/param_layout.h): the sparse
  // tables first (the four id tables, then the feature tables that the config enables, then the
  // context table), then the dense parameters (the layers, the head, then the numeric projections
  // that the config enables). Without metadata this is the order of before.
  std::vector<Tensor*> tensors();
  std::vector<const Tensor*> tensors() const;
  // The tensor playing this role (layer j of the dense layers).
  Tensor& tensor(TensorRole role, uint32_t layer = 0);
  static constexpr size_t kEmbeddingTables = 4;  // the id tables
  size_t sparse_tensors() const;                 // id tables + feature tables + context table
};

}  // namespace tastebud
