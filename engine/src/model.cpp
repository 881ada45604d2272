#include "tastebud/engine/model.h"

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
  }
  return "?";
}

ModelKind parse_model_kind(const std::string& name) {
  if (name == "neumf") return ModelKind::kNeuMF;
  if (name == "gmf") return ModelKind::kGMF;
  if (name == "mlp") return ModelKind::kMLP;
  throw Error(fmt::format("unknown model '{}': expected neumf, gmf or mlp", name));
}

void ModelConfig::validate() const {
  TB_CHECK(num_users > 0 && num_items > 0, "the model needs at least one user and one item");
  if (has_gmf()) TB_CHECK(factors > 0, "--factors must be positive");
  if (has_mlp()) {
    TB_CHECK(layers.size() >= 2,
             "--layers needs at least two widths (the embedding width and one layer), e.g. 64,32,16,8");
    TB_CHECK(layers.front() % 2 == 0,
             fmt::format("--layers: the first width ({}) is the concatenated user and item "
                         "embedding and must be even",
                         layers.front()));
    for (uint32_t w : layers) TB_CHECK(w > 0, "--layers: every width must be positive");
  }
}

namespace {

// Fills values with draws of one distribution; each value's draw is keyed by (seed, tensor, index).
void fill_normal(Tensor& t, uint64_t seed, uint32_t tensor_id, float stddev) {
  for (uint64_t i = 0; i < t.values.size(); ++i) {
    const Philox4 w = random_words(seed, RandomStream::kInit, tensor_id, i);
    const double u1 = uniform_open_unit(w.v[0], w.v[1]);
    const double u2 = uniform_open_unit(w.v[2], w.v[3]);
    t.values[i] = static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) *
                                     std::cos(6.283185307179586 * u2));
  }
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

}  // namespace

ModelParams ModelParams::initialize(const ModelConfig& config, uint64_t seed) {
  config.validate();
  ModelParams p;
  p.config = config;
  const uint64_t f = config.has_gmf() ? config.factors : 0;
  const uint64_t e = config.mlp_embedding();
  p.user_gmf = make_tensor("user_gmf", {config.num_users, f});
  p.item_gmf = make_tensor("item_gmf", {config.num_items, f});
  p.user_mlp = make_tensor("user_mlp", {config.num_users, e});
  p.item_mlp = make_tensor("item_mlp", {config.num_items, e});
  fill_normal(p.user_gmf, seed, 0, 0.01f);
  fill_normal(p.item_gmf, seed, 1, 0.01f);
  fill_normal(p.user_mlp, seed, 2, 0.01f);
  fill_normal(p.item_mlp, seed, 3, 0.01f);
  for (size_t j = 0; j < config.num_dense_layers(); ++j) {
    const uint64_t in = config.layers[j], out = config.layers[j + 1];
    p.weights.push_back(make_tensor(fmt::format("dense{}_weight", j), {in, out}));
    p.biases.push_back(make_tensor(fmt::format("dense{}_bias", j), {out}));
    // He et al. (2015) uniform fan-in init for ReLU layers.
    fill_uniform(p.weights.back(), seed, 16 + static_cast<uint32_t>(j),
                 static_cast<float>(std::sqrt(6.0 / static_cast<double>(in))));
  }
  p.head_weight = make_tensor("head_weight", {config.head_inputs()});
  p.head_bias = make_tensor("head_bias", {1});
  // LeCun uniform for the linear head.
  fill_uniform(p.head_weight, seed, 15,
               static_cast<float>(std::sqrt(3.0 / static_cast<double>(config.head_inputs()))));
  return p;
}

std::vector<Tensor*> ModelParams::tensors() {
  std::vector<Tensor*> all{&user_gmf, &item_gmf, &user_mlp, &item_mlp};
  for (size_t j = 0; j < weights.size(); ++j) {
    all.push_back(&weights[j]);
    all.push_back(&biases[j]);
  }
  all.push_back(&head_weight);
  all.push_back(&head_bias);
  return all;
}

std::vector<const Tensor*> ModelParams::tensors() const {
  std::vector<const Tensor*> all;
  for (Tensor* t : const_cast<ModelParams*>(this)->tensors()) all.push_back(t);
  return all;
}

}  // namespace tastebud
