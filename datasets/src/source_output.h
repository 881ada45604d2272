// Output helpers shared by the CSV sources (the synthetic shop and the MovieLens converter): a file
// that only appears under its final name once it is complete, and fast CSV field formatting.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include "tastebud/atomic_file.h"

namespace tastebud::datasets::detail {

// A CSV that only appears under its final name once it is complete (tastebud/atomic_file.h).
using AtomicOutputFile = tastebud::AtomicFile;

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
