// A streaming RFC 4180 CSV reader: quoted fields (commas, "" escapes and newlines inside quotes),
// LF or CRLF line ends, an optional UTF-8 byte-order mark. It reads the file in large blocks and
// never holds more than one block plus the record that straddles it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tastebud/error.h"

namespace tastebud::datasets {

// A problem confined to one row (a bad value, a wrong field count, invalid UTF-8). The reader has
// already moved past the row when it throws, so an import may skip it (--max-bad-rows) and go on.
class BadRow : public Error {
 public:
  using Error::Error;
};

struct CsvRecord {
  // Valid until the next call to CsvReader::next: they point into the reader's block.
  std::vector<std::string_view> fields;
  uint64_t line = 0;  // 1-based line on which the record starts
};

class ByteSource;

class CsvReader {
 public:
  // Blocks are block_size bytes; a record longer than a block grows it. Tests pass tiny blocks to
  // exercise every boundary. A name ending in .gz is decompressed as it is read.
  explicit CsvReader(std::filesystem::path path, size_t block_size = size_t{8} << 20);
  ~CsvReader();
  CsvReader(const CsvReader&) = delete;
  CsvReader& operator=(const CsvReader&) = delete;

  // Reads the next record; false at the end of the file. Blank lines are skipped. Throws BadRow
  // for a row-level problem (NUL byte, invalid UTF-8, a character after a closing quote) and
  // Error for an unterminated quote, which swallows the rest of the file.
  bool next(CsvRecord& record);

  // Names used in messages ("field 3 (TIMESTAMP)"), normally the header.
  void set_field_names(std::vector<std::string> names) { field_names_ = std::move(names); }
  // "field 3 (TIMESTAMP)" for the 0-based field index.
  std::string field_label(size_t field) const;

  const std::filesystem::path& path() const { return path_; }
  // Bytes of the file consumed so far (for throughput reports).
  uint64_t bytes_consumed() const { return buffer_file_offset_ + pos_; }
  // Bytes of the file itself read so far (compressed bytes for .gz; a block ahead), for progress.
  uint64_t file_bytes_read() const;

 private:
  enum class Parse { Complete, NeedMore };
  // The common record (unquoted fields, LF line end, wholly in the block), fast; false leaves
  // the reader where it was for parse_record.
  bool parse_plain_record(CsvRecord& record);
  Parse parse_record(CsvRecord& record);
  void fill();
  void validate(const CsvRecord& record) const;

  std::filesystem::path path_;
  std::unique_ptr<ByteSource> source_;
  // capacity + 1 + padding: a sentinel newline after the data stops scans, and the padding lets
  // a vector load that starts before the sentinel read past it.
  std::vector<char> buffer_;
  std::vector<char> unescaped_;  // quoted fields with "" escapes, unescaped
  size_t pos_ = 0, end_ = 0;
  uint64_t buffer_file_offset_ = 0;
  uint64_t line_ = 1;
  bool eof_ = false;
  bool at_file_start_ = true;
  bool suspicious_ = false;  // the block holds a NUL or a non-ASCII byte: validate fields
  bool skip_rest_of_line_ = false;
  std::vector<std::string> field_names_;
};

// True when text is well-formed UTF-8 without NUL bytes; otherwise sets *bad_offset to the first
// offending byte.
bool is_clean_utf8(std::string_view text, size_t* bad_offset);

}  // namespace tastebud::datasets
