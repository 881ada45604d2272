// A CRC-32 (zlib's) at the end of each binary file of a model directory, so that a flipped bit
// is a clear "corrupt" error on load instead of a crash or silently wrong answers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace tastebud {

uint32_t crc32_of(std::string_view bytes);
// The CRC-32 of bytes that follow those whose CRC-32 is crc (0 before the first): a file written or
// read in pieces.
uint32_t crc32_update(uint32_t crc, std::string_view bytes);
// The trailer append_checksum adds, for a payload whose CRC-32 is crc.
std::string checksum_trailer(uint32_t crc);

// Appends the trailer "TBCRC32:" + the CRC-32 of everything before it (little endian).
void append_checksum(std::string& bytes);
inline constexpr size_t kChecksumTrailerBytes = 12;

// The bytes without their trailer; throws Error "corrupt: FILE: ..." when the trailer is missing or
// does not match.
std::string_view checked_payload(std::string_view bytes, const std::filesystem::path& file);

}  // namespace tastebud
