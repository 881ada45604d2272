#include "tastebud/datasets/input_files.h"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud::datasets {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::vector<fs::path> directory_parts(const fs::path& dir) {
  std::vector<fs::path> parts;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.' || !entry.is_regular_file()) continue;
    if (ends_with(name, ".csv") || ends_with(name, ".csv.gz")) parts.push_back(entry.path());
  }
  if (parts.empty()) {
    throw Error(fmt::format("{}: the directory holds no part files (names ending in .csv or .csv.gz)",
                            dir.string()));
  }
  return parts;
}

std::vector<fs::path> glob_parts(const std::string& pattern) {
  glob_t found{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &found);
  std::vector<fs::path> parts;
  if (rc == 0) {
    for (size_t i = 0; i < found.gl_pathc; ++i) {
      const fs::path p = found.gl_pathv[i];
      if (fs::is_regular_file(p)) parts.push_back(p);
    }
  }
  ::globfree(&found);
  if (parts.empty()) throw Error(fmt::format("{}: no such file, and no file matches it as a pattern", pattern));
  return parts;
}

// Plain files: read(2) with the kernel told to read ahead.
class PlainSource : public ByteSource {
 public:
  explicit PlainSource(fs::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error(fmt::format("{}: cannot open: {}", path_.string(), std::strerror(errno)));
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  ~PlainSource() override { ::close(fd_); }
  size_t read(char* buffer, size_t capacity) override {
    for (;;) {
      const ssize_t got = ::read(fd_, buffer, capacity);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw Error(fmt::format("{}: read failed: {}", path_.string(), std::strerror(errno)));
      }
      read_ += static_cast<uint64_t>(got);
      return static_cast<size_t>(got);
    }
  }
  uint64_t file_bytes_read() const override { return read_; }

 private:
  fs::path path_;
  int fd_ = -1;
  uint64_t read_ = 0;
};

// gzip files through zlib's gz* interface, which also reads files of several gzip members (as
// `cat a.gz b.gz` makes).
class GzipSource : public ByteSource {
 public:
  explicit GzipSource(fs::path path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path_.string(), std::strerror(errno)));
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    file_ = ::gzdopen(fd, "rb");
    if (file_ == nullptr) {
      ::close(fd);
      throw Error(fmt::format("{}: cannot open as gzip", path_.string()));
    }
    ::gzbuffer(file_, 1 << 18);
    // gzread passes a file without a gzip header through as it is; a .gz name promises one.
    if (::gzdirect(file_) == 1) {
      ::gzclose(file_);
      throw Error(fmt::format("{}: not gzip data (no gzip header); a plain CSV file must not end in .gz",
                              path_.string()));
    }
  }
  ~GzipSource() override { ::gzclose(file_); }

  size_t read(char* buffer, size_t capacity) override {
    const auto want = static_cast<unsigned>(std::min<size_t>(capacity, INT_MAX));
    const int got = ::gzread(file_, buffer, want);
    int code = Z_OK;
    const char* message = ::gzerror(file_, &code);
    if (got < 0 || (code != Z_OK && !(got > 0 && code == Z_BUF_ERROR))) {
      if (code == Z_ERRNO) {
        throw Error(fmt::format("{}: read failed: {}", path_.string(), std::strerror(errno)));
      }
      if (code == Z_BUF_ERROR) {
        throw Error(fmt::format("{}: the gzip data is truncated ({}); the file was cut short",
                                path_.string(), message));
      }
      throw Error(fmt::format("{}: corrupt gzip data ({}) after {} bytes of text", path_.string(),
                              message, text_bytes_));
    }
    text_bytes_ += static_cast<uint64_t>(got);
    return static_cast<size_t>(got);
  }
  uint64_t file_bytes_read() const override {
    const z_off_t offset = ::gzoffset(file_);
    return offset < 0 ? 0 : static_cast<uint64_t>(offset);
  }

 private:
  fs::path path_;
  gzFile file_ = nullptr;
  uint64_t text_bytes_ = 0;
};

}  // namespace

bool is_gzip_path(const fs::path& path) { return ends_with(path.filename().string(), ".gz"); }

std::vector<fs::path> expand_input(const fs::path& argument) {
  const std::string text = argument.string();
  if (fs::is_directory(argument)) {
    std::vector<fs::path> parts = directory_parts(argument);
    std::sort(parts.begin(), parts.end(),
              [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
    return parts;
  }
  if (fs::exists(argument)) {
    if (!fs::is_regular_file(argument)) throw Error(fmt::format("{}: not a regular file", text));
    return {argument};
  }
  if (!is_glob(text)) throw Error(fmt::format("{}: no such file", text));
  std::vector<fs::path> parts = glob_parts(text);
  std::sort(parts.begin(), parts.end(), [](const fs::path& a, const fs::path& b) { return a.string() < b.string(); });
  return parts;
}

std::unique_ptr<ByteSource> ByteSource::open(const fs::path& path) {
  if (is_gzip_path(path)) return std::make_unique<GzipSource>(path);
  return std::make_unique<PlainSource>(path);
}

}  // namespace tastebud::datasets
