// Files written around the page cache (O_DIRECT): on the VMs this runs on, copying into new
// page-cache pages runs at a third of the disk's speed (dd: 317 MB/s buffered, 1.1 GB/s direct),
// and it was most of an import's write phase and of its spilled runs. Where the file system
// refuses O_DIRECT (tmpfs), they are written through the page cache instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include "tastebud/datasets/columns.h"

#include "tastebud/checksum.h"

namespace tastebud::datasets {

// Buffers from this size are written and read around the page cache; smaller ones through it.
inline constexpr size_t kMinDirectBuffer = size_t{256} << 10;

// Bytes appended through an aligned buffer of buffer_bytes (rounded up to 4 KiB blocks).
class DirectFile {
 public:
  DirectFile(std::filesystem::path path, size_t buffer_bytes);
  ~DirectFile();
  DirectFile(const DirectFile&) = delete;
  DirectFile& operator=(const DirectFile&) = delete;

  void append(const void* data, size_t bytes);
  // Overwrites bytes already appended (a header), in the buffer or in the file.
  void overwrite(uint64_t offset, const void* data, size_t bytes);
  // Writes the rest, cuts the file to what was appended, starts the write-back of anything
  // buffered, closes. Returns the file's size. Throws tastebud::Error naming the file.
  uint64_t finish();
  uint64_t size() const { return offset_ + used_; }

 private:
  void write_at(const void* data, size_t bytes, uint64_t offset);

  std::filesystem::path path_;
  int fd_ = -1;
  bool direct_ = false;
  size_t capacity_;
  std::unique_ptr<std::byte, void (*)(void*)> buffer_;
  size_t used_ = 0;
  uint64_t offset_ = 0;  // of the buffer's first byte in the file
  // Overwrites of bytes already written, applied at finish (an 8-byte write cannot be direct).
  std::vector<std::pair<uint64_t, std::vector<std::byte>>> patches_;
};

// A column file (columns.h) whose element count is given at the end.
class DirectColumnFile {
 public:
  DirectColumnFile(std::filesystem::path path, DType dtype, size_t element_size);
  void append(const void* data, size_t bytes) {
    file_.append(data, bytes);
    data_bytes_ += bytes;
    crc_ = crc32_update(crc_, std::string_view(static_cast<const char*>(data), bytes));
  }
  void finish(uint64_t count);

 private:
  std::filesystem::path path_;
  size_t element_size_;
  DirectFile file_;
  uint64_t data_bytes_ = 0;
  uint32_t crc_ = 0;  // of the elements, recorded in the header by finish()
};

}  // namespace tastebud::datasets
