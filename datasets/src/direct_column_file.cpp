#include "direct_column_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud::datasets {

namespace {

// O_DIRECT wants the buffer, the file offset and the length aligned to the logical block size;
// 4 KiB covers every disk in use.
constexpr size_t kAlign = 4096;
constexpr size_t kBufferBytes = size_t{4} << 20;

[[noreturn]] void fail(const std::filesystem::path& path, const char* what) {
  throw Error(fmt::format("{}: {} failed: {}", path.string(), what, std::strerror(errno)));
}

void write_all_at(int fd, const std::byte* data, size_t size, uint64_t offset,
                  const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, "write");
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

}  // namespace

DirectColumnFile::DirectColumnFile(std::filesystem::path path, DType dtype, size_t element_size)
    : path_(std::move(path)),
      element_size_(element_size),
      buffer_(static_cast<std::byte*>(std::aligned_alloc(kAlign, kBufferBytes)), &std::free) {
  if (!buffer_) throw Error(fmt::format("{}: out of memory for the write buffer", path_.string()));
  const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  fd_ = ::open(path_.c_str(), flags | O_DIRECT, 0644);
  direct_ = fd_ >= 0;
  if (fd_ < 0 && errno == EINVAL) fd_ = ::open(path_.c_str(), flags, 0644);
  if (fd_ < 0) fail(path_, "creating the column file");
  ColumnHeader header{};
  std::memcpy(header.magic, kColumnMagic, sizeof(kColumnMagic));
  header.version = kColumnVersion;
  header.dtype = static_cast<uint32_t>(dtype);
  header.count = 0;  // finish() writes the count
  std::memcpy(buffer_.get(), &header, sizeof(header));
  used_ = sizeof(header);
}

DirectColumnFile::~DirectColumnFile() {
  if (fd_ >= 0) ::close(fd_);
}

void DirectColumnFile::write_block(size_t bytes) {
  write_all_at(fd_, buffer_.get(), bytes, offset_, path_);
  offset_ += bytes;
}

void DirectColumnFile::append(const void* data, size_t bytes) {
  const auto* p = static_cast<const std::byte*>(data);
  data_bytes_ += bytes;
  while (bytes > 0) {
    const size_t n = std::min(bytes, kBufferBytes - used_);
    std::memcpy(buffer_.get() + used_, p, n);
    used_ += n;
    p += n;
    bytes -= n;
    if (used_ == kBufferBytes) {
      write_block(kBufferBytes);
      used_ = 0;
    }
  }
}

void DirectColumnFile::finish(uint64_t count) {
  if (data_bytes_ != count * element_size_) {
    throw Error(fmt::format("{}: internal error: wrote {} bytes for {} elements of {} bytes",
                            path_.string(), data_bytes_, count, element_size_));
  }
  const uint64_t size = offset_ + used_;
  // The tail padded to a whole block, then cut back to the column's size.
  const size_t padded = direct_ ? (used_ + kAlign - 1) / kAlign * kAlign : used_;
  std::memset(buffer_.get() + used_, 0, padded - used_);
  if (padded > 0) write_block(padded);
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) fail(path_, "truncating the column file");
  // The count, through the page cache (an 8-byte write cannot be direct).
  if (direct_) {
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) fail(path_, "fcntl");
  }
  write_all_at(fd_, reinterpret_cast<const std::byte*>(&count), sizeof(count),
               offsetof(ColumnHeader, count), path_);
  ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail(path_, "close");
}

}  // namespace tastebud::datasets
