// Where an import's rows come from (import.cpp orchestrates): a CSV input of one file or the part
// files of one export, its header checked, rows read ahead for type inference; the bad-row budget;
// the parsing of number and timestamp fields that the metadata and interaction stages share.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tastebud/datasets/csv.h"
#include "tastebud/datasets/encode.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/schema.h"

namespace tastebud::datasets::import_detail {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

inline constexpr uint32_t kNoRow = UINT32_MAX;
inline constexpr uint32_t kNull = UINT32_MAX;
inline constexpr int64_t kNullTimestamp = std::numeric_limits<int64_t>::min();
inline constexpr float kNullNumber = std::numeric_limits<float>::quiet_NaN();
// Rows read ahead to infer a schema's types when none is given.
inline constexpr size_t kInferenceSampleRows = 10000;

std::string quoted(std::string_view value);

// Counts skipped rows against `max_bad_rows`.
class BadRowBudget {
 public:
  explicit BadRowBudget(const ImportOptions& options)
      : max_(options.max_bad_rows), report_(options.on_bad_row) {}

  void skip(const BadRow& error);
  uint64_t skipped() const { return skipped_; }

 private:
  uint64_t max_;
  std::function<void(const std::string&)> report_;
  uint64_t skipped_ = 0;
};

// Columns of one CSV file: far more than any export has (Personalize allows tens), few enough that
// a header of a hundred thousand columns is refused at once rather than opening as many files.
inline constexpr size_t kMaxColumns = 1000;

// A CSV input, one file or the part files of one export, with its header read, and optionally
// its first rows read ahead (to infer types); the rows read ahead are handed out again by next()
// in order, errors included. Each part repeats the header; rows and their lines are the parts' in
// order, so the rows are the concatenated file's and messages name the part and its line.
class CsvInput {
 public:
  CsvInput(std::vector<fs::path> parts, DatasetKind kind, size_t block_size, size_t read_ahead);

  const std::vector<std::string>& header() const { return header_; }
  uint64_t header_line() const { return header_line_; }
  // The file whose header header() is: the first part.
  const fs::path& header_path() const { return parts_[0]; }
  // The file of the record next() returned last (the first part before that).
  const fs::path& path() const { return parts_[record_part_]; }
  // Of all parts together, in bytes of the files (compressed ones as they are on disk).
  uint64_t bytes_consumed() const { return bytes_done_ + reader_->file_bytes_read(); }
  uint64_t bytes_total() const { return bytes_total_; }

  // The rows read ahead that parsed, for type inference.
  std::vector<std::vector<std::string>> sample() const;

  bool next(CsvRecord& record);

  std::string where(uint64_t line, size_t field) const;

  // Throws when the record's field count differs from the header's.
  void check_field_count(const CsvRecord& record) const;

 private:
  struct Ahead {
    std::vector<std::string> fields;
    uint64_t line = 0;
    std::string error;
    size_t part = 0;
  };

  std::string example_header() const;

  // Opens part p and returns its header row.
  CsvRecord open_part(size_t p);

  // The next row of the parts; a part's header row is checked against the first part's.
  bool read_record(CsvRecord& record);

  std::vector<fs::path> parts_;
  DatasetKind kind_;
  size_t block_size_;
  std::unique_ptr<CsvReader> reader_;
  size_t part_ = 0, record_part_ = 0;
  uint64_t bytes_done_ = 0, bytes_total_ = 0;
  std::vector<std::string> header_;
  uint64_t header_line_ = 1;
  std::deque<Ahead> ahead_;
  Ahead current_;
};

std::vector<std::string_view> required_columns(DatasetKind kind);

void check_required_columns(const CsvInput& in, DatasetKind kind);

// The schema field of each CSV column, checked both ways: every column must be in the schema and
// every non-nullable schema field must be a column.
std::vector<const SchemaField*> bind_columns(const CsvInput& in, const Schema& schema,
                                             const std::string& schema_source);

// A number field as float: NaN for an empty field of a nullable field.
float parse_number_field(const CsvInput& in, const CsvRecord& record, size_t column,
                         const SchemaField& field);

// Unix seconds from 1970 to 2100: outside, a timestamp is a mistake (a sign, milliseconds, a
// placeholder such as INT64_MIN) that would later overflow recency and trend arithmetic.
inline constexpr int64_t kMaxTimestamp = 4102444800;  // 2100-01-01T00:00:00Z

void check_timestamp(const CsvInput& in, const CsvRecord& record, size_t column, int64_t v);

int64_t parse_timestamp_field(const CsvInput& in, const CsvRecord& record, size_t column,
                              const SchemaField& field);

// Splits a multi-valued field at '|', dropping empty values and repeats.
void split_values(std::string_view text, std::vector<std::string_view>& out);

// An id or string vocabulary as the dataset's PREFIX.offsets.col and PREFIX.bytes.col.
void write_strings(const fs::path& dir, const std::string& prefix, const IdMap& strings);

}  // namespace tastebud::datasets::import_detail
