#include "tastebud/datasets/csv.h"

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "tastebud/datasets/input_files.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace tastebud::datasets {
namespace {

// Bytes kept readable after the sentinel, so that a 16-byte load starting at or before the
// sentinel stays inside the buffer.
constexpr size_t kPadding = 16;

// The first ',', '\n' or '\r' at or after p. The buffer keeps a '\n' after its data, so the scan
// needs no bounds check: reaching the sentinel is told apart from a real newline by its position.
// Sixteen bytes at a time: fields are short, and a loop that ends at a data-dependent byte
// mispredicts once per field, which costs more than the scan.
inline const char* find_field_end(const char* p) {
#ifdef __SSE2__
  const __m128i comma = _mm_set1_epi8(',');
  const __m128i newline = _mm_set1_epi8('\n');
  const __m128i carriage_return = _mm_set1_epi8('\r');
  for (;; p += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, newline)),
                                     _mm_cmpeq_epi8(v, carriage_return));
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(hit));
    if (mask != 0) return p + __builtin_ctz(mask);
  }
#else
  // Bytes that end an unquoted field.
  static constexpr std::array<bool, 256> kFieldEnd = [] {
    std::array<bool, 256> table{};
    table[static_cast<uint8_t>(',')] = true;
    table[static_cast<uint8_t>('\n')] = true;
    table[static_cast<uint8_t>('\r')] = true;
    return table;
  }();
  while (!kFieldEnd[static_cast<uint8_t>(*p)]) ++p;
  return p;
#endif
}

// True when the bytes hold a NUL or anything outside ASCII. Clean blocks (the common case) skip
// per-field UTF-8 validation; the loop vectorizes.
bool has_suspicious_bytes(const char* data, size_t size) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(data);
  uint8_t high = 0;
  uint8_t all_nonzero = 1;
  for (size_t i = 0; i < size; ++i) {
    high |= bytes[i] & 0x80;
    all_nonzero &= bytes[i] != 0;
  }
  return high != 0 || all_nonzero == 0;
}

std::string printable(char c) {
  if (c >= 0x20 && c < 0x7f) return fmt::format("'{}'", c);
  return fmt::format("byte 0x{:02x}", static_cast<uint8_t>(c));
}

}  // namespace

bool is_clean_utf8(std::string_view text, size_t* bad_offset) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c == 0) break;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      break;
    }
    if (i + len > n) break;
    bool ok = true;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) ok = false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8 either.
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (!ok || cp < kMinForLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) break;
    i += len;
  }
  if (i == n) return true;
  *bad_offset = i;
  return false;
}

CsvReader::CsvReader(std::filesystem::path path, size_t block_size) : path_(std::move(path)) {
  source_ = ByteSource::open(path_);
  buffer_.resize(std::max<size_t>(block_size, 1) + 1 + kPadding);
  unescaped_.resize(buffer_.size());
}

CsvReader::~CsvReader() = default;

uint64_t CsvReader::file_bytes_read() const { return source_->file_bytes_read(); }

std::string CsvReader::field_label(size_t field) const {
  if (field < field_names_.size()) return fmt::format("field {} ({})", field + 1, field_names_[field]);
  return fmt::format("field {}", field + 1);
}

void CsvReader::fill() {
  // Keep the unconsumed tail (a record cut by the block end) and read after it.
  const size_t tail = end_ - pos_;
  size_t capacity = buffer_.size() - 1 - kPadding;
  if (tail == capacity) {
    capacity *= 2;
    buffer_.resize(capacity + 1 + kPadding);
    unescaped_.resize(buffer_.size());
  }
  if (pos_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + pos_, tail);
    buffer_file_offset_ += pos_;
    pos_ = 0;
    end_ = tail;
  }
  while (end_ < capacity) {
    const size_t got = source_->read(buffer_.data() + end_, capacity - end_);
    if (got == 0) {
      eof_ = true;
      break;
    }
    end_ += got;
  }
  buffer_[end_] = '\n';
  if (at_file_start_ && (end_ >= 3 || eof_)) {
    at_file_start_ = false;
    if (end_ >= 3 && std::memcmp(buffer_.data(), "\xEF\xBB\xBF", 3) == 0) pos_ = 3;
  }
  suspicious_ = has_suspicious_bytes(buffer_.data() + pos_, end_ - pos_);
}

bool CsvReader::next(CsvRecord& record) {
  for (;;) {
    if (at_file_start_ && !eof_) {
      fill();
      continue;
    }
    if (skip_rest_of_line_) {
      const char* start = buffer_.data() + pos_;
      const void* nl = std::memchr(start, '\n', end_ - pos_);
      if (nl == nullptr) {
        pos_ = end_;
        if (eof_) return false;
        fill();
        continue;
      }
      pos_ = static_cast<const char*>(nl) - buffer_.data() + 1;
      ++line_;
      skip_rest_of_line_ = false;
    }
    if (pos_ == end_) {
      if (eof_) return false;
      fill();
      continue;
    }
    // Blank lines carry no record.
    const char c = buffer_[pos_];
    if (c == '\n') {
      ++pos_;
      ++line_;
      continue;
    }
    if (c == '\r') {
      if (pos_ + 1 == end_ && !eof_) {
        fill();
        continue;
      }
      if (pos_ + 1 == end_ || buffer_[pos_ + 1] == '\n') {
        pos_ = std::min(pos_ + 2, end_);
        ++line_;
        continue;
      }
    }
    if (parse_plain_record(record) || parse_record(record) == Parse::Complete) {
      if (suspicious_) validate(record);
      return true;
    }
    fill();
  }
}

bool CsvReader::parse_plain_record(CsvRecord& record) {
#ifdef __SSE2__
  // Sixteen bytes at a time, a bit per delimiter, then one step per field: no branch on every
  // byte. Anything unusual (a quote, a CR, the end of the data) goes to parse_record, which starts
  // over from the same place.
  const char* const base = buffer_.data();
  const char* const start = base + pos_;
  const char* const end = base + end_;
  record.fields.clear();
  record.line = line_;
  const __m128i comma = _mm_set1_epi8(',');
  const __m128i newline = _mm_set1_epi8('\n');
  const __m128i carriage_return = _mm_set1_epi8('\r');
  const __m128i quote = _mm_set1_epi8('"');
  const char* field = start;
  for (const char* block = start;; block += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
    const __m128i hit = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, newline)),
        _mm_or_si128(_mm_cmpeq_epi8(v, carriage_return), _mm_cmpeq_epi8(v, quote)));
    for (auto mask = static_cast<unsigned>(_mm_movemask_epi8(hit)); mask != 0; mask &= mask - 1) {
      const char* at = block + __builtin_ctz(mask);
      if (*at == ',') {
        record.fields.emplace_back(field, static_cast<size_t>(at - field));
        field = at + 1;
        continue;
      }
      if (*at == '\n' && at < end) {
        record.fields.emplace_back(field, static_cast<size_t>(at - field));
        pos_ = static_cast<size_t>(at + 1 - base);
        ++line_;
        return true;
      }
      record.fields.clear();
      return false;
    }
  }
#else
  (void)record;
  return false;
#endif
}

CsvReader::Parse CsvReader::parse_record(CsvRecord& record) {
  char* const base = buffer_.data();
  const char* p = base + pos_;
  const char* const end = base + end_;
  uint64_t line = line_;
  char* out = unescaped_.data();
  record.fields.clear();
  record.line = line_;

  auto finish = [&](const char* after) {
    pos_ = after - base;
    line_ = line;
    return Parse::Complete;
  };

  for (;;) {
    if (p < end && *p == '"') {
      const uint64_t start_line = line;
      const char* content = p + 1;
      const char* scan = content;
      bool escaped = false;
      char* out_start = out;
      for (;;) {
        const char* quote = static_cast<const char*>(std::memchr(scan, '"', end - scan));
        if (quote == nullptr) {
          if (!eof_) return Parse::NeedMore;
          pos_ = end_;
          throw Error(fmt::format(
              "{}:{}: {}: unterminated quoted field: the closing '\"' is missing before the end "
              "of the file",
              path_.string(), start_line, field_label(record.fields.size())));
        }
        for (const char* q = scan; q < quote; ++q) line += *q == '\n';
        if (quote + 1 == end && !eof_) return Parse::NeedMore;  // "" or a closing quote?
        if (quote + 1 < end && quote[1] == '"') {
          if (!escaped) {
            escaped = true;
            out = std::copy(content, quote + 1, out);
          } else {
            out = std::copy(scan, quote + 1, out);
          }
          scan = quote + 2;
          continue;
        }
        if (escaped) {
          out = std::copy(scan, quote, out);
          record.fields.emplace_back(out_start, static_cast<size_t>(out - out_start));
        } else {
          record.fields.emplace_back(content, static_cast<size_t>(quote - content));
        }
        p = quote + 1;
        break;
      }
      if (p == end) {
        if (!eof_) return Parse::NeedMore;
        return finish(p);
      }
      if (*p == ',') {
        ++p;
        continue;
      }
      if (*p == '\n') {
        ++line;
        return finish(p + 1);
      }
      if (*p == '\r') {
        if (p + 1 == end) {
          if (!eof_) return Parse::NeedMore;
          return finish(p + 1);
        }
        if (p[1] == '\n') {
          ++line;
          return finish(p + 2);
        }
      }
      // Resume at the next line so that the import can skip this row.
      pos_ = p - base;
      line_ = line;
      skip_rest_of_line_ = true;
      throw BadRow(fmt::format("{}:{}: {}: unexpected {} after the closing quote; a quoted field "
                               "must end at a ',' or the end of the line",
                               path_.string(), line, field_label(record.fields.size() - 1),
                               printable(*p)));
    }

    const char* start = p;
    for (;;) {
      p = find_field_end(p);
      if (p == end) {
        if (!eof_) return Parse::NeedMore;
        record.fields.emplace_back(start, static_cast<size_t>(p - start));
        return finish(p);
      }
      if (*p == '\r') {
        if (p + 1 == end) {
          if (!eof_) return Parse::NeedMore;
          record.fields.emplace_back(start, static_cast<size_t>(p - start));
          return finish(p + 1);
        }
        if (p[1] != '\n') {  // a lone CR is data
          ++p;
          continue;
        }
      }
      break;
    }
    record.fields.emplace_back(start, static_cast<size_t>(p - start));
    if (*p == ',') {
      ++p;
      continue;
    }
    ++line;
    return finish(p + (*p == '\r' ? 2 : 1));
  }
}

void CsvReader::validate(const CsvRecord& record) const {
  for (size_t f = 0; f < record.fields.size(); ++f) {
    size_t bad = 0;
    if (is_clean_utf8(record.fields[f], &bad)) continue;
    const std::string_view field = record.fields[f];
    // The line of the bad byte, for a field that spans lines.
    uint64_t line = record.line;
    for (size_t f2 = 0; f2 < f; ++f2)
      for (char c : record.fields[f2]) line += c == '\n';
    for (size_t i = 0; i < bad; ++i) line += field[i] == '\n';
    if (field[bad] == '\0') {
      throw BadRow(fmt::format("{}:{}: {}: NUL byte at position {} of the field; the file must be "
                               "UTF-8 text",
                               path_.string(), line, field_label(f), bad + 1));
    }
    throw BadRow(fmt::format("{}:{}: {}: invalid UTF-8 ({}) at position {} of the field; "
                             "re-export the file as UTF-8",
                             path_.string(), line, field_label(f), printable(field[bad]), bad + 1));
  }
}

}  // namespace tastebud::datasets
