#include "host/scrub_model.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdio.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "host/model_dir.h"
#include "host/recipes.h"
#include "tastebud/atomic_file.h"
#include "tastebud/directory_lock.h"
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
    if (name == "user_ids.json" || name == "seen.bin" || name == "model.bin" ||
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
  if (fs::exists(dir / "seen.bin"))
    write_seen(keep_seen(read_seen(dir / "seen.bin", items), keep), to / "seen.bin");
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

}  // namespace

ScrubReport scrub_users_from_model(const fs::path& model_dir,
                                   const std::vector<std::string>& user_ids) {
  TB_CHECK(fs::is_directory(model_dir),
           fmt::format("--model {}: not a model directory", model_dir.string()));
  ScrubReport report;
  report.dir = fs::canonical(model_dir);
  const fs::path& dir = report.dir;
  const DirectoryLock lock(dir, "this deletion");
  remove_stale_temporaries(dir);
  json config;
  try {
    config = json::parse(read_file(dir / "config.json"));
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not a tastebud model config: {}", (dir / "config.json").string(),
                            e.what()));
  }
  check_file_checksums(config, dir);
  const std::vector<std::string> ids = read_ids(dir / "user_ids.json");
  const std::unordered_set<std::string> gone(user_ids.begin(), user_ids.end());
  std::vector<uint8_t> keep(ids.size(), 1);
  for (size_t u = 0; u < ids.size(); ++u) {
    keep[u] = !gone.contains(ids[u]);
    report.users_left += keep[u];
  }
  report.users_removed = static_cast<uint32_t>(ids.size()) - report.users_left;
  if (report.users_removed == 0) return report;
  const fs::path temp = temporary_name(dir);
  fs::create_directory(temp);
  try {
    write_scrubbed(dir, temp, config, keep, report.users_left);
    fsync_directory(temp);
    if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) != 0) {
      throw Error(fmt::format("{}: cannot swap in the rewritten model: {}", dir.string(),
                              std::strerror(errno)));
    }
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(temp, ignored);
    throw;
  }
  std::error_code ignored;
  fs::remove_all(temp, ignored);  // now the old model
  fsync_directory(dir.parent_path());
  return report;
}

}  // namespace tastebud::host
