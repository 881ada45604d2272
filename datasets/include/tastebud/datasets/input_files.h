// Where an import's CSV comes from: one file, the part files of a directory or a glob (the
// managed service exports part files), each plain or gzip-compressed (`.gz`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

namespace tastebud::datasets {

// The files an --interactions / --users / --items argument names, in the order they are read:
// a file itself; a directory's files whose names end in .csv or .csv.gz (hidden ones skipped),
// sorted by name; or the files a glob pattern (`parts/part-*.csv.gz`) matches, sorted by name.
// Throws tastebud::Error naming the argument when nothing matches.
std::vector<std::filesystem::path> expand_input(const std::filesystem::path& argument);

// True for names ending in .gz: read through zlib.
bool is_gzip_path(const std::filesystem::path& path);

// A file's bytes, decompressed where its name says so.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Opens path: gzip for .gz names (refusing a file without a gzip header), plain otherwise.
  // Throws tastebud::Error naming the file.
  static std::unique_ptr<ByteSource> open(const std::filesystem::path& path);

  // Up to capacity bytes into buffer; 0 at the end of the data. Throws tastebud::Error naming the
  // file on a read error or corrupt or truncated compressed data.
  virtual size_t read(char* buffer, size_t capacity) = 0;
  // Bytes of the file itself consumed so far (compressed bytes for .gz), for progress.
  virtual uint64_t file_bytes_read() const = 0;
};

}  // namespace tastebud::datasets
