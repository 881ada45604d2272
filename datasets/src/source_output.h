// Output helpers shared by the CSV sources (the synthetic shop and the MovieLens converter): a file
// that only appears under its final name once it is complete, and fast CSV field formatting.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "tastebud/error.h"

namespace tastebud::datasets::detail {

// Writes to "<name>.tmp-<pid>" next to the target and renames it into place on commit(), so a
// crash or an exception never leaves a half-written CSV where a reader would take it for a whole
// one. Dropped without commit(), it removes the temporary file.
class AtomicOutputFile {
 public:
  explicit AtomicOutputFile(std::filesystem::path path) : path_(std::move(path)) {
    temp_path_ = path_;
    temp_path_ += ".tmp-" + std::to_string(::getpid());
    file_ = std::fopen(temp_path_.c_str(), "wb");
    if (file_ == nullptr) fail("cannot create");
    // A large stdio buffer turns the many small appends of the converters into few write calls.
    std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
  }
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;
  ~AtomicOutputFile() {
    if (file_ != nullptr) std::fclose(file_);
    if (!committed_) {
      std::error_code ignored;
      std::filesystem::remove(temp_path_, ignored);
    }
  }

  void write(std::string_view bytes) {
    if (bytes.empty()) return;
    if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) fail("cannot write");
  }

  void commit() {
    std::FILE* file = file_;
    file_ = nullptr;
    if (std::fclose(file) != 0) fail("cannot write");
    std::error_code error;
    std::filesystem::rename(temp_path_, path_, error);
    if (error) {
      throw Error("cannot rename " + temp_path_.string() + " to " + path_.string() + ": " +
                  error.message());
    }
    committed_ = true;
  }

  const std::filesystem::path& path() const { return path_; }

 private:
  [[noreturn]] void fail(const char* what) {
    throw Error(std::string(what) + " " + temp_path_.string() + ": " + std::strerror(errno));
  }

  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

inline void append_uint(std::string& out, uint64_t value) {
  char digits[24];
  const auto result = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, result.ptr);
}

inline void append_int(std::string& out, int64_t value) {
  char digits[24];
  const auto result = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, result.ptr);
}

// A price kept in integer cents prints the same on every machine, unlike a float round trip.
inline void append_cents(std::string& out, uint64_t cents) {
  append_uint(out, cents / 100);
  const auto fraction = static_cast<unsigned>(cents % 100);
  out.push_back('.');
  out.push_back(static_cast<char>('0' + fraction / 10));
  out.push_back(static_cast<char>('0' + fraction % 10));
}

// RFC 4180: a field holding a comma, a quote or a line break is quoted, and its quotes doubled.
inline void append_csv_field(std::string& out, std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) {
    out.append(field);
    return;
  }
  out.push_back('"');
  for (const char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
}

}  // namespace tastebud::datasets::detail
