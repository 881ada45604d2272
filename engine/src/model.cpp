#include "tastebud/engine/model.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "tastebud/error.h"
#include "tastebud/philox.h"

namespace tastebud {

std::string to_string(ModelKind kind) {
  switch (kind) {
    case ModelKind::kNeuMF: return "neumf";
    case ModelKind::kGMF: return "gmf";
    case ModelKind::kMLP: return "mlp";
    case ModelKind::kMF: return "mf";
  }
  return "?";
}

ModelKind parse_model_kind(const std::string& name) {
  if (name == "neumf") return ModelKind::kNeuMF;
  if (name == "gmf") return ModelKind::kGMF;
  if (name == "mlp") return ModelKind::kMLP;
  if (name == "mf") return ModelKind::kMF;
  throw Error(fmt::format("unknown model '{}': expected neumf, gmf, mlp or mf", name));
}

uint64_t FeatureSpec::table_rows() const {
  uint64_t rows = textual.empty() ? 0 : text_buckets;
  for (uint32_t n : categorical_rows) rows += n;
  return rows;
}

uint64_t FeatureSpec::categorical_base(size_t field) const {
  uint64_t base = 0;
  for (size_t k = 0; k < field; ++k) base += categorical_rows[k];
  return base;
}

namespace {
void validate_features(const FeatureSpec& s, const char* side) {
  TB_CHECK(s.categorical.size() == s.categorical_rows.size(),
           fmt::format("{} metadata: categorical names and sizes differ in count", side));
  TB_CHECK(s.numerical.size() == s.numerical_mean.size() && s.numerical.size() == s.numerical_stddev.size(),
           fmt::format("{} metadata: numerical fields need a mean and a stddev each", side));
  TB_CHECK(s.textual.empty() || s.text_buckets > 0,
           fmt::format("{} metadata: the textual field needs at least one hash bucket", side));
}
}  // namespace

void ModelConfig::validate() const {
  validate_features(user_features, "user");
  validate_features(item_features, "item");
  validate_features(context, "context");
  TB_CHECK(context.textual.empty() && context.numerical.empty(),
           "context: only categorical contextual fields feed the model");
  TB_CHECK(!has_context() || has_mlp(),
           "`context` feeds the MLP branch; a gmf model has none (use neumf or mlp)");
  TB_CHECK(num_users > 0 && num_items > 0, "the model needs at least one user and one item");
  if (has_gmf()) TB_CHECK(factors > (kind == ModelKind::kMF ? kMfBiasColumns : 0), "`factors` must be positive");
  if (has_mlp()) {
    TB_CHECK(layers.size() >= 2,
             "`layers` needs at least two widths (the embedding width and one layer), e.g. 64,32,16,8");
    TB_CHECK(layers.front() % 2 == 0,
             fmt::format("`layers`: the first width ({}) is the concatenated user and item "
                         "embedding and must be even",
                         layers.front()));
    for (uint32_t w : layers) TB_CHECK(w > 0, "`layers`: every width must be positive");
  }
}

float normal_draw(uint64_t seed, uint32_t tensor_id, uint64_t i, float stddev) {
  const Philox4 w = random_words(seed, RandomStream::kInit, tensor_id, i);
  const double u1 = uniform_open_unit(w.v[0], w.v[1]);
  const double u2 = uniform_open_unit(w.v[2], w.v[3]);
  return static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

namespace {

// Fills values with draws of one distribution; each value's draw is keyed by (seed, tensor, index).
void fill_normal(Tensor& t, uint64_t seed, uint32_t tensor_id, float stddev) {
  for (uint64_t i = 0; i < t.values.size(); ++i) t.values[i] = normal_draw(seed, tensor_id, i, stddev);
}

void fill_uniform(Tensor& t, uint64_t seed, uint32_t tensor_id, float limit) {
  for (uint64_t i = 0; i < t.values.size(); ++i) {
    const Philox4 w = random_words(seed, RandomStream::kInit, tensor_id, i);
    t.values[i] = limit * (2.0f * uniform_unit(w.v[0]) - 1.0f);
  }
}

Tensor make_tensor(std::string name, std::vector<uint64_t> shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return Tensor{std::move(name), std::move(shape), std::vector<float>(n, 0.0f)};
}

// Column `column` of every row of t set to value (t: rows x width, nothing when t is empty).
void set_tensor_column(Tensor& t, int64_t column, float value) {
  const uint64_t width = t.values.empty() ? 0 : t.cols();
  for (uint64_t r = 0; width > 0 && r < t.values.size() / width; ++r) t.values[r * width + column] = value;
}

// MF: the feature rows' and projections' constant columns start at 0 (see
// ModelConfig::constant_column), the head at 1; the id rows' columns are initial_id_row's.
void set_mf_columns(ModelParams& p) {
  set_tensor_column(p.user_features, p.config.constant_column(false), 0.0f);
  set_tensor_column(p.user_numeric, p.config.constant_column(false), 0.0f);
  set_tensor_column(p.item_features, p.config.constant_column(true), 0.0f);
  set_tensor_column(p.item_numeric, p.config.constant_column(true), 0.0f);
  std::fill(p.head_weight.values.begin(), p.head_weight.values.end(), 1.0f);
}

// Everything but the id tables' values, which the caller draws (their shapes are set).
ModelParams initialize_without_id_rows(const ModelConfig& config, uint64_t seed) {
  config.validate();
  ModelParams p;
  p.config = config;
  p.weights.resize(config.num_dense_layers());
  p.biases.resize(config.num_dense_layers());
  const ParamLayout layout(config);
  for (const TensorSlot& slot : layout.slots()) {
    Tensor& t = p.tensor(slot.role, slot.layer);
    if (slot.role <= TensorRole::kItemMlp) t = Tensor{slot.name, slot.shape, {}};  // an id table
    else t = make_tensor(slot.name, slot.shape);
  }
  // Feature rows N(0, 0.01); every tensor draws from its own Philox stream (the id tables 0 to 3).
  fill_normal(p.user_features, seed, 4, 0.01f);
  fill_normal(p.user_numeric, seed, 5, 0.01f);
  fill_normal(p.item_features, seed, 6, 0.01f);
  fill_normal(p.item_numeric, seed, 7, 0.01f);
  fill_normal(p.context_features, seed, 8, 0.01f);
  for (size_t j = 0; j < p.weights.size(); ++j) {
    // He et al. (2015) uniform fan-in init for ReLU layers.
    fill_uniform(p.weights[j], seed, 16 + static_cast<uint32_t>(j),
                 static_cast<float>(std::sqrt(6.0 / static_cast<double>(config.layers[j]))));
  }
  // LeCun uniform for the linear head.
  fill_uniform(p.head_weight, seed, 15,
               static_cast<float>(std::sqrt(3.0 / static_cast<double>(config.head_inputs()))));
  if (config.kind == ModelKind::kMF) set_mf_columns(p);
  return p;
}

// Table t's rows u = rank, rank + ranks, ... drawn into t.values, in order.
void draw_id_rows(Tensor& t, const ModelConfig& config, uint64_t seed, size_t table, uint32_t rank, uint32_t ranks) {
  const uint64_t rows = t.rows(), cols = t.cols();
  const uint64_t held = ModelParams::shard_rows(rows, rank, ranks);
  t.values.assign(cols == 0 ? 0 : held * cols, 0.0f);
  for (uint64_t l = 0; cols > 0 && l < held; ++l) {
    ModelParams::initial_id_row(config, seed, table, l * ranks + rank, t.values.data() + l * cols);
  }
}

}  // namespace

void ModelParams::initial_id_row(const ModelConfig& config, uint64_t seed, size_t table, uint64_t row, float* out) {
  const bool gmf = table < 2, items = table % 2 == 1;
  const uint64_t width = gmf ? (config.has_gmf() ? config.factors : 0) : config.mlp_embedding();
  for (uint64_t j = 0; j < width; ++j) out[j] = normal_draw(seed, static_cast<uint32_t>(table), row * width + j, 0.01f);
  // MF: users [p, b_u = 0, 1], items [q, 1, b_i = 0].
  if (gmf && config.kind == ModelKind::kMF) {
    out[width - 2] = items ? 1.0f : 0.0f;
    out[width - 1] = items ? 0.0f : 1.0f;
  }
}

ModelParams ModelParams::initialize(const ModelConfig& config, uint64_t seed) {
  return initialize_shard(config, seed, 0, 1);
}

ModelParams ModelParams::initialize_shard(const ModelConfig& config, uint64_t seed, uint32_t rank, uint32_t ranks) {
  TB_CHECK(ranks > 0 && rank < ranks, fmt::format("initialize_shard: rank {} of {}", rank, ranks));
  ModelParams p = initialize_without_id_rows(config, seed);
  p.shard_rank = rank;
  p.shard_ranks = ranks;
  Tensor* tables[kEmbeddingTables] = {&p.user_gmf, &p.item_gmf, &p.user_mlp, &p.item_mlp};
  for (size_t t = 0; t < kEmbeddingTables; ++t) draw_id_rows(*tables[t], config, seed, t, rank, ranks);
  return p;
}

Tensor& ModelParams::tensor(TensorRole role, uint32_t layer) {
  switch (role) {
    case TensorRole::kUserGmf: return user_gmf;
    case TensorRole::kItemGmf: return item_gmf;
    case TensorRole::kUserMlp: return user_mlp;
    case TensorRole::kItemMlp: return item_mlp;
    case TensorRole::kUserFeatures: return user_features;
    case TensorRole::kItemFeatures: return item_features;
    case TensorRole::kContext: return context_features;
    case TensorRole::kDenseWeight: TB_CHECK(layer < weights.size(), "no such dense layer"); return weights[layer];
    case TensorRole::kDenseBias: TB_CHECK(layer < biases.size(), "no such dense layer"); return biases[layer];
    case TensorRole::kHeadWeight: return head_weight;
    case TensorRole::kHeadBias: return head_bias;
    case TensorRole::kUserNumeric: return user_numeric;
    case TensorRole::kItemNumeric: return item_numeric;
  }
  throw Error("unknown tensor role");
}

std::vector<Tensor*> ModelParams::tensors() {
  std::vector<Tensor*> all;
  const ParamLayout layout(config);
  for (const TensorSlot& slot : layout.slots()) all.push_back(&tensor(slot.role, slot.layer));
  return all;
}

size_t ModelParams::sparse_tensors() const { return ParamLayout(config).sparse_count(); }

std::vector<const Tensor*> ModelParams::tensors() const {
  std::vector<const Tensor*> all;
  for (Tensor* t : const_cast<ModelParams*>(this)->tensors()) all.push_back(t);
  return all;
}

}  // namespace tastebud
