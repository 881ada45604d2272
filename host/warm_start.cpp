#include "host/warm_start.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <ostream>
#include <unordered_map>

#include "host/features.h"
#include "host/model_dir.h"
#include "host/model_type.h"
#include "tastebud/atomic_file.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/engine/param_layout.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool is_id_table(TensorRole role) {
  return role == TensorRole::kUserGmf || role == TensorRole::kItemGmf ||
         role == TensorRole::kUserMlp || role == TensorRole::kItemMlp;
}

// `counts`: with each categorical field's number of values (a parent without vocabularies.json
// matches its table row by row, so the counts must agree).
std::string spec_text(const FeatureSpec& spec, bool counts = true) {
  if (!spec.enabled()) return "none";
  std::string text;
  for (size_t k = 0; k < spec.categorical.size(); ++k) {
    text += fmt::format("{}{}", text.empty() ? "" : ", ", spec.categorical[k]);
    if (counts) text += fmt::format(" ({} values)", spec.categorical_rows[k]);
  }
  if (!spec.textual.empty())
    text +=
        fmt::format("{}{} ({} buckets)", text.empty() ? "" : ", ", spec.textual, spec.text_buckets);
  for (const std::string& name : spec.numerical)
    text += fmt::format("{}{}", text.empty() ? "" : ", ", name);
  return text;
}

// The rows `to` holds (all of them, or with ranks > 1 rank's own rows u % ranks == rank) from the
// rows of `from` that `source` names (-1: left as it is). `held` lists the parent rows `from`
// holds when it holds only some (ParentModel::user_rows); null: it holds them all.
void copy_rows(const Tensor& from, const std::vector<uint64_t>* held, Tensor& to, uint64_t rank, uint64_t ranks,
               const std::vector<int64_t>& source) {
  const uint64_t width = to.cols();
  if (width == 0) return;
  for (uint64_t local = 0; local < to.values.size() / width; ++local) {
    const int64_t row = source[local * ranks + rank];
    if (row < 0) continue;
    const uint64_t at = held == nullptr ? static_cast<uint64_t>(row)
                                        : static_cast<uint64_t>(std::lower_bound(held->begin(), held->end(), row) - held->begin());
    std::copy_n(from.values.begin() + static_cast<int64_t>(at * width), width,
                to.values.begin() + static_cast<int64_t>(local * width));
  }
}

// For each dataset index, the parent's row of the same external id, or -1.
std::vector<int64_t> parent_rows(const std::vector<std::string>& parent_ids,
                                 const datasets::StringTable& ids, uint32_t* kept) {
  const auto index = index_ids(parent_ids);
  std::vector<int64_t> source(ids.size(), -1);
  uint32_t matched = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto it = index.find(std::string(ids[i]));
    if (it == index.end()) continue;
    source[i] = it->second;
    ++matched;
  }
  if (kept) *kept = matched;
  return source;
}

// The parent's vocabulary of one side ("user" or "item"), or null when it records none.
const json* side_vocabularies(const ParentModel& parent, const char* side) {
  if (!parent.vocabularies.is_object() || !parent.vocabularies.contains(side)) return nullptr;
  return &parent.vocabularies[side];
}

// For each row of the metadata table of `now`, the parent's (`was`) row: a categorical value's by
// value (`was_values`: the parent's vocabularies of this side; null: row by row), a text bucket's
// by bucket; -1 for a value the parent never saw. check_same_shape gave both the same fields.
std::vector<int64_t> feature_rows(const FeatureSpec& now, const FeatureSpec& was,
                                  const datasets::Metadata& metadata, const json* was_values) {
  std::vector<int64_t> source(now.table_rows(), -1);
  for (size_t k = 0; k < now.categorical.size(); ++k) {
    const uint64_t base = now.categorical_base(k), was_base = was.categorical_base(k);
    if (was_values == nullptr) {
      for (uint32_t v = 0; v < std::min(now.categorical_rows[k], was.categorical_rows[k]); ++v)
        source[base + v] = static_cast<int64_t>(was_base + v);
      continue;
    }
    std::unordered_map<std::string, uint32_t> was_index;
    const json& values = was_values->value(now.categorical[k], json::array());
    for (uint32_t v = 0; v < values.size() && v < was.categorical_rows[k]; ++v)
      was_index.emplace(values[v].get<std::string>(), v);
    for (const auto& field : metadata.categorical) {
      if (field.name != now.categorical[k]) continue;
      for (uint32_t v = 0; v < now.categorical_rows[k] && v < field.vocabulary.size(); ++v) {
        const auto it = was_index.find(std::string(field.vocabulary[v]));
        if (it != was_index.end()) source[base + v] = static_cast<int64_t>(was_base + it->second);
      }
    }
  }
  if (!now.textual.empty()) {
    for (uint32_t b = 0; b < now.text_buckets; ++b)
      source[now.text_base() + b] = static_cast<int64_t>(was.text_base() + b);
  }
  return source;
}

}  // namespace

void write_vocabularies(const datasets::Dataset& dataset, const ModelConfig& config,
                        const fs::path& path) {
  json vocabularies = json::object();
  if (!config.user_features.categorical.empty())
    vocabularies["user"] = spec_vocabularies(dataset.users, config.user_features);
  if (!config.item_features.categorical.empty())
    vocabularies["item"] = spec_vocabularies(dataset.items, config.item_features);
  if (!vocabularies.empty()) write_file_atomically(path, vocabularies.dump() + "\n");
}

namespace {

// The parent rows that rank's own rows (u % ranks == rank) of the dataset's ids come from,
// ascending.
std::vector<uint64_t> needed_rows(const std::vector<std::string>& parent_ids, const datasets::StringTable& ids,
                                  uint32_t rank, uint32_t ranks) {
  const std::vector<int64_t> source = parent_rows(parent_ids, ids, nullptr);
  std::vector<uint64_t> rows;
  for (size_t u = rank; u < source.size(); u += ranks) {
    if (source[u] >= 0) rows.push_back(static_cast<uint64_t>(source[u]));
  }
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

}  // namespace

ParentModel load_parent_model(const fs::path& dir, const datasets::Dataset* dataset, uint32_t rank, uint32_t ranks) {
  TB_CHECK(fs::is_directory(dir),
           fmt::format("--warm-start {}: not a model directory", dir.string()));
  ParentModel parent;
  parent.dir = fs::canonical(dir);
  const fs::path config_path = parent.dir / "config.json";
  try {
    parent.config = json::parse(read_file(config_path));
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not a tastebud model config: {}", config_path.string(), e.what()));
  }
  check_file_checksums(parent.config, parent.dir);
  const std::string kind = parent.config.value("model", std::string());
  TB_CHECK(neural_kind(parse_model_type(kind)).has_value(),
           fmt::format("--warm-start {}: a {} model has no NeuMF-family parameters to start from", dir.string(),
                       kind));
  TB_CHECK(fs::exists(parent.dir / "model.bin"),
           fmt::format("--warm-start {}: no model.bin (its training never finished an epoch)",
                       dir.string()));
  parent.user_ids = read_ids(parent.dir / "user_ids.json");
  parent.item_ids = read_ids(parent.dir / "item_ids.json");
  // Several ranks: each reads only the parent rows its own rows come from.
  const bool some_rows = ranks > 1 && dataset != nullptr;
  RowSelection selection;
  if (some_rows) {
    selection.users = needed_rows(parent.user_ids, dataset->user_ids, rank, ranks);
    selection.items = needed_rows(parent.item_ids, dataset->item_ids, rank, ranks);
  }
  ModelParams params = some_rows ? load_model_rows(parent.dir / "model.bin", selection)
                                 : load_model(parent.dir / "model.bin");
  TB_CHECK(
      params.config.num_users == parent.user_ids.size() &&
          params.config.num_items == parent.item_ids.size(),
      fmt::format(
          "--warm-start {}: model.bin has {} users and {} items but the id files list {} and {}",
          dir.string(), params.config.num_users, params.config.num_items, parent.user_ids.size(),
          parent.item_ids.size()));
  parent.optimizer = parent.config.value("optimizer", std::string("adam"));
  if (fs::exists(parent.dir / "vocabularies.json")) {
    try {
      parent.vocabularies = json::parse(read_file(parent.dir / "vocabularies.json"));
    } catch (const json::exception& e) {
      throw Error(fmt::format("{}: not a vocabulary file: {}",
                              (parent.dir / "vocabularies.json").string(), e.what()));
    }
  }
  parent.state = TrainState::fresh(params, OptimizerParams{});
  const fs::path checkpoint_path = parent.dir / "checkpoint.bin";
  if (fs::exists(checkpoint_path)) {
    std::string extra;
    TrainState checkpoint = some_rows ? load_checkpoint_rows(checkpoint_path, &extra, selection)
                                      : load_checkpoint(checkpoint_path, &extra);
    if (!some_rows) checkpoint.check_fits(params.config);  // a checkpoint of another shape is a damaged directory
    TB_CHECK(!some_rows || config_to_json(checkpoint.params.config) == config_to_json(params.config),
             fmt::format("--warm-start {}: checkpoint.bin and model.bin are of different models", dir.string()));
    parent.state.state0 = std::move(checkpoint.state0);
    parent.state.state1 = std::move(checkpoint.state1);
    parent.state.step = checkpoint.step;
    parent.optimizer_state = true;
  }
  parent.some_rows = some_rows;
  parent.user_rows = std::move(selection.users);
  parent.item_rows = std::move(selection.items);
  return parent;
}

void check_same_shape(const ParentModel& parent, const ModelConfig& config) {
  const ModelConfig& was = parent.state.params.config;
  std::vector<std::string> differences;
  const auto differ = [&](const char* what, const std::string& before, const std::string& now) {
    if (before != now)
      differences.push_back(fmt::format("{} {} (this run: {})", what, before, now));
  };
  differ("model", to_string(was.kind), to_string(config.kind));
  differ("factors", std::to_string(was.factors), std::to_string(config.factors));
  differ("layers", fmt::format("{}", fmt::join(was.layers, ",")),
         fmt::format("{}", fmt::join(config.layers, ",")));
  // With the parent's vocabularies a categorical field may have gained values (warm_start_state
  // matches its rows by value); without them its rows match by position, so the counts must agree.
  const bool user_counts = side_vocabularies(parent, "user") == nullptr;
  const bool item_counts = side_vocabularies(parent, "item") == nullptr;
  differ("user metadata", spec_text(was.user_features, user_counts),
         spec_text(config.user_features, user_counts));
  differ("item metadata", spec_text(was.item_features, item_counts),
         spec_text(config.item_features, item_counts));
  differ("context", spec_text(was.context), spec_text(config.context));
  if (differences.empty()) return;
  throw Error(fmt::format(
      "--warm-start {}: the model has another shape: {}; a warm start keeps the model, "
      "factors, layers, metadata tables and context (train from scratch to change them)",
      parent.dir.string(), fmt::join(differences, "; ")));
}

TrainState warm_start_state(const ParentModel& parent, TrainState fresh,
                            const datasets::Dataset& dataset, const std::string& optimizer,
                            uint32_t* kept_users, uint32_t* kept_items) {
  check_same_shape(parent, fresh.params.config);
  const std::vector<int64_t> users = parent_rows(parent.user_ids, dataset.user_ids, kept_users);
  const std::vector<int64_t> items = parent_rows(parent.item_ids, dataset.item_ids, kept_items);
  const bool carry_state = parent.optimizer_state && parent.optimizer == optimizer;
  const ModelConfig& was = parent.state.params.config;
  const ModelConfig& now = fresh.params.config;
  const std::vector<int64_t> user_features =
      feature_rows(now.user_features, was.user_features, dataset.users,
                   side_vocabularies(parent, "user"));
  const std::vector<int64_t> item_features =
      feature_rows(now.item_features, was.item_features, dataset.items,
                   side_vocabularies(parent, "item"));
  const ParamLayout layout(fresh.params.config);
  const auto from = parent.state.params.tensors();
  const auto to = fresh.params.tensors();
  for (size_t t = 0; t < layout.size(); ++t) {
    const TensorRole role = layout[t].role;
    if (is_id_table(role) || role == TensorRole::kUserFeatures ||
        role == TensorRole::kItemFeatures) {
      const std::vector<int64_t>& source = role == TensorRole::kUserFeatures   ? user_features
                                           : role == TensorRole::kItemFeatures ? item_features
                                           : layout[t].item_id_table()         ? items
                                                                               : users;
      // Id tables may be a rank's share (fresh sharded, the parent's rows it needs); metadata
      // tables are whole on every rank.
      const bool id_table = is_id_table(role);
      const std::vector<uint64_t>* held = !id_table || !parent.some_rows ? nullptr
                                          : layout[t].item_id_table()   ? &parent.item_rows
                                                                        : &parent.user_rows;
      const uint64_t rank = id_table ? fresh.params.shard_rank : 0, ranks = id_table ? fresh.params.shard_ranks : 1;
      copy_rows(*from[t], held, *to[t], rank, ranks, source);
      if (carry_state) {
        copy_rows(parent.state.state0[t], held, fresh.state0[t], rank, ranks, source);
        copy_rows(parent.state.state1[t], held, fresh.state1[t], rank, ranks, source);
      }
      continue;
    }
    to[t]->values = from[t]->values;  // same shape: check_same_shape
    if (carry_state) {
      fresh.state0[t].values = parent.state.state0[t].values;
      fresh.state1[t].values = parent.state.state1[t].values;
    }
  }
  if (carry_state) fresh.step = parent.state.step;
  return fresh;
}

json dataset_record(const datasets::Dataset& dataset) {
  int64_t last = std::numeric_limits<int64_t>::min();
  for (const int64_t t : dataset.interactions.timestamp) last = std::max(last, t);
  json record{{"path", fs::absolute(dataset.dir).lexically_normal().string()},
              {"users", dataset.num_users()},
              {"items", dataset.num_items()},
              {"interactions", dataset.interactions.size()}};
  if (dataset.interactions.size() > 0) record["last_timestamp"] = last;
  return record;
}

json parent_record(const ParentModel& parent) {
  json record{{"path", parent.dir.string()}, {"optimizer_state", parent.optimizer_state}};
  const json& sums = parent.config.value("checksums", json::object());
  if (sums.contains("config.json")) record["config_crc32"] = sums["config.json"];
  if (parent.config.contains("dataset"))
    record["dataset"] = parent.config["dataset"];
  else
    record["dataset"] = json{{"path", parent.config.value("data", std::string())}};
  return record;
}

ChangedRows changed_rows(const ParentModel& parent, const datasets::Dataset& dataset) {
  ChangedRows changed;
  changed.users.assign(dataset.num_users(), 0);
  changed.items.assign(dataset.num_items(), 0);
  const std::vector<int64_t> users = parent_rows(parent.user_ids, dataset.user_ids, nullptr);
  const std::vector<int64_t> items = parent_rows(parent.item_ids, dataset.item_ids, nullptr);
  for (size_t u = 0; u < users.size(); ++u) changed.users[u] = users[u] < 0;
  for (size_t i = 0; i < items.size(); ++i) changed.items[i] = items[i] < 0;
  changed.new_items = changed.items;
  const json dataset_of_parent = parent.config.value("dataset", json::object());
  changed.dataset_end_known = dataset_of_parent.contains("last_timestamp");
  if (changed.dataset_end_known) {
    const int64_t end = dataset_of_parent["last_timestamp"].get<int64_t>();
    const datasets::Interactions& rows = dataset.interactions;
    for (size_t r = 0; r < rows.size(); ++r) {
      if (rows.timestamp[r] <= end) continue;
      changed.users[rows.user[r]] = 1;
      changed.items[rows.item[r]] = 1;
    }
  }
  changed.changed_users =
      static_cast<uint32_t>(std::count(changed.users.begin(), changed.users.end(), 1));
  changed.changed_items =
      static_cast<uint32_t>(std::count(changed.items.begin(), changed.items.end(), 1));
  return changed;
}

TrainingSet changed_positives(const TrainingSet& train, const ChangedRows& changed) {
  TB_CHECK(train.context.empty(),
           "--update: a model with --context cannot train in update mode yet");
  TrainingSet subset;
  subset.num_users = train.num_users;
  subset.num_items = train.num_items;
  for (size_t p = 0; p < train.size(); ++p) {
    if (!changed.users[train.user[p]] && !changed.new_items[train.item[p]]) continue;
    subset.user.push_back(train.user[p]);
    subset.item.push_back(train.item[p]);
    subset.weight.push_back(train.weight[p]);
  }
  TB_CHECK(
      !subset.user.empty(),
      fmt::format(
          "--update: no training positive of a new or changed user or item ({} users and {} items "
          "changed since the parent model); nothing to train",
          changed.changed_users, changed.changed_items));
  subset.impression_offsets = train.impression_offsets;
  subset.impression_items = train.impression_items;
  subset.user_features = train.user_features;
  subset.item_features = train.item_features;
  subset.finalize();
  return subset;
}

TrainState start_warm(const ParentModel& parent, TrainState fresh, const datasets::Dataset& dataset,
                      const std::string& optimizer, std::ostream& log) {
  uint32_t kept_users = 0, kept_items = 0;
  TrainState state =
      warm_start_state(parent, std::move(fresh), dataset, optimizer, &kept_users, &kept_items);
  const bool carried = parent.optimizer_state && parent.optimizer == optimizer;
  log << fmt::format(
      "warm start from {}: {} of {} users and {} of {} items keep its rows, {} users and {} items "
      "are new; optimizer state {}\n",
      parent.dir.string(), kept_users, dataset.num_users(), kept_items, dataset.num_items(),
      dataset.num_users() - kept_users, dataset.num_items() - kept_items,
      carried                  ? fmt::format("from its checkpoint.bin (step {})", state.step)
      : parent.optimizer_state ? fmt::format("fresh (it trained with {})", parent.optimizer)
                               : "fresh (it has no checkpoint.bin)");
  return state;
}

TrainingSet start_update(const ParentModel& parent, const datasets::Dataset& dataset,
                         const TrainingSet& train, TrainOptions& options, std::ostream& log) {
  ChangedRows changed = changed_rows(parent, dataset);
  TrainingSet subset = changed_positives(train, changed);
  log << fmt::format(
      "update: {} users and {} items are new or changed{}; they train on {} of {} positives, every "
      "other row and the dense layers stay frozen\n",
      changed.changed_users, changed.changed_items,
      changed.dataset_end_known ? ""
                                : " (new ids only: the parent does not record its dataset's end)",
      subset.size(), train.size());
  options.trainable_users = std::move(changed.users);
  options.trainable_items = std::move(changed.items);
  options.freeze_dense = true;
  return subset;
}

}  // namespace tastebud::host
