// A column file written around the page cache (O_DIRECT): on the VMs this runs on, copying into
// new page-cache pages runs at a third of the disk's speed (dd: 317 MB/s buffered, 1.1 GB/s
// direct), and it was most of an import's write phase. Same bytes as ColumnWriter (see
// columns.h); the element count is given at the end. Where the file system refuses O_DIRECT
// (tmpfs), it writes through the page cache instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "tastebud/datasets/columns.h"

namespace tastebud::datasets {

class DirectColumnFile {
 public:
  DirectColumnFile(std::filesystem::path path, DType dtype, size_t element_size);
  ~DirectColumnFile();
  DirectColumnFile(const DirectColumnFile&) = delete;
  DirectColumnFile& operator=(const DirectColumnFile&) = delete;

  void append(const void* data, size_t bytes);
  // Writes the rest and the header with its count, and starts the write-back of anything
  // buffered (sync_to_disk waits for it). Throws tastebud::Error naming the file.
  void finish(uint64_t count);

 private:
  void write_block(size_t bytes);

  std::filesystem::path path_;
  size_t element_size_;
  int fd_ = -1;
  bool direct_ = false;
  std::unique_ptr<std::byte, void (*)(void*)> buffer_;
  size_t used_ = 0;
  uint64_t offset_ = 0;  // of the buffer's first byte in the file
  uint64_t data_bytes_ = 0;
};

}  // namespace tastebud::datasets
