#include "import_input.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "tastebud/datasets/columns.h"
#include "tastebud/error.h"

namespace tastebud::datasets::import_detail {

namespace fs = std::filesystem;

std::string quoted(std::string_view value) {
  constexpr size_t kShown = 40;
  if (value.size() > kShown) return fmt::format("\"{}...\"", value.substr(0, kShown));
  return fmt::format("\"{}\"", value);
}

void BadRowBudget::skip(const BadRow& error) {
  if (skipped_ >= max_) {
    if (max_ == 0) throw error;
    throw BadRow(fmt::format("{} (more than `max_bad_rows` {} bad rows)", error.what(), max_));
  }
  ++skipped_;
  if (report_) report_(error.what());
}

CsvInput::CsvInput(std::vector<fs::path> parts, DatasetKind kind, size_t block_size, size_t read_ahead)
    : parts_(std::move(parts)), kind_(kind), block_size_(block_size) {
  for (const fs::path& p : parts_) bytes_total_ += fs::file_size(p);
  const CsvRecord header = open_part(0);
  std::unordered_set<std::string> names;
  for (size_t c = 0; c < header.fields.size(); ++c) {
    const std::string name(trim(header.fields[c]));
    if (name.empty()) {
      throw Error(fmt::format("{}:{}: field {}: empty column name in the header", path().string(),
                              header.line, c + 1));
    }
    if (!names.insert(field_name_key(name)).second) {
      throw Error(fmt::format("{}:{}: field {} ({}): the column name appears twice in the header",
                              path().string(), header.line, c + 1, name));
    }
    header_.push_back(name);
  }
  if (header.fields.size() > kMaxColumns) {
    throw Error(fmt::format("{}:{}: the header has {} columns; at most {} are imported (each "
                            "column becomes files of the dataset)",
                            path().string(), header.line, header.fields.size(), kMaxColumns));
  }
  header_line_ = header.line;
  reader_->set_field_names(header_);
  read_ahead = std::max<size_t>(read_ahead, 1);
  CsvRecord record;
  while (ahead_.size() < read_ahead) {
    Ahead row;
    try {
      if (!read_record(record)) break;
      row.fields.assign(record.fields.begin(), record.fields.end());
      row.line = record.line;
    } catch (const BadRow& e) {
      row.error = e.what();
    }
    row.part = part_;
    ahead_.push_back(std::move(row));
  }
  if (ahead_.empty()) {
    throw Error(fmt::format("{}:{}: the file has a header but no data rows", parts_[0].string(),
                            header_line_ + 1));
  }
}

std::vector<std::vector<std::string>> CsvInput::sample() const {
  std::vector<std::vector<std::string>> rows;
  for (const Ahead& row : ahead_)
    if (row.error.empty()) rows.push_back(row.fields);
  return rows;
}

bool CsvInput::next(CsvRecord& record) {
  if (!ahead_.empty()) {
    current_ = std::move(ahead_.front());
    ahead_.pop_front();
    record_part_ = current_.part;
    if (!current_.error.empty()) throw BadRow(current_.error);
    record.fields.assign(current_.fields.begin(), current_.fields.end());
    record.line = current_.line;
    return true;
  }
  const bool got = read_record(record);
  record_part_ = part_;
  return got;
}

std::string CsvInput::where(uint64_t line, size_t field) const {
  return fmt::format("{}:{}: {}", path().string(), line, reader_->field_label(field));
}

void CsvInput::check_field_count(const CsvRecord& record) const {
  const size_t have = record.fields.size(), want = header_.size();
  if (have == want) return;
  if (have < want) {
    throw BadRow(fmt::format("{}: missing: the row has {} fields, the header {}",
                             where(record.line, have), have, want));
  }
  throw BadRow(fmt::format("{}: unexpected extra field: the row has {} fields, the header {}",
                           where(record.line, want), have, want));
}

std::string CsvInput::example_header() const {
  switch (kind_) {
    case DatasetKind::Interactions: return "USER_ID,ITEM_ID,TIMESTAMP,...";
    case DatasetKind::Users: return "USER_ID,...";
    case DatasetKind::Items: return "ITEM_ID,...";
  }
  return "";
}

CsvRecord CsvInput::open_part(size_t p) {
  if (reader_) bytes_done_ += fs::file_size(parts_[part_]);
  part_ = p;
  record_part_ = p;
  reader_ = std::make_unique<CsvReader>(parts_[p], block_size_);
  CsvRecord record;
  try {
    if (!reader_->next(record)) {
      throw Error(fmt::format("{}:1: the file is empty; expected a header row naming the columns "
                              "({}){}",
                              parts_[p].string(), example_header(),
                              p > 0 ? ", as every part file repeats the first part's" : ""));
    }
  } catch (const BadRow& e) {
    throw Error(e.what());  // a header that cannot be read is never skippable
  }
  return record;
}

bool CsvInput::read_record(CsvRecord& record) {
  for (;;) {
    if (reader_->next(record)) return true;
    if (part_ + 1 == parts_.size()) return false;
    const CsvRecord header = open_part(part_ + 1);
    bool same = header.fields.size() == header_.size();
    for (size_t c = 0; same && c < header_.size(); ++c) same = trim(header.fields[c]) == header_[c];
    if (!same) {
      std::vector<std::string_view> names;
      for (std::string_view f : header.fields) names.push_back(trim(f));
      throw Error(fmt::format("{}:{}: the header ({}) differs from the first part's ({}: {}); "
                              "every part file must have the same header",
                              parts_[part_].string(), header.line, fmt::join(names, ","),
                              parts_[0].string(), fmt::join(header_, ",")));
    }
    reader_->set_field_names(header_);
  }
}

std::vector<std::string_view> required_columns(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::Interactions: return {"USER_ID", "ITEM_ID", "TIMESTAMP"};
    case DatasetKind::Users: return {"USER_ID"};
    case DatasetKind::Items: return {"ITEM_ID"};
  }
  return {};
}

void check_required_columns(const CsvInput& in, DatasetKind kind) {
  for (std::string_view name : required_columns(kind)) {
    const auto& header = in.header();
    if (std::none_of(header.begin(), header.end(),
                     [&](const std::string& h) { return same_field_name(h, name); })) {
      throw Error(fmt::format("{}:{}: field {}: required column is missing from the header (it has "
                              "{})",
                              in.header_path().string(), in.header_line(), name,
                              fmt::join(in.header(), ",")));
    }
  }
}

// The schema field of each CSV column, checked both ways: every column must be in the schema and
// every non-nullable schema field must be a column.
std::vector<const SchemaField*> bind_columns(const CsvInput& in, const Schema& schema,
                                             const std::string& schema_source) {
  std::unordered_map<std::string, const SchemaField*> by_name;
  for (const SchemaField& f : schema.fields) by_name.emplace(field_name_key(f.name), &f);
  std::vector<const SchemaField*> fields;
  for (size_t c = 0; c < in.header().size(); ++c) {
    const auto found = by_name.find(field_name_key(in.header()[c]));
    const SchemaField* f = found == by_name.end() ? nullptr : found->second;
    if (f == nullptr) {
      throw Error(fmt::format("{}:{}: field {} ({}): the column is not in the schema {}; add it to "
                              "the schema or drop the column",
                              in.header_path().string(), in.header_line(), c + 1, in.header()[c],
                              schema_source));
    }
    fields.push_back(f);
  }
  const std::unordered_set<const SchemaField*> bound(fields.begin(), fields.end());
  for (const SchemaField& f : schema.fields) {
    if (f.nullable || bound.contains(&f)) continue;
    throw Error(fmt::format("{}:{}: field {}: required column is missing from the header (the "
                            "schema {} requires it)",
                            in.header_path().string(), in.header_line(), f.name, schema_source));
  }
  return fields;
}

// A number field as float: NaN for an empty field of a nullable field.
float parse_number_field(const CsvInput& in, const CsvRecord& record, size_t column,
                         const SchemaField& field) {
  const std::string_view text = record.fields[column];
  if (trim(text).empty()) {
    if (field.nullable) return kNullNumber;
    throw BadRow(fmt::format("{}: expected a number ({}), got an empty field", in.where(record.line, column),
                             type_name(field.type)));
  }
  if (field.type == FieldType::Boolean) {
    bool b = false;
    if (!parse_bool(text, &b)) {
      throw BadRow(fmt::format("{}: expected true or false, got {}", in.where(record.line, column),
                               quoted(text)));
    }
    return b ? 1.0f : 0.0f;
  }
  if (field.type == FieldType::Int || field.type == FieldType::Long) {
    int64_t v = 0;
    if (!parse_int64(text, &v)) {
      throw BadRow(fmt::format("{}: expected an integer ({}), got {}", in.where(record.line, column),
                               type_name(field.type), quoted(text)));
    }
    return static_cast<float>(v);
  }
  float v = 0;
  switch (parse_float(text, &v)) {
    case NumberParse::Ok: return v;
    case NumberParse::NotFinite:
      throw BadRow(fmt::format("{}: {} is not a finite number; write a null as an empty field",
                               in.where(record.line, column), quoted(text)));
    default:
      throw BadRow(fmt::format("{}: expected a number ({}), got {}", in.where(record.line, column),
                               type_name(field.type), quoted(text)));
  }
}


void check_timestamp(const CsvInput& in, const CsvRecord& record, size_t column, int64_t v) {
  if (v >= 0 && v <= kMaxTimestamp) return;
  if (v < 0)
    throw BadRow(fmt::format("{}: {} is before 1970; expected Unix seconds from 0 to {} (2100)",
                             in.where(record.line, column), v, kMaxTimestamp));
  if (v / 1000 <= kMaxTimestamp)
    throw BadRow(fmt::format("{}: {} looks like milliseconds (as seconds it is after 2100); expected Unix "
                             "seconds: divide by 1000", in.where(record.line, column), v));
  throw BadRow(fmt::format("{}: {} is after 2100; expected Unix seconds from 0 to {}",
                           in.where(record.line, column), v, kMaxTimestamp));
}

int64_t parse_timestamp_field(const CsvInput& in, const CsvRecord& record, size_t column,
                              const SchemaField& field) {
  const std::string_view text = record.fields[column];
  int64_t v = 0;
  if (parse_int64(text, &v)) {
    check_timestamp(in, record, column, v);
    return v;
  }
  if (trim(text).empty() && field.nullable) return kNullTimestamp;
  throw BadRow(fmt::format("{}: expected an integer (Unix seconds), got {}",
                           in.where(record.line, column), quoted(text)));
}

// Splits a multi-valued field at '|', dropping empty values and repeats.
void split_values(std::string_view text, std::vector<std::string_view>& out) {
  out.clear();
  size_t start = 0;
  while (start <= text.size()) {
    size_t bar = text.find('|', start);
    if (bar == std::string_view::npos) bar = text.size();
    const std::string_view v = trim(text.substr(start, bar - start));
    if (!v.empty() && std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    start = bar + 1;
  }
}

void write_strings(const fs::path& dir, const std::string& prefix, const IdMap& strings) {
  write_column<uint64_t>(dir / (prefix + ".offsets.col"), strings.offsets());
  write_column<char>(dir / (prefix + ".bytes.col"), strings.bytes());
}

}  // namespace tastebud::datasets::import_detail
