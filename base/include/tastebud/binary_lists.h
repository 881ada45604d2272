// Length-prefixed arrays in a binary file: a uint64 count, then the values as they lie in memory.
// What recipe.bin and sequence_checkpoint.bin are made of (their checksum trailer: checksum.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud {

template <typename T>
void append_list(std::string& bytes, std::span<const T> values) {
  const uint64_t n = values.size();
  bytes.append(reinterpret_cast<const char*>(&n), sizeof(n));
  bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

template <typename T>
void append_list(std::string& bytes, const std::vector<T>& values) {
  append_list(bytes, std::span<const T>(values));
}

// The list at byte `at` of `bytes` (`at` moves past it); a count the bytes cannot hold is an
// Error "corrupt: PATH: ...".
template <typename T>
std::vector<T> take_list(std::string_view bytes, size_t& at, const std::filesystem::path& path) {
  auto bad = [&] { return Error(fmt::format("corrupt: {}: a count larger than the file at byte {}", path.string(), at)); };
  uint64_t n;
  if (at + 8 > bytes.size()) throw bad();
  std::memcpy(&n, bytes.data() + at, 8);
  at += 8;
  if (n > (bytes.size() - at) / sizeof(T)) throw bad();
  std::vector<T> values(n);
  if (n > 0) std::memcpy(values.data(), bytes.data() + at, n * sizeof(T));
  at += n * sizeof(T);
  return values;
}

}  // namespace tastebud
