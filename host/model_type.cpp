#include "host/model_type.h"

#include <array>
#include <utility>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud::host {
namespace {

constexpr std::array<std::pair<ModelType, std::string_view>, 9> kNames{{
    {ModelType::kNeuMF, "neumf"},
    {ModelType::kGMF, "gmf"},
    {ModelType::kMLP, "mlp"},
    {ModelType::kMF, "mf"},
    {ModelType::kPopularity, "popularity"},
    {ModelType::kTrending, "trending"},
    {ModelType::kSims, "sims"},
    {ModelType::kTransitions, "transitions"},
    {ModelType::kSASRec, "sasrec"},
}};

}  // namespace

ModelType parse_model_type(std::string_view name) {
  for (const auto& [type, spelled] : kNames)
    if (name == spelled) return type;
  throw Error(fmt::format("`model` '{}': expected neumf, gmf, mlp, mf, sasrec, popularity, trending, sims or transitions", name));
}

std::string_view to_string(ModelType type) {
  for (const auto& [t, spelled] : kNames)
    if (t == type) return spelled;
  return "unknown";
}

bool is_recipe(ModelType type) { return !neural_kind(type).has_value() && type != ModelType::kSASRec; }

std::optional<ModelKind> neural_kind(ModelType type) {
  switch (type) {
    case ModelType::kNeuMF: return ModelKind::kNeuMF;
    case ModelType::kGMF: return ModelKind::kGMF;
    case ModelType::kMLP: return ModelKind::kMLP;
    case ModelType::kMF: return ModelKind::kMF;
    default: return std::nullopt;
  }
}

}  // namespace tastebud::host
