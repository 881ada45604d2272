#include "host/model_dir.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/split.h"
#include "tastebud/checksum.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::host {

void write_ids(const datasets::StringTable& ids, const std::filesystem::path& path) {
  nlohmann::json array = nlohmann::json::array();
  for (size_t i = 0; i < ids.size(); ++i) array.push_back(std::string(ids[i]));
  write_file_atomically(path, array.dump());
}

std::vector<std::string> read_ids(const std::filesystem::path& path) {
  try {
    return nlohmann::json::parse(read_file(path)).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not a JSON array of ids: {}", path.string(), e.what()));
  }
}

// "TBSEEN02" | u64 users | u64 offsets[users + 1] | u32 items[offsets[users]] | checksum trailer.
// "TBSEEN01" files are the same without the trailer and still load.
void write_seen(const SeenItems& seen, const std::filesystem::path& path) {
  std::string bytes = "TBSEEN02";
  const uint64_t users = seen.offsets.empty() ? 0 : seen.offsets.size() - 1;
  bytes.append(reinterpret_cast<const char*>(&users), sizeof(users));
  bytes.append(reinterpret_cast<const char*>(seen.offsets.data()), seen.offsets.size() * sizeof(uint64_t));
  bytes.append(reinterpret_cast<const char*>(seen.items.data()), seen.items.size() * sizeof(uint32_t));
  append_checksum(bytes);
  write_file_atomically(path, bytes);
}

void check_seen(const SeenItems& seen, uint32_t num_items, const std::filesystem::path& path) {
  auto bad = [&](const std::string& what) { return Error(fmt::format("corrupt: {}: {}", path.string(), what)); };
  if (seen.offsets.empty()) return;
  if (seen.offsets.front() != 0) throw bad("the first user's offset is not 0");
  for (size_t u = 0; u + 1 < seen.offsets.size(); ++u) {
    if (seen.offsets[u + 1] < seen.offsets[u] || seen.offsets[u + 1] > seen.items.size())
      throw bad(fmt::format("user {}'s offsets ({}, {}) do not increase within the {} items", u, seen.offsets[u],
                            seen.offsets[u + 1], seen.items.size()));
    for (uint64_t k = seen.offsets[u]; k < seen.offsets[u + 1]; ++k) {
      if (seen.items[k] >= num_items)
        throw bad(fmt::format("user {} has seen item {}, but the model has {} items", u, seen.items[k], num_items));
      if (k > seen.offsets[u] && seen.items[k] <= seen.items[k - 1])
        throw bad(fmt::format("user {}'s items are not sorted", u));
    }
  }
  if (seen.offsets.back() != seen.items.size()) throw bad("the last offset is not the item count");
}

SeenItems read_seen(const std::filesystem::path& path, uint32_t num_items) {
  const std::string file = read_file(path);
  auto bad = [&](const std::string& what) { return Error(fmt::format("corrupt: {}: {}", path.string(), what)); };
  if (file.size() < 16) throw bad("too short for a seen-items file");
  std::string_view bytes = file;
  if (file.compare(0, 8, "TBSEEN02") == 0) bytes = checked_payload(file, path);
  else if (file.compare(0, 8, "TBSEEN01") != 0) throw bad("not a seen-items file");
  if (bytes.size() < 16) throw bad("too short for a seen-items file");
  uint64_t users;
  std::memcpy(&users, bytes.data() + 8, 8);
  // Counts are bounded by the file before anything is allocated (a damaged count once wrapped).
  if (users >= (bytes.size() - 16) / 8) throw bad(fmt::format("{} users do not fit in {} bytes", users, bytes.size()));
  SeenItems seen;
  seen.offsets.resize(users + 1);
  std::memcpy(seen.offsets.data(), bytes.data() + 16, (users + 1) * 8);
  const size_t at = 16 + (users + 1) * 8;
  const uint64_t items = seen.offsets.back();
  if (items > (bytes.size() - at) / 4 || bytes.size() != at + items * 4)
    throw bad(fmt::format("{} items do not match the {} bytes after the offsets", items, bytes.size() - at));
  seen.items.resize(items);
  if (items > 0) std::memcpy(seen.items.data(), bytes.data() + at, items * 4);
  check_seen(seen, num_items, path);
  return seen;
}

namespace {
constexpr const char* kCheckedFiles[] = {"user_ids.json", "item_ids.json", "vocabularies.json"};
}

void write_excluded(const datasets::Dataset& dataset, const std::vector<std::string>& event_types, uint32_t latest,
                    const std::filesystem::path& path) {
  std::vector<uint8_t> wanted(dataset.event_types.size(), 0);
  for (const std::string& type : event_types)
    if (type != "none") wanted[find_event_type(dataset, type)] = 1;
  const datasets::Interactions& rows = dataset.interactions;
  SeenItems out;
  out.offsets.push_back(0);
  std::vector<uint32_t> items, counted(dataset.event_types.size());
  for (uint32_t u = 0; u < dataset.num_users(); ++u) {
    items.clear();
    std::fill(counted.begin(), counted.end(), 0u);
    // Newest first (a user's rows are in time order), at most `latest` of each type.
    for (uint64_t r = rows.user_offsets[u + 1]; r > rows.user_offsets[u]; --r) {
      const uint32_t type = rows.event_type[r - 1];
      if (wanted[type] && (latest == 0 || counted[type]++ < latest)) items.push_back(rows.item[r - 1]);
    }
    std::sort(items.begin(), items.end());
    items.erase(std::unique(items.begin(), items.end()), items.end());
    out.items.insert(out.items.end(), items.begin(), items.end());
    out.offsets.push_back(out.items.size());
  }
  write_seen(out, path);
}

nlohmann::json file_checksums(const std::filesystem::path& dir) {
  nlohmann::json sums = nlohmann::json::object();
  for (const char* name : kCheckedFiles) {
    if (std::filesystem::exists(dir / name)) sums[name] = crc32_of(read_file(dir / name));
  }
  return sums;
}

std::string config_file_text(nlohmann::json config) {
  if (!config.contains("checksums")) config["checksums"] = nlohmann::json::object();
  config["checksums"].erase("config.json");
  const uint32_t own = crc32_of(config.dump());
  config["checksums"]["config.json"] = own;
  return config.dump(2) + "\n";
}

void check_file_checksums(const nlohmann::json& config, const std::filesystem::path& dir) {
  const auto sums = config.find("checksums");
  if (sums == config.end() || !sums->is_object()) return;  // a model of before
  if (const auto own = sums->find("config.json"); own != sums->end() && own->is_number_unsigned()) {
    nlohmann::json rest = config;
    rest["checksums"].erase("config.json");
    const uint32_t computed = crc32_of(rest.dump());
    if (own->get<uint64_t>() != computed) {
      throw Error(fmt::format("corrupt: {}: its values do not match the CRC-32 {:08x} it records",
                              (dir / "config.json").string(), own->get<uint64_t>()));
    }
  }
  for (const char* name : kCheckedFiles) {
    const auto stored = sums->find(name);
    if (stored == sums->end() || !stored->is_number_unsigned()) continue;
    const uint32_t computed = crc32_of(read_file(dir / name));
    if (stored->get<uint64_t>() != computed)
      throw Error(fmt::format("corrupt: {}: CRC-32 {:08x} does not match the {:08x} config.json records", (dir / name).string(),
                              computed, stored->get<uint64_t>()));
  }
}

std::unordered_map<std::string, uint32_t> index_ids(const std::vector<std::string>& ids) {
  std::unordered_map<std::string, uint32_t> index;
  index.reserve(ids.size());
  for (uint32_t i = 0; i < ids.size(); ++i) index.emplace(ids[i], i);
  return index;
}

namespace {

// What a model directory holds for its own use (training, resume, batch jobs, reports).
constexpr const char* kModelFiles[] = {"model.bin",         "checkpoint.bin", "config.json",
                                       "user_ids.json",     "item_ids.json",  "seen.bin",
                                       "vocabularies.json", "metrics.jsonl",  "baseline.json",
                                       "recipe.bin",        "excluded.bin"};

bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
  std::error_code ec;
  return std::filesystem::equivalent(a, b, ec) && !ec;
}

}  // namespace

void check_output_apart(const std::filesystem::path& output, const std::filesystem::path& model_dir,
                        const std::filesystem::path& input, std::string_view flag) {
  if (!input.empty() && same_file(output, input))
    throw Error(fmt::format("{} {}: is the input; write the output elsewhere", flag, output.string()));
  for (const char* name : kModelFiles) {
    if (same_file(output, model_dir / name))
      throw Error(fmt::format("{} {}: is the model's {}; write the output elsewhere", flag,
                              output.string(), name));
  }
}

}  // namespace tastebud::host
