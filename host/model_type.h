#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "tastebud/engine/model.h"

namespace tastebud::host {

// Every kind of model `tastebud train --model` builds: the neural models the engine trains and the
// recipes host/recipes.* counts. Parsed once where a name comes in (a flag, a job file, a Python
// keyword, a model directory's config.json); everything after compares the enum.
enum class ModelType { kNeuMF, kGMF, kMLP, kMF, kPopularity, kTrending, kSims, kTransitions, kSASRec };

// neumf | gmf | mlp | mf | popularity | trending | sims | transitions | sasrec; anything else throws an
// Error naming `model` and the choices.
ModelType parse_model_type(std::string_view name);
std::string_view to_string(ModelType type);

// Counted, not trained (popularity, trending, sims, transitions).
bool is_recipe(ModelType type);
// The engine's NeuMF-family kind (neumf, gmf, mlp, mf); nullopt for a recipe and for sasrec, the
// sequence model (tastebud/engine/sequence_model.h, host/sequence_training.h).

std::optional<ModelKind> neural_kind(ModelType type);

}  // namespace tastebud::host
