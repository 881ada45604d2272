#include "host/model_dir.h"

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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

void write_seen(const SeenItems& seen, const std::filesystem::path& path) {
  std::string bytes = "TBSEEN01";
  const uint64_t users = seen.offsets.empty() ? 0 : seen.offsets.size() - 1;
  bytes.append(reinterpret_cast<const char*>(&users), sizeof(users));
  bytes.append(reinterpret_cast<const char*>(seen.offsets.data()), seen.offsets.size() * sizeof(uint64_t));
  bytes.append(reinterpret_cast<const char*>(seen.items.data()), seen.items.size() * sizeof(uint32_t));
  write_file_atomically(path, bytes);
}

SeenItems read_seen(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  auto bad = [&] { return Error(fmt::format("{}: corrupt seen-items file", path.string())); };
  if (bytes.size() < 16 || bytes.compare(0, 8, "TBSEEN01") != 0) throw bad();
  uint64_t users;
  std::memcpy(&users, bytes.data() + 8, 8);
  if (bytes.size() < 16 + (users + 1) * 8) throw bad();
  SeenItems seen;
  seen.offsets.resize(users + 1);
  std::memcpy(seen.offsets.data(), bytes.data() + 16, (users + 1) * 8);
  const size_t at = 16 + (users + 1) * 8;
  if (bytes.size() != at + seen.offsets.back() * 4) throw bad();
  seen.items.resize(seen.offsets.back());
  std::memcpy(seen.items.data(), bytes.data() + at, seen.items.size() * 4);
  return seen;
}

std::unordered_map<std::string, uint32_t> index_ids(const std::vector<std::string>& ids) {
  std::unordered_map<std::string, uint32_t> index;
  index.reserve(ids.size());
  for (uint32_t i = 0; i < ids.size(); ++i) index.emplace(ids[i], i);
  return index;
}

}  // namespace tastebud::host
