#include "tastebud/checksum.h"

#include <cstring>

#include <fmt/format.h>
#include <zlib.h>

#include "tastebud/error.h"

namespace tastebud {

namespace {
constexpr char kTag[8] = {'T', 'B', 'C', 'R', 'C', '3', '2', ':'};
}

uint32_t crc32_of(std::string_view bytes) { return crc32_update(0, bytes); }

uint32_t crc32_update(uint32_t previous, std::string_view bytes) {
  uLong crc = previous;
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

std::string checksum_trailer(uint32_t crc) {
  std::string trailer(kTag, sizeof(kTag));
  trailer.append(reinterpret_cast<const char*>(&crc), sizeof(crc));
  return trailer;
}

void append_checksum(std::string& bytes) { bytes += checksum_trailer(crc32_of(bytes)); }

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
