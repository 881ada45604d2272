// A model directory read into memory: what every answer starts from (batch-infer, batch-segment,
// export, the Python package). host/model_dir.h holds the directory's files; this reads them whole.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "host/model_dir.h"
#include "host/model_type.h"
#include "host/recipes.h"
#include "tastebud/engine/model.h"
#include "tastebud/engine/sequence_model.h"

namespace tastebud::host {

// A contextual field of a model trained with --context: its values as context-table rows.
struct ContextValues {
  std::string field;
  std::unordered_map<std::string, uint32_t> rows;
};

// Everything a model directory holds, in memory. Tests build one by hand.
struct ModelData {
  ModelType kind = ModelType::kNeuMF;
  std::vector<std::string> user_ids, item_ids;
  SeenItems seen;                     // may be empty (no user has seen anything)
  // excluded.bin's items when the model has one (--exclude-events, some use cases): what answers
  // leave out instead of seen's.
  std::optional<SeenItems> excluded;
  std::optional<ModelParams> params;  // the neural models
  // A neural model trained with item metadata (folded into params): an item without training
  // interactions still scores through its metadata rows, so its score means something.
  bool item_metadata = false;
  RecipeData recipe;                  // recipes; sasrec: popularity and each user's latest items
  std::optional<SequenceParams> sequence;  // sasrec
  std::filesystem::path data;         // the dataset it was trained on ("" when unknown)
  std::vector<ContextValues> context; // params->config.context's fields, in its order
  // Users [trained_users, user_ids.size()) joined after training from the dataset's user metadata
  // (a model with user metadata); they score from metadata alone.
  uint32_t trained_users = UINT32_MAX;
  // How a query's recent items count (config.json's recipe options of transitions; the defaults of
  // --recent-items and --recent-decay otherwise): the newest this many, weighted decay^age.
  uint32_t recent_items = 10;
  double recent_decay = 0.6;
  // The domain recommender this model is (config.json's "use_case", host/use_cases.h); "" when none.
  std::string use_case;

  // The items a user's answers leave out: excluded.bin's when the model has one, else seen.bin's.
  const SeenItems& exclusions() const { return excluded ? *excluded : seen; }
};

// Reads and checks config.json, the id files, seen.bin and model.bin or recipe.bin (sasrec: and
// sequence.bin). A metadata
// model comes back folded into its id-only twin over the dataset it was trained on (which must
// still exist), with the users that dataset gained since joined as metadata-only users.
ModelData load_model_dir(const std::filesystem::path& dir);

}  // namespace tastebud::host
