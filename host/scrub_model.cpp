#include "host/scrub_model.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "host/model_dir.h"
#include "host/recipes.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/atomic_file.h"
#include "tastebud/directory_lock.h"
#include "tastebud/directory_swap.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Rows [0, keep.size()) of a [rows x cols] tensor, the kept ones only.
void keep_rows(Tensor& t, const std::vector<uint8_t>& keep) {
  const uint64_t width = t.cols();
  uint64_t out = 0;
  for (uint64_t r = 0; r < keep.size(); ++r) {
    if (!keep[r]) continue;
    if (out != r) std::copy_n(t.values.begin() + r * width, width, t.values.begin() + out * width);
    ++out;
  }
  t.values.resize(out * width);
  if (!t.shape.empty()) t.shape[0] = out;
}

// The user id tables (and their optimizer state) without the deleted users' rows.
void keep_users(TrainState& state, const std::vector<uint8_t>& keep, uint32_t left,
                bool with_state) {
  const ParamLayout layout(state.params.config);
  const auto tensors = state.params.tensors();
  for (size_t t = 0; t < layout.size(); ++t) {
    if (layout[t].role != TensorRole::kUserGmf && layout[t].role != TensorRole::kUserMlp) continue;
    keep_rows(*tensors[t], keep);
    if (with_state) {
      keep_rows(state.state0[t], keep);
      keep_rows(state.state1[t], keep);
    }
  }
  state.params.config.num_users = left;
}

SeenItems keep_seen(const SeenItems& seen, const std::vector<uint8_t>& keep) {
  SeenItems out;
  out.offsets.push_back(0);
  for (size_t u = 0; u < keep.size(); ++u) {
    if (!keep[u]) continue;
    out.items.insert(out.items.end(), seen.items.begin() + seen.offsets[u],
                     seen.items.begin() + seen.offsets[u + 1]);
    out.offsets.push_back(out.items.size());
  }
  return out;
}

// A recipe's per-user lists (the transitions recipe's latest items) without the deleted users'.
ItemNeighbors keep_user_lists(const ItemNeighbors& lists, const std::vector<uint8_t>& keep) {
  if (lists.offsets.empty()) return lists;
  ItemNeighbors out;
  out.offsets.push_back(0);
  for (size_t u = 0; u < keep.size(); ++u) {
    if (!keep[u]) continue;
    for (uint64_t k = lists.offsets[u]; k < lists.offsets[u + 1]; ++k) {
      out.items.push_back(lists.items[k]);
      out.scores.push_back(lists.scores[k]);
    }
    out.offsets.push_back(out.items.size());
  }
  return out;
}

void write_scrubbed(const fs::path& dir, const fs::path& to, const json& config,
                    const std::vector<uint8_t>& keep, uint32_t left) {
  const std::vector<std::string> ids = read_ids(dir / "user_ids.json");
  const uint32_t items = static_cast<uint32_t>(read_ids(dir / "item_ids.json").size());
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "user_ids.json" || name == "seen.bin" || name == "excluded.bin" || name == "model.bin" ||
        name == "checkpoint.bin" || name == "config.json" || name == "recipe.bin") {
      continue;
    }
    fs::copy(entry.path(), to / name, fs::copy_options::recursive);
  }
  json kept_ids = json::array();
  for (size_t u = 0; u < ids.size(); ++u) {
    if (keep[u]) kept_ids.push_back(ids[u]);
  }
  write_file_atomically(to / "user_ids.json", kept_ids.dump());
  for (const char* lists : {"seen.bin", "excluded.bin"}) {
    if (fs::exists(dir / lists)) write_seen(keep_seen(read_seen(dir / lists, items), keep), to / lists);
  }
  if (fs::exists(dir / "recipe.bin")) {
    RecipeData recipe = read_recipe(dir / "recipe.bin", items);
    TB_CHECK(recipe.latest.offsets.empty() || recipe.latest.offsets.size() == keep.size() + 1,
             fmt::format("corrupt: {}: latest items of {} users but user_ids.json lists {}", (dir / "recipe.bin").string(),
                         recipe.latest.offsets.size() - 1, keep.size()));
    recipe.latest = keep_user_lists(recipe.latest, keep);
    write_recipe(recipe, to / "recipe.bin");
  }
  json new_config = config;
  if (fs::exists(dir / "model.bin")) {
    TrainState state;
    state.params = load_model(dir / "model.bin");
    keep_users(state, keep, left, false);
    save_model(state.params, to / "model.bin");
    new_config["model_config"] = json::parse(config_to_json(state.params.config));
  }
  if (fs::exists(dir / "checkpoint.bin")) {
    std::string extra;
    TrainState state = load_checkpoint(dir / "checkpoint.bin", &extra);
    keep_users(state, keep, left, true);
    save_checkpoint(state, extra, to / "checkpoint.bin");
  }
  new_config.erase("checksums");
  new_config["checksums"] = file_checksums(to);
  write_file_atomically(to / "config.json", config_file_text(new_config));
}

json checked_config(const fs::path& dir) {
  TB_CHECK(fs::is_regular_file(dir / "config.json"),
           fmt::format("--model {}: not a model directory (no config.json)", dir.string()));
  json config;
  try {
    config = json::parse(read_file(dir / "config.json"));
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not a tastebud model config: {}", (dir / "config.json").string(),
                            e.what()));
  }
  check_file_checksums(config, dir);
  return config;
}

// The directory rebuilt without the users beside `dir`, then swapped in (directory_swap.h).
void swap_in_scrubbed(const fs::path& dir, const json& config, const std::vector<uint8_t>& keep,
                      uint32_t left) {
  DirectoryReplacement replacement(dir);  // first cleans what a killed swap left beside `dir`
  write_scrubbed(dir, replacement.path(), config, keep, left);
  replacement.commit();
}

// scrub_users_from_model with the directory's lock already held.
ScrubReport scrub_locked(const fs::path& dir, const std::vector<std::string>& user_ids) {
  ScrubReport report;
  report.dir = dir;
  remove_stale_temporaries(dir);
  remove_stale_temporaries(dir.parent_path());  // also when nothing is removed and nothing swapped
  const json config = checked_config(dir);
  const std::vector<std::string> ids = read_ids(dir / "user_ids.json");
  const std::unordered_set<std::string> gone(user_ids.begin(), user_ids.end());
  std::vector<uint8_t> keep(ids.size(), 1);
  for (size_t u = 0; u < ids.size(); ++u) {
    keep[u] = !gone.contains(ids[u]);
    report.users_left += keep[u];
  }
  report.users_removed = static_cast<uint32_t>(ids.size()) - report.users_left;
  if (report.users_removed > 0) swap_in_scrubbed(dir, config, keep, report.users_left);
  return report;
}

bool is_version_name(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), ::isdigit);
}

// The retrain directory `path` belongs to (itself, its `current` link, one of its versions), or
// an empty path for a model directory of its own.
fs::path retrain_dir_of(const fs::path& path) {
  if (fs::is_directory(path / "versions")) return path;
  const fs::path parent = fs::absolute(path).lexically_normal().parent_path();
  if (path.filename() == "current" && fs::is_symlink(path) && fs::is_directory(parent / "versions"))
    return parent;
  const fs::path real = fs::canonical(path);
  const fs::path above = real.parent_path().parent_path();
  if (real.parent_path().filename() == "versions" && is_version_name(real.filename().string()) &&
      (fs::is_symlink(above / "current") || fs::exists(above / "retrain.jsonl")))
    return above;
  return {};
}

}  // namespace

ScrubReport scrub_users_from_model(const fs::path& model_dir,
                                   const std::vector<std::string>& user_ids) {
  TB_CHECK(fs::is_directory(model_dir),
           fmt::format("--model {}: not a model directory", model_dir.string()));
  const fs::path dir = fs::canonical(model_dir);
  const DirectoryLock lock(dir, "this deletion");
  return scrub_locked(dir, user_ids);
}

ModelsToScrub::ModelsToScrub(const fs::path& model) {
  TB_CHECK(fs::is_directory(model),
           fmt::format("--model {}: not a model directory", model.string()));
  retrain_dir_ = retrain_dir_of(model);
  if (retrain_dir_.empty()) {
    models_.push_back(fs::canonical(model));
    lock_ = std::make_unique<DirectoryLock>(models_[0], "this deletion");
  } else {
    retrain_dir_ = fs::canonical(retrain_dir_);
    lock_ = std::make_unique<DirectoryLock>(retrain_dir_, "this deletion");
    for (const auto& entry : fs::directory_iterator(retrain_dir_ / "versions")) {
      if (entry.is_directory() && is_version_name(entry.path().filename().string()))
        models_.push_back(fs::canonical(entry.path()));
    }
    std::sort(models_.begin(), models_.end());
  }
  for (const fs::path& dir : models_) checked_config(dir);
}

std::vector<ScrubReport> ModelsToScrub::scrub(const std::vector<std::string>& user_ids) const {
  std::vector<ScrubReport> reports;
  if (!retrain_dir_.empty()) {
    // A killed retrain's candidate holds the users too.
    remove_stale_temporaries(retrain_dir_);
    remove_stale_temporaries(retrain_dir_ / "versions");
  }
  for (const fs::path& dir : models_) {
    if (retrain_dir_.empty()) {
      reports.push_back(scrub_locked(dir, user_ids));
    } else {
      reports.push_back(scrub_users_from_model(dir, user_ids));
    }
  }
  return reports;
}

ScrubReport scrub_users_missing_from(const fs::path& model_dir, const datasets::Dataset& dataset) {
  std::unordered_set<std::string_view> held;
  for (size_t u = 0; u < dataset.user_ids.size(); ++u) held.insert(dataset.user_ids[u]);
  std::vector<std::string> gone;
  for (const std::string& id : read_ids(model_dir / "user_ids.json")) {
    if (!held.contains(id)) gone.push_back(id);
  }
  if (gone.empty()) {
    ScrubReport report;
    report.dir = model_dir;
    return report;
  }
  return scrub_users_from_model(model_dir, gone);
}

}  // namespace tastebud::host
