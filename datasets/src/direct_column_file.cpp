#include "direct_column_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud::datasets {

namespace {

// O_DIRECT wants the buffer, the file offset and the length aligned to the logical block size;
// 4 KiB covers every disk in use.
constexpr size_t kAlign = 4096;

[[noreturn]] void fail(const std::filesystem::path& path, const char* what) {
  throw Error(fmt::format("{}: {} failed: {}", path.string(), what, std::strerror(errno)));
}

}  // namespace

DirectFile::DirectFile(std::filesystem::path path, size_t buffer_bytes)
    : path_(std::move(path)),
      capacity_(std::max<size_t>(kAlign, (buffer_bytes + kAlign - 1) / kAlign * kAlign)),
      buffer_(static_cast<std::byte*>(std::aligned_alloc(kAlign, capacity_)), &std::free) {
  if (!buffer_) throw Error(fmt::format("{}: out of memory for the write buffer", path_.string()));
  const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  // Small blocks written directly wait on the disk once each: buffered is faster for them.
  if (capacity_ >= kMinDirectBuffer) {
    fd_ = ::open(path_.c_str(), flags | O_DIRECT, 0644);
    direct_ = fd_ >= 0;
  }
  if (!direct_) fd_ = ::open(path_.c_str(), flags, 0644);
  if (fd_ < 0) fail(path_, "creating");
}

DirectFile::~DirectFile() {
  if (fd_ >= 0) ::close(fd_);
}

void DirectFile::write_at(const void* data, size_t bytes, uint64_t offset) {
  const auto* p = static_cast<const std::byte*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd_, p, bytes, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path_, "write");
    }
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void DirectFile::append(const void* data, size_t bytes) {
  const auto* p = static_cast<const std::byte*>(data);
  while (bytes > 0) {
    const size_t n = std::min(bytes, capacity_ - used_);
    std::memcpy(buffer_.get() + used_, p, n);
    used_ += n;
    p += n;
    bytes -= n;
    if (used_ == capacity_) {
      write_at(buffer_.get(), capacity_, offset_);
      offset_ += capacity_;
      used_ = 0;
    }
  }
}

void DirectFile::overwrite(uint64_t offset, const void* data, size_t bytes) {
  const auto* p = static_cast<const std::byte*>(data);
  if (offset >= offset_ && offset + bytes <= offset_ + used_) {
    std::memcpy(buffer_.get() + (offset - offset_), p, bytes);
    return;
  }
  patches_.emplace_back(offset, std::vector<std::byte>(p, p + bytes));
}

uint64_t DirectFile::finish() {
  const uint64_t total = size();
  // The tail padded to a whole block, then cut back.
  const size_t padded = direct_ ? (used_ + kAlign - 1) / kAlign * kAlign : used_;
  std::memset(buffer_.get() + used_, 0, padded - used_);
  if (padded > 0) write_at(buffer_.get(), padded, offset_);
  if (padded != used_ && ::ftruncate(fd_, static_cast<off_t>(total)) != 0) fail(path_, "truncate");
  if (!patches_.empty()) {
    if (direct_) {
      const int flags = ::fcntl(fd_, F_GETFL);
      if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) fail(path_, "fcntl");
    }
    for (const auto& [offset, bytes] : patches_) write_at(bytes.data(), bytes.size(), offset);
  }
  ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail(path_, "close");
  return total;
}

DirectColumnFile::DirectColumnFile(std::filesystem::path path, DType dtype, size_t element_size)
    : path_(path), element_size_(element_size), file_(std::move(path), size_t{4} << 20) {
  ColumnHeader header{};
  std::memcpy(header.magic, kColumnMagic, sizeof(kColumnMagic));
  header.version = kColumnVersion;
  header.dtype = static_cast<uint32_t>(dtype);
  header.count = 0;  // finish() writes the count
  file_.append(&header, sizeof(header));
}

void DirectColumnFile::finish(uint64_t count) {
  if (data_bytes_ != count * element_size_) {
    throw Error(fmt::format("{}: internal error: wrote {} bytes for {} elements of {} bytes",
                            path_.string(), data_bytes_, count, element_size_));
  }
  file_.overwrite(offsetof(ColumnHeader, count), &count, sizeof(count));
  const uint64_t crc = kPayloadCrc | crc_;
  file_.overwrite(offsetof(ColumnHeader, reserved), &crc, sizeof(crc));
  file_.finish();
}

}  // namespace tastebud::datasets
