#include "tastebud/checksum.h"

#include <cstring>

#include <fmt/format.h>
#include <zlib.h>

#include "tastebud/error.h"

namespace tastebud {

namespace {
constexpr char kTag[8] = {'T', 'B', 'C', 'R', 'C', '3', '2', ':'};
}

uint32_t crc32_of(std::string_view bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* data = reinterpret_cast<const Bytef*>(bytes.data());
  size_t left = bytes.size();
  while (left > 0) {  // zlib takes a uInt length
    const uInt n = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
    crc = ::crc32(crc, data, n);
    data += n;
    left -= n;
  }
  return static_cast<uint32_t>(crc);
}

void append_checksum(std::string& bytes) {
  const uint32_t crc = crc32_of(bytes);
  bytes.append(kTag, sizeof(kTag));
  bytes.append(reinterpret_cast<const char*>(&crc), sizeof(crc));
}

std::string_view checked_payload(std::string_view bytes, const std::filesystem::path& file) {
  if (bytes.size() < kChecksumTrailerBytes ||
      std::memcmp(bytes.data() + bytes.size() - kChecksumTrailerBytes, kTag, sizeof(kTag)) != 0)
    throw Error(fmt::format("corrupt: {}: the checksum trailer is missing (a truncated or damaged file)", file.string()));
  const std::string_view payload = bytes.substr(0, bytes.size() - kChecksumTrailerBytes);
  uint32_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - sizeof(stored), sizeof(stored));
  const uint32_t computed = crc32_of(payload);
  if (stored != computed)
    throw Error(fmt::format("corrupt: {}: CRC-32 {:08x} does not match the stored {:08x}; the file was damaged "
                            "after it was written", file.string(), computed, stored));
  return payload;
}

}  // namespace tastebud
