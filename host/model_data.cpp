#include "host/model_data.h"

#include <algorithm>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/features.h"
#include "host/sequence_training.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/features.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {

namespace fs = std::filesystem;

namespace {

// A metadata model is served as its folded id-only twin (fold_features): every user and item of
// the model, cold ones included, scores with the metadata of the dataset it was trained on,
// matched by id, so the scorers need not know about features. With user metadata, users the
// dataset gained after training (an incremental import of Users) join the model as metadata-only
// users: a zero id row plus their features, scored like users without interactions were in
// training. m.user_ids and m.seen grow to match; m.trained_users keeps the model's own count.
ModelParams fold_dataset_features(const ModelParams& params, ModelData& m, const datasets::Dataset& dataset) {
  auto rows_of = [](const std::vector<std::string>& model_ids, const datasets::StringTable& ids) {
    std::unordered_map<std::string, uint32_t> index;
    for (uint32_t d = 0; d < ids.size(); ++d) index.emplace(std::string(ids[d]), d);
    std::vector<int64_t> rows(model_ids.size(), -1);
    for (size_t x = 0; x < model_ids.size(); ++x) {
      const auto it = index.find(model_ids[x]);
      if (it != index.end()) rows[x] = it->second;
    }
    return rows;
  };
  ModelParams widened = params;
  ModelConfig& c = widened.config;
  if (c.user_features.enabled()) {
    const std::unordered_map<std::string, uint32_t> known = index_ids(m.user_ids);
    for (uint32_t d = 0; d < dataset.user_ids.size(); ++d) {
      const std::string id(dataset.user_ids[d]);
      if (!known.contains(id) && !dataset.users.has_row.empty() && dataset.users.has_row[d]) m.user_ids.push_back(id);
    }
    const uint32_t added = static_cast<uint32_t>(m.user_ids.size()) - c.num_users;
    if (added > 0) {
      c.num_users += added;
      widened.user_gmf.shape[0] = widened.user_mlp.shape[0] = c.num_users;
      widened.user_gmf.values.resize(widened.user_gmf.values.size() + static_cast<size_t>(added) * widened.user_gmf.cols(), 0.0f);
      widened.user_mlp.values.resize(widened.user_mlp.values.size() + static_cast<size_t>(added) * widened.user_mlp.cols(), 0.0f);
      if (!m.seen.offsets.empty()) m.seen.offsets.resize(c.num_users + 1, m.seen.offsets.back());
      if (m.excluded && !m.excluded->offsets.empty())
        m.excluded->offsets.resize(c.num_users + 1, m.excluded->offsets.back());
    }
  }
  FeatureInputs users, items;
  if (c.user_features.enabled()) {
    users = encode_features(dataset.users, c.user_features, c.num_users, rows_of(m.user_ids, dataset.user_ids));
  }
  if (c.item_features.enabled()) {
    items = encode_features(dataset.items, c.item_features, c.num_items, rows_of(m.item_ids, dataset.item_ids));
  }
  return fold_features(widened, users, items);
}

// The values of the model's contextual fields, from the dataset it was trained on: value v of
// field k is context-table row categorical_base(k) + v.
std::vector<ContextValues> context_values(const FeatureSpec& spec, const datasets::Dataset& dataset) {
  std::vector<ContextValues> out;
  for (size_t k = 0; k < spec.categorical.size(); ++k) {
    ContextValues& values = out.emplace_back();
    values.field = spec.categorical[k];
    for (const auto& field : dataset.interactions.context) {
      if (field.name != values.field) continue;
      const uint32_t n = std::min<uint32_t>(spec.categorical_rows[k], static_cast<uint32_t>(field.vocabulary.size()));
      for (uint32_t v = 0; v < n; ++v)
        values.rows.emplace(std::string(field.vocabulary[v]), static_cast<uint32_t>(spec.categorical_base(k) + v));
    }
  }
  return out;
}

// The neural models: model.bin, checked against the id files; a metadata or context model reads
// its dataset once (metadata and context values come from the dataset it was trained on).
void load_neural(const fs::path& dir, ModelData& m) {
  if (!fs::exists(dir / "model.bin"))
    throw Error(fmt::format("{}: no model.bin; training has not finished an epoch yet", dir.string()));
  m.params = load_model(dir / "model.bin");
  const ModelConfig& c = m.params->config;
  if (c.num_users != m.user_ids.size() || c.num_items != m.item_ids.size())
    throw Error(fmt::format("{}: model.bin has {} users and {} items but the id files list {} and {}",
                            dir.string(), c.num_users, c.num_items, m.user_ids.size(), m.item_ids.size()));
  m.trained_users = c.num_users;
  if (c.has_context() || c.has_metadata()) {
    TB_CHECK(!m.data.empty() && fs::is_directory(m.data),
             fmt::format("{}: the model uses {} but its dataset ({}) is gone", dir.string(),
                         c.has_metadata() ? "metadata" : "context", m.data.string()));
    const datasets::Dataset dataset = datasets::Dataset::open(m.data);
    if (c.has_context()) m.context = context_values(c.context, dataset);
    m.item_metadata = c.item_features.enabled();
    if (c.has_metadata()) m.params = fold_dataset_features(*m.params, m, dataset);  // may add users
  }
}

// seen.bin and excluded.bin hold one list per user of user_ids.json (or none at all).
void check_user_count(const SeenItems& lists, const ModelData& m, const fs::path& file) {
  if (!lists.offsets.empty() && lists.offsets.size() != m.user_ids.size() + 1)
    throw Error(fmt::format("{}: {} covers {} users but user_ids.json lists {}", file.parent_path().string(),
                            file.filename().string(), lists.offsets.size() - 1, m.user_ids.size()));
}

// The recipes: recipe.bin, checked against the id files.
void load_recipe(const fs::path& dir, ModelData& m) {
  m.recipe = read_recipe(dir / "recipe.bin", static_cast<uint32_t>(m.item_ids.size()));
  if (m.recipe.popularity.size() != m.item_ids.size())
    throw Error(fmt::format("{}: recipe.bin covers {} items but item_ids.json lists {}", dir.string(),
                            m.recipe.popularity.size(), m.item_ids.size()));
  if (!m.recipe.latest.offsets.empty() && m.recipe.latest.offsets.size() != m.user_ids.size() + 1)
    throw Error(fmt::format("corrupt: {}: latest items of {} users but user_ids.json lists {}",
                            (dir / "recipe.bin").string(), m.recipe.latest.offsets.size() - 1, m.user_ids.size()));
}

}  // namespace

ModelData load_model_dir(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw Error(fmt::format("--model {}: not a directory", dir.string()));
  ModelData m;
  nlohmann::json config;
  std::string kind;
  try {
    config = nlohmann::json::parse(read_file(dir / "config.json"));
    kind = config.at("model").get<std::string>();
    m.data = config.value("data", std::string());
    m.use_case = config.value("use_case", std::string());
    if (const auto recipe = config.find("recipe"); recipe != config.end() && recipe->is_object()) {
      m.recent_items = recipe->value("recent_items", m.recent_items);
      m.recent_decay = recipe->value("recent_decay", m.recent_decay);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not a tastebud model config: {}", (dir / "config.json").string(), e.what()));
  }
  try {
    m.kind = parse_model_type(kind);
  } catch (const Error&) {
    throw Error(fmt::format("{}: unknown model kind '{}'", dir.string(), kind));
  }
  check_file_checksums(config, dir);
  m.user_ids = read_ids(dir / "user_ids.json");
  m.item_ids = read_ids(dir / "item_ids.json");
  if (fs::exists(dir / "seen.bin")) m.seen = read_seen(dir / "seen.bin", static_cast<uint32_t>(m.item_ids.size()));
  if (fs::exists(dir / "excluded.bin"))
    m.excluded = read_seen(dir / "excluded.bin", static_cast<uint32_t>(m.item_ids.size()));
  if (is_recipe(m.kind)) {
    load_recipe(dir, m);
  } else if (m.kind == ModelType::kSASRec) {
    load_recipe(dir, m);
    m.sequence = read_sequence_params(dir / "sequence.bin", static_cast<uint32_t>(m.item_ids.size()));
  } else {
    load_neural(dir, m);
  }
  check_user_count(m.seen, m, dir / "seen.bin");
  if (m.excluded) check_user_count(*m.excluded, m, dir / "excluded.bin");
  return m;
}

}  // namespace tastebud::host
