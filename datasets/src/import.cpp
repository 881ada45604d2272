#include "tastebud/datasets/import.h"
#include "tastebud/datasets/delete_users.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "external_sort.h"
#include "merged_columns.h"
#include "tastebud/atomic_file.h"
#include "tastebud/datasets/columns.h"
#include "tastebud/datasets/csv.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/encode.h"
#include "tastebud/datasets/input_files.h"
#include "tastebud/datasets/schema.h"
#include "tastebud/directory_lock.h"
#include "tastebud/directory_swap.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::datasets {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

constexpr uint32_t kNoRow = UINT32_MAX;
constexpr uint32_t kNull = UINT32_MAX;
constexpr int64_t kNullTimestamp = std::numeric_limits<int64_t>::min();
constexpr float kNullNumber = std::numeric_limits<float>::quiet_NaN();
// Rows read ahead to infer a schema's types when none is given.
constexpr size_t kInferenceSampleRows = 10000;

std::string quoted(std::string_view value) {
  constexpr size_t kShown = 40;
  if (value.size() > kShown) return fmt::format("\"{}...\"", value.substr(0, kShown));
  return fmt::format("\"{}\"", value);
}

// Counts skipped rows against --max-bad-rows.
class BadRowBudget {
 public:
  explicit BadRowBudget(const ImportOptions& options)
      : max_(options.max_bad_rows), report_(options.on_bad_row) {}

  void skip(const BadRow& error) {
    if (skipped_ >= max_) {
      if (max_ == 0) throw error;
      throw BadRow(fmt::format("{} (more than --max-bad-rows {} bad rows)", error.what(), max_));
    }
    ++skipped_;
    if (report_) report_(error.what());
  }
  uint64_t skipped() const { return skipped_; }

 private:
  uint64_t max_;
  std::function<void(const std::string&)> report_;
  uint64_t skipped_ = 0;
};

// Columns of one CSV file: far more than any export has (Personalize allows tens), few enough that
// a header of a hundred thousand columns is refused at once rather than opening as many files.
constexpr size_t kMaxColumns = 1000;

// A CSV input, one file or the part files of one export, with its header read, and optionally
// its first rows read ahead (to infer types); the rows read ahead are handed out again by next()
// in order, errors included. Each part repeats the header; rows and their lines are the parts' in
// order, so the rows are the concatenated file's and messages name the part and its line.
class CsvInput {
 public:
  CsvInput(std::vector<fs::path> parts, DatasetKind kind, size_t block_size, size_t read_ahead)
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
  std::vector<std::vector<std::string>> sample() const {
    std::vector<std::vector<std::string>> rows;
    for (const Ahead& row : ahead_)
      if (row.error.empty()) rows.push_back(row.fields);
    return rows;
  }

  bool next(CsvRecord& record) {
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

  std::string where(uint64_t line, size_t field) const {
    return fmt::format("{}:{}: {}", path().string(), line, reader_->field_label(field));
  }

  // Throws when the record's field count differs from the header's.
  void check_field_count(const CsvRecord& record) const {
    const size_t have = record.fields.size(), want = header_.size();
    if (have == want) return;
    if (have < want) {
      throw BadRow(fmt::format("{}: missing: the row has {} fields, the header {}",
                               where(record.line, have), have, want));
    }
    throw BadRow(fmt::format("{}: unexpected extra field: the row has {} fields, the header {}",
                             where(record.line, want), have, want));
  }

 private:
  struct Ahead {
    std::vector<std::string> fields;
    uint64_t line = 0;
    std::string error;
    size_t part = 0;
  };

  std::string example_header() const {
    switch (kind_) {
      case DatasetKind::Interactions: return "USER_ID,ITEM_ID,TIMESTAMP,...";
      case DatasetKind::Users: return "USER_ID,...";
      case DatasetKind::Items: return "ITEM_ID,...";
    }
    return "";
  }

  // Opens part p and returns its header row.
  CsvRecord open_part(size_t p) {
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

  // The next row of the parts; a part's header row is checked against the first part's.
  bool read_record(CsvRecord& record) {
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

// Unix seconds from 1970 to 2100: outside, a timestamp is a mistake (a sign, milliseconds, a
// placeholder such as INT64_MIN) that would later overflow recency and trend arithmetic.
constexpr int64_t kMaxTimestamp = 4102444800;  // 2100-01-01T00:00:00Z

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

// ---- users and items -----------------------------------------------------------------------

// Metadata rows in arrival order (existing rows first, then the CSV's) and, per user or item,
// which row is current: a later row with the same id replaces the earlier one.
class MetadataBuilder {
 public:
  MetadataBuilder(DatasetKind kind, const Schema& schema) : kind_(kind) {
    for (const SchemaField& f : schema.fields) {
      switch (field_role(kind, f)) {
        case FieldRole::Categorical: categorical_.emplace_back().name = f.name; break;
        case FieldRole::Numerical: numerical_.emplace_back().name = f.name; break;
        case FieldRole::Textual: textual_.emplace_back().name = f.name; break;
        case FieldRole::CreationTimestamp: has_creation_ = true; break;
        default: break;
      }
    }
  }

  void load_existing(const Metadata& m, uint32_t entities) {
    for (Categorical& c : categorical_) {
      const CategoricalField* old = find_named(m.categorical, c.name);
      if (old != nullptr) c.vocabulary = IdMap(old->vocabulary);
    }
    for (uint32_t e = 0; e < entities; ++e) {
      if (m.has_row.empty() || m.has_row[e] == 0) continue;
      for (Categorical& c : categorical_) {
        if (const CategoricalField* old = find_named(m.categorical, c.name)) {
          c.values.insert(c.values.end(), old->values.begin() + old->offsets[e],
                          old->values.begin() + old->offsets[e + 1]);
        }
        c.offsets.push_back(c.values.size());
      }
      for (Numerical& n : numerical_) {
        const NumericalField* old = find_named(m.numerical, n.name);
        n.values.push_back(old != nullptr ? old->values[e] : kNullNumber);
      }
      for (Textual& t : textual_) {
        if (const TextualField* old = find_named(m.textual, t.name)) {
          t.tokens.insert(t.tokens.end(), old->tokens.begin() + old->offsets[e],
                          old->tokens.begin() + old->offsets[e + 1]);
        }
        t.offsets.push_back(t.tokens.size());
      }
      if (has_creation_) {
        creation_.push_back(m.creation_timestamp.empty() ? kNullTimestamp : m.creation_timestamp[e]);
      }
      set_row(e, rows_++);
    }
  }

  void read(CsvInput& in, const Schema& schema, const std::string& schema_source, IdMap& ids,
            BadRowBudget& budget) {
    const std::vector<const SchemaField*> fields = bind_columns(in, schema, schema_source);
    struct Binding {
      size_t column;
      FieldRole role;
      const SchemaField* field;
      size_t index;  // into categorical_, numerical_ or textual_
    };
    std::vector<Binding> bindings;
    size_t id_column = 0;
    for (size_t c = 0; c < fields.size(); ++c) {
      const FieldRole role = field_role(kind_, *fields[c]);
      size_t index = 0;
      if (role == FieldRole::UserId || role == FieldRole::ItemId) {
        id_column = c;
        continue;
      }
      if (role == FieldRole::Categorical) index = index_of(categorical_, fields[c]->name);
      if (role == FieldRole::Numerical) index = index_of(numerical_, fields[c]->name);
      if (role == FieldRole::Textual) index = index_of(textual_, fields[c]->name);
      bindings.push_back({c, role, fields[c], index});
    }

    CsvRecord record;
    std::vector<std::vector<std::string_view>> categorical_values(categorical_.size());
    std::vector<float> numbers(numerical_.size(), kNullNumber);
    std::vector<std::vector<uint32_t>> tokens(textual_.size());
    for (;;) {
      try {
        if (!in.next(record)) break;
        in.check_field_count(record);
        const std::string_view id = record.fields[id_column];
        if (id.empty()) {
          throw BadRow(fmt::format("{}: empty id; every row needs one", in.where(record.line, id_column)));
        }
        // Parse everything before touching the vocabularies, so that a bad row leaves no trace.
        for (auto& v : categorical_values) v.clear();
        std::fill(numbers.begin(), numbers.end(), kNullNumber);
        for (auto& t : tokens) t.clear();
        int64_t creation = kNullTimestamp;
        for (const Binding& b : bindings) {
          const std::string_view text = record.fields[b.column];
          switch (b.role) {
            case FieldRole::Categorical: split_values(text, categorical_values[b.index]); break;
            case FieldRole::Numerical:
              numbers[b.index] = parse_number_field(in, record, b.column, *b.field);
              break;
            case FieldRole::Textual:
              for_each_text_token(text, [&](uint32_t h) { tokens[b.index].push_back(h); });
              break;
            case FieldRole::CreationTimestamp:
              creation = parse_timestamp_field(in, record, b.column, *b.field);
              break;
            default: break;
          }
        }
        for (size_t k = 0; k < categorical_.size(); ++k) {
          Categorical& c = categorical_[k];
          for (std::string_view v : categorical_values[k]) c.values.push_back(c.vocabulary.insert(v));
          c.offsets.push_back(c.values.size());
        }
        for (size_t k = 0; k < numerical_.size(); ++k) numerical_[k].values.push_back(numbers[k]);
        for (size_t k = 0; k < textual_.size(); ++k) {
          textual_[k].tokens.insert(textual_[k].tokens.end(), tokens[k].begin(), tokens[k].end());
          textual_[k].offsets.push_back(textual_[k].tokens.size());
        }
        if (has_creation_) creation_.push_back(creation);
        set_row(ids.insert(id), rows_++);
      } catch (const BadRow& e) {
        budget.skip(e);
      }
    }
  }

  void write(const fs::path& dir, uint32_t entities, Json& meta, Json& vocabulary_sizes) const {
    const std::string kind(kind_name(kind_));
    auto row = [&](uint64_t e) { return e < row_of_.size() ? row_of_[e] : kNoRow; };
    write_column_gathered<uint8_t>(dir / (kind + ".has_row.col"), entities,
                                   [&](uint64_t e) { return uint8_t{row(e) != kNoRow}; });
    Json names = Json::array();
    for (size_t k = 0; k < categorical_.size(); ++k) {
      const Categorical& c = categorical_[k];
      const std::string prefix = fmt::format("{}.categorical.{}", kind, k);
      write_strings(dir, prefix + ".vocabulary", c.vocabulary);
      vocabulary_sizes[prefix] = c.vocabulary.size();
      write_csr(dir, prefix, entities, row, c.offsets, c.values, "values");
      names.push_back(c.name);
    }
    meta["categorical"] = names;
    names = Json::array();
    for (size_t k = 0; k < numerical_.size(); ++k) {
      const Numerical& n = numerical_[k];
      write_column_gathered<float>(dir / fmt::format("{}.numerical.{}.col", kind, k), entities,
                                   [&](uint64_t e) {
                                     const uint32_t r = row(e);
                                     return r == kNoRow ? kNullNumber : n.values[r];
                                   });
      names.push_back(n.name);
    }
    meta["numerical"] = names;
    names = Json::array();
    for (size_t k = 0; k < textual_.size(); ++k) {
      const Textual& t = textual_[k];
      write_csr(dir, fmt::format("{}.textual.{}", kind, k), entities, row, t.offsets, t.tokens,
                "tokens");
      names.push_back(t.name);
    }
    meta["textual"] = names;
    meta["creation_timestamp"] = has_creation_;
    if (has_creation_) {
      write_column_gathered<int64_t>(dir / (kind + ".creation_timestamp.col"), entities,
                                     [&](uint64_t e) {
                                       const uint32_t r = row(e);
                                       return r == kNoRow ? kNullTimestamp : creation_[r];
                                     });
    }
  }

  uint32_t rows_with_data() const {
    return static_cast<uint32_t>(std::count_if(row_of_.begin(), row_of_.end(),
                                               [](uint32_t r) { return r != kNoRow; }));
  }

 private:
  struct Categorical {
    std::string name;
    IdMap vocabulary;
    std::vector<uint64_t> offsets{0};
    std::vector<uint32_t> values;
  };
  struct Numerical {
    std::string name;
    std::vector<float> values;
  };
  struct Textual {
    std::string name;
    std::vector<uint64_t> offsets{0};
    std::vector<uint32_t> tokens;
  };

  template <typename Field>
  static const Field* find_named(const std::vector<Field>& fields, const std::string& name) {
    for (const Field& f : fields)
      if (f.name == name) return &f;
    return nullptr;
  }
  template <typename Field>
  static size_t index_of(const std::vector<Field>& fields, const std::string& name) {
    for (size_t k = 0; k < fields.size(); ++k)
      if (fields[k].name == name) return k;
    return 0;
  }

  void set_row(uint32_t entity, uint32_t row) {
    if (entity >= row_of_.size()) row_of_.resize(entity + 1, kNoRow);
    row_of_[entity] = row;
  }

  // A per-entity CSR column from per-row CSR data.
  template <typename RowOf>
  static void write_csr(const fs::path& dir, const std::string& prefix, uint32_t entities,
                        RowOf&& row, const std::vector<uint64_t>& offsets,
                        const std::vector<uint32_t>& values, const char* values_name) {
    std::vector<uint64_t> out_offsets(entities + 1, 0);
    for (uint32_t e = 0; e < entities; ++e) {
      const uint32_t r = row(e);
      out_offsets[e + 1] = out_offsets[e] + (r == kNoRow ? 0 : offsets[r + 1] - offsets[r]);
    }
    write_column<uint64_t>(dir / (prefix + ".offsets.col"), out_offsets);
    ColumnWriter writer(dir / fmt::format("{}.{}.col", prefix, values_name), DType::U32,
                        sizeof(uint32_t), out_offsets.back());
    for (uint32_t e = 0; e < entities; ++e) {
      const uint32_t r = row(e);
      if (r == kNoRow) continue;
      writer.append(values.data() + offsets[r], (offsets[r + 1] - offsets[r]) * sizeof(uint32_t));
    }
    writer.finish();
  }

  DatasetKind kind_;
  std::vector<Categorical> categorical_;
  std::vector<Numerical> numerical_;
  std::vector<Textual> textual_;
  bool has_creation_ = false;
  std::vector<int64_t> creation_;
  uint32_t rows_ = 0;
  std::vector<uint32_t> row_of_;
};

// ---- interactions --------------------------------------------------------------------------

// Rows of the interactions CSV as the parser thread hands them over: fields checked and parsed,
// item ids hashed, the ids still to be looked up copied out of the reader's block.
struct ParsedRows {
  size_t count = 0;  // good rows
  std::vector<IdKey> item_keys;
  // (row in the batch, key) of each row whose user differs from the previous good row's: the
  // encoder looks up only these, and fetches their slots a few changes ahead.
  std::vector<std::pair<uint32_t, IdKey>> user_changes;
  std::vector<int64_t> timestamps;
  std::vector<uint32_t> event_types;
  // Each good row's sort payload: its event value, context values and numbers (see float_bits).
  std::vector<uint32_t> payload;
  // Each good row's strings back to back (user, item, impression);
  // ends[row * strings_per_row + j] is where string j of the row ends.
  std::vector<char> text;  // its first text_size bytes are used; it only grows
  size_t text_size = 0;
  std::vector<uint32_t> ends;
  std::vector<std::pair<size_t, std::string>> bad_rows;  // (good rows before it, message)
  std::exception_ptr failure;  // a fatal error after the rows above
  bool last = false;
  uint64_t bytes_consumed = 0;  // of the file, after these rows (for progress)

  void clear() {
    count = 0;
    item_keys.clear();
    user_changes.clear();
    timestamps.clear();
    event_types.clear();
    payload.clear();
    text_size = 0;
    ends.clear();
    bad_rows.clear();
    failure = nullptr;
    last = false;
  }
};

// Batches go round between the two threads: free -> parser -> full -> encoder -> free.
class BatchQueue {
 public:
  static constexpr size_t kBatches = 3;
  BatchQueue() {
    for (auto& b : batches_) free_.push_back(&b);
  }
  // nullptr once cancelled.
  ParsedRows* take_free() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return cancelled_ || !free_.empty(); });
    if (cancelled_) return nullptr;
    ParsedRows* b = free_.front();
    free_.pop_front();
    return b;
  }
  void put_full(ParsedRows* b) {
    {
      std::lock_guard lock(mutex_);
      full_.push_back(b);
    }
    changed_.notify_all();
  }
  ParsedRows* take_full() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !full_.empty(); });
    ParsedRows* b = full_.front();
    full_.pop_front();
    return b;
  }
  void put_free(ParsedRows* b) {
    {
      std::lock_guard lock(mutex_);
      free_.push_back(b);
    }
    changed_.notify_all();
  }
  void cancel() {
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  ParsedRows batches_[kBatches];
  std::deque<ParsedRows*> free_, full_;
  bool cancelled_ = false;
};

// Where the interaction fields are in a row.
struct Columns {
  int user = -1, item = -1, timestamp = -1, event = -1, value = -1, impression = -1;
  const SchemaField* timestamp_field = nullptr;
  const SchemaField* value_field = nullptr;
  std::vector<int> context, numerical;  // column of each context / numerical field, -1: absent
  const std::vector<const SchemaField*>* fields = nullptr;
  size_t strings_per_row = 2;
  // The parser owns the small vocabularies of event types and context values; nobody else
  // touches them until it is done.
  IdMap* event_types = nullptr;
  uint32_t no_event_type = 0;  // when there is no EVENT_TYPE column
  std::vector<IdMap*> context_vocabularies;
};

// The words an interaction carries through the sort besides its key: the event value, then one
// per context field, then one per numerical field (floats as their bits).
inline uint32_t float_bits(float f) {
  uint32_t w;
  std::memcpy(&w, &f, 4);
  return w;
}
inline float bits_float(uint32_t w) {
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

// Eight ASCII digits (first digit in the lowest byte) to their value; false if any is not a digit.
inline bool parse_eight_digits(uint64_t chunk, uint64_t* value) {
  const uint64_t high_nibbles = chunk & 0xF0F0F0F0F0F0F0F0ull;
  const uint64_t over_nine = (chunk + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull;
  if (high_nibbles != 0x3030303030303030ull || over_nine != 0x3030303030303030ull) return false;
  chunk = (chunk & 0x0F0F0F0F0F0F0F0Full) * 2561 >> 8;
  chunk = (chunk & 0x00FF00FF00FF00FFull) * 6553601 >> 16;
  *value = (chunk & 0x0000FFFF0000FFFFull) * 42949672960001ull >> 32;
  return true;
}

// memcpy for the short strings of a row (ids, names) without a call: overlapping word copies
// that stay inside [src, src + n) and [dst, dst + n).
inline void copy_short(char* dst, const char* src, size_t n) {
  if (n >= 8 && n <= 16) {
    const uint64_t head = load_u64(src), tail = load_u64(src + n - 8);
    std::memcpy(dst, &head, 8);
    std::memcpy(dst + n - 8, &tail, 8);
  } else if (n >= 4 && n < 8) {
    uint32_t head, tail;
    std::memcpy(&head, src, 4);
    std::memcpy(&tail, src + n - 4, 4);
    std::memcpy(dst, &head, 4);
    std::memcpy(dst + n - 4, &tail, 4);
  } else if (n < 4) {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
  } else {
    std::memcpy(dst, src, n);
  }
}

// a == b for short strings without a call: overlapping word compares inside both strings.
inline bool same_bytes(std::string_view a, std::string_view b) {
  const size_t n = a.size();
  if (n != b.size()) return false;
  const char* p = a.data();
  const char* q = b.data();
  if (n >= 8 && n <= 16) return load_u64(p) == load_u64(q) && load_u64(p + n - 8) == load_u64(q + n - 8);
  if (n >= 4 && n < 8) return load_u32(p) == load_u32(q) && load_u32(p + n - 4) == load_u32(q + n - 4);
  if (n < 4) {
    for (size_t i = 0; i < n; ++i)
      if (p[i] != q[i]) return false;
    return true;
  }
  return std::memcmp(p, q, n) == 0;
}

// Unix seconds written as plain digits (the common case); anything else goes the strict way.
inline bool parse_plain_timestamp(std::string_view text, int64_t* value) {
  const size_t n = text.size();
  if (n >= 8 && n <= 16) {
    // Two eight-digit chunks, the first padded with leading zeros; loads stay inside the text.
    uint64_t low = 0, high = 0;
    uint64_t head = load_u64(text.data());
    const unsigned shift = static_cast<unsigned>(8 * (16 - n));
    head = shift == 64 ? 0x3030303030303030ull
                       : (head << shift) | (0x3030303030303030ull & ((uint64_t{1} << shift) - 1));
    if (!parse_eight_digits(load_u64(text.data() + n - 8), &low) ||
        !parse_eight_digits(head, &high)) {
      return false;
    }
    *value = static_cast<int64_t>(high * 100000000ull + low);
    return true;
  }
  if (text.empty() || text.size() > 18) return false;
  int64_t v = 0;
  for (char c : text) {
    const auto d = static_cast<uint8_t>(c - '0');
    if (d > 9) return false;
    v = v * 10 + d;
  }
  *value = v;
  return true;
}

// The parser thread: reads rows until the file ends, a fatal error, or cancel.
void parse_rows(CsvInput& in, const Columns& cols, BatchQueue& queue) {
  constexpr size_t kBatchRows = 16384;
  const size_t S = cols.strings_per_row;
  const size_t num_numerical = cols.numerical.size();
  CsvRecord record;
  std::vector<float> numbers(num_numerical);
  std::vector<std::string_view> strings(S);
  // Event types and context values repeat a handful of names: skip the hash for a repeat.
  std::string_view last_event_name;
  uint32_t last_event = 0;
  bool have_last_event = false;
  const size_t num_context = cols.context.size();
  std::vector<std::string> last_context_text(num_context);
  std::vector<uint32_t> last_context(num_context, kNull);
  std::string previous_user;
  bool have_previous_user = false;
  for (;;) {
    ParsedRows* b = queue.take_free();
    if (b == nullptr) return;
    b->clear();
    try {
      while (b->count < kBatchRows && b->bad_rows.size() < kBatchRows) {
        try {
          if (!in.next(record)) {
            b->last = true;
            break;
          }
          in.check_field_count(record);
          const std::string_view user = record.fields[cols.user];
          const std::string_view item = record.fields[cols.item];
          if (user.empty()) {
            throw BadRow(fmt::format("{}: empty id; every interaction needs a user",
                                     in.where(record.line, cols.user)));
          }
          if (item.empty()) {
            throw BadRow(fmt::format("{}: empty id; every interaction needs an item",
                                     in.where(record.line, cols.item)));
          }
          int64_t timestamp;
          if (!parse_plain_timestamp(record.fields[cols.timestamp], &timestamp) &&
              !parse_int64(record.fields[cols.timestamp], &timestamp)) {
            timestamp = parse_timestamp_field(in, record, cols.timestamp, *cols.timestamp_field);
          }
          if (timestamp < 0 || timestamp > kMaxTimestamp) check_timestamp(in, record, cols.timestamp, timestamp);
          float value = kNullNumber;
          if (cols.value >= 0 && !record.fields[cols.value].empty()) {
            value = parse_number_field(in, record, cols.value, *cols.value_field);
          } else if (cols.value >= 0 && !cols.value_field->nullable) {
            value = parse_number_field(in, record, cols.value, *cols.value_field);  // the error
          }
          for (size_t k = 0; k < num_numerical; ++k) {
            const int c = cols.numerical[k];
            numbers[k] = c < 0 ? kNullNumber : parse_number_field(in, record, c, *(*cols.fields)[c]);
          }

          // The row is good: hand it over.
          size_t j = 0;
          strings[j++] = user;
          strings[j++] = item;
          if (cols.impression >= 0) strings[j++] = record.fields[cols.impression];
          size_t at = b->text_size;
          size_t total = 0;
          for (std::string_view t : strings) total += t.size();
          if (at + total > UINT32_MAX) throw Error("internal error: batch text over 4 GiB");
          if (at + total > b->text.size()) b->text.resize(std::max(2 * b->text.size(), at + total));
          for (std::string_view t : strings) {
            copy_short(b->text.data() + at, t.data(), t.size());
            at += t.size();
            b->ends.push_back(static_cast<uint32_t>(at));
          }
          b->text_size = at;
          b->item_keys.push_back(make_id_key(item));
          if (!have_previous_user || !same_bytes(user, previous_user)) {
            b->user_changes.emplace_back(static_cast<uint32_t>(b->count), make_id_key(user));
            previous_user.assign(user);
            have_previous_user = true;
          }
          if (cols.event >= 0) {
            const std::string_view name = record.fields[cols.event];
            if (!have_last_event || !same_bytes(name, last_event_name)) {
              last_event = cols.event_types->insert(name);
              last_event_name = (*cols.event_types)[last_event];
              have_last_event = true;
            }
            b->event_types.push_back(last_event);
          } else {
            b->event_types.push_back(cols.no_event_type);
          }
          b->payload.push_back(float_bits(value));
          for (size_t k = 0; k < num_context; ++k) {
            const int c = cols.context[k];
            const std::string_view v = c < 0 ? std::string_view() : trim(record.fields[c]);
            if (v.empty()) {
              b->payload.push_back(kNull);
              continue;
            }
            if (last_context[k] == kNull || !same_bytes(v, last_context_text[k])) {
              last_context[k] = cols.context_vocabularies[k]->insert(v);
              last_context_text[k].assign(v);
            }
            b->payload.push_back(last_context[k]);
          }
          b->timestamps.push_back(timestamp);
          for (size_t k = 0; k < num_numerical; ++k) b->payload.push_back(float_bits(numbers[k]));
          ++b->count;
        } catch (const BadRow& e) {
          b->bad_rows.emplace_back(b->count, e.what());
        }
      }
    } catch (...) {
      b->failure = std::current_exception();
      b->last = true;
    }
    const bool last = b->last;
    b->bytes_consumed = in.bytes_consumed();
    queue.put_full(b);
    if (last) return;
  }
}


// The existing dataset's interactions as a sorted run (incremental imports): already sorted and
// free of duplicates, rows numbered 0.. in their stored order. Pages already read are handed back
// as it goes, so reading a large dataset through its mapping does not grow the import's memory.
class ExistingInteractions : public SortedRun {
 public:
  // context_of[k] / numerical_of[k]: the old field of the builder's field k, or -1.
  ExistingInteractions(const Interactions& old, std::vector<int> context_of,
                       std::vector<int> numerical_of, bool impressions)
      : old_(old),
        context_of_(std::move(context_of)),
        numerical_of_(std::move(numerical_of)),
        impressions_(impressions && !old.impression_offsets.empty()),
        payload_(1 + context_of_.size() + numerical_of_.size()) {}

  bool next() override {
    if (row_ == old_.size()) return false;
    const size_t r = row_++;
    key_ = {old_.timestamp[r], old_.user[r], old_.item[r], old_.event_type[r], static_cast<uint32_t>(r)};
    size_t w = 0;
    payload_[w++] = float_bits(old_.event_value[r]);
    for (int k : context_of_) payload_[w++] = k < 0 ? kNull : old_.context[k].values[r];
    for (int k : numerical_of_) payload_[w++] = float_bits(k < 0 ? kNullNumber : old_.numerical[k].values[r]);
    if (row_ % kReleaseRows == 0) release_read_pages();
    return true;
  }
  const InteractionKey& key() const override { return key_; }
  const uint32_t* payload() const override { return payload_.data(); }
  std::span<const uint32_t> impressions() const override {
    if (!impressions_) return {};
    const size_t r = key_.row;
    return old_.impression_items.subspan(old_.impression_offsets[r],
                                         old_.impression_offsets[r + 1] - old_.impression_offsets[r]);
  }

 private:
  static constexpr size_t kReleaseRows = size_t{1} << 18;

  template <typename T>
  static void release(std::span<const T> column, size_t done) {
    if (column.empty()) return;
    const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<uintptr_t>(column.data()) & ~(page - 1);
    const auto end = reinterpret_cast<uintptr_t>(column.data() + done) & ~(page - 1);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
  void release_read_pages() {
    const size_t done = row_ - 1;
    release(old_.user, done);
    release(old_.item, done);
    release(old_.timestamp, done);
    release(old_.event_type, done);
    release(old_.event_value, done);
    for (const auto& c : old_.context) release(c.values, done);
    for (const auto& x : old_.numerical) release(x.values, done);
    if (impressions_) {
      release(old_.impression_offsets, done);
      release(old_.impression_items, old_.impression_offsets[done]);
    }
  }

  const Interactions& old_;
  std::vector<int> context_of_, numerical_of_;
  bool impressions_;
  std::vector<uint32_t> payload_;
  size_t row_ = 0;
  InteractionKey key_{};
};

class InteractionsBuilder {
 public:
  std::function<void(uint64_t bytes_read)> on_progress;  // after each batch of rows; may be empty

  // memory_budget bounds the sort (see InteractionSorter); its runs go to spill_dir.
  InteractionsBuilder(const Schema& schema, uint64_t memory_budget, const fs::path& spill_dir) {
    for (const SchemaField& f : schema.fields) {
      switch (field_role(DatasetKind::Interactions, f)) {
        case FieldRole::Categorical: context_.emplace_back().name = f.name; break;
        case FieldRole::Numerical: numerical_.push_back(f.name); break;
        case FieldRole::Impression: has_impressions_ = true; break;
        default: break;
      }
    }
    sorter_ = std::make_unique<InteractionSorter>(payload_words(), has_impressions_, memory_budget,
                                                  spill_dir);
  }

  void load_existing(const Interactions& old) {
    std::vector<int> context_of, numerical_of;
    for (Context& c : context_) {
      int found = -1;
      for (size_t k = 0; k < old.context.size(); ++k)
        if (old.context[k].name == c.name) found = static_cast<int>(k);
      if (found >= 0) c.vocabulary = IdMap(old.context[found].vocabulary);
      context_of.push_back(found);
    }
    for (const std::string& name : numerical_) {
      int found = -1;
      for (size_t k = 0; k < old.numerical.size(); ++k)
        if (old.numerical[k].name == name) found = static_cast<int>(k);
      numerical_of.push_back(found);
    }
    sorter_->add_sorted(std::make_unique<ExistingInteractions>(old, std::move(context_of),
                                                               std::move(numerical_of), has_impressions_));
    next_row_ = old.size();
  }

  void read(CsvInput& in, const Schema& schema, const std::string& schema_source, IdMap& users,
            IdMap& items, IdMap& event_types, BadRowBudget& budget) {
    const std::vector<const SchemaField*> fields = bind_columns(in, schema, schema_source);
    int user_col = -1, item_col = -1, ts_col = -1, event_col = -1, value_col = -1, impression_col = -1;
    const SchemaField* ts_field = nullptr;
    const SchemaField* value_field = nullptr;
    std::vector<int> context_of(context_.size(), -1), numerical_of(numerical_.size(), -1);
    for (size_t c = 0; c < fields.size(); ++c) {
      const int col = static_cast<int>(c);
      switch (field_role(DatasetKind::Interactions, *fields[c])) {
        case FieldRole::UserId: user_col = col; break;
        case FieldRole::ItemId: item_col = col; break;
        case FieldRole::Timestamp: ts_col = col; ts_field = fields[c]; break;
        case FieldRole::EventType: event_col = col; break;
        case FieldRole::EventValue: value_col = col; value_field = fields[c]; break;
        case FieldRole::Impression: impression_col = col; break;
        case FieldRole::Categorical:
          for (size_t k = 0; k < context_.size(); ++k)
            if (context_[k].name == fields[c]->name) context_of[k] = col;
          break;
        case FieldRole::Numerical:
          for (size_t k = 0; k < numerical_.size(); ++k)
            if (numerical_[k] == fields[c]->name) numerical_of[k] = col;
          break;
        default: break;
      }
    }
    const uint32_t no_event_type = event_col < 0 ? event_types.insert("") : 0;

    // Two stages on two threads: a parser reads the CSV, checks and parses each row's fields and
    // hands the rows over in batches; this thread takes the batches in order, assigns the user and
    // item indices and adds the rows to the sort. Each vocabulary belongs to one thread and grows
    // in row order, so indices stay in order of first appearance and the output does not depend
    // on timing.
    Columns columns;
    columns.user = user_col;
    columns.item = item_col;
    columns.timestamp = ts_col;
    columns.event = event_col;
    columns.value = value_col;
    columns.impression = impression_col;
    columns.timestamp_field = ts_field;
    columns.value_field = value_field;
    columns.context = context_of;
    columns.numerical = numerical_of;
    columns.fields = &fields;
    columns.strings_per_row = 2 + (impression_col >= 0);
    columns.event_types = &event_types;
    columns.no_event_type = no_event_type;
    for (Context& c : context_) columns.context_vocabularies.push_back(&c.vocabulary);

    BatchQueue queue;
    std::jthread parser([&] { parse_rows(in, columns, queue); });
    struct CancelOnExit {
      BatchQueue& queue;
      ~CancelOnExit() { queue.cancel(); }  // lets the parser stop before the join
    } cancel_on_exit{queue};

    std::vector<std::string_view> impression;
    std::vector<uint32_t> impression_items;
    const size_t P = payload_words();
    uint32_t last_user = kNoRow;
    for (;;) {
      ParsedRows* batch = queue.take_full();
      const ParsedRows& b = *batch;
      const size_t S = columns.strings_per_row;
      auto text = [&](size_t row, size_t j) {
        const uint32_t begin = row * S + j == 0 ? 0 : b.ends[row * S + j - 1];
        return std::string_view(b.text.data() + begin, b.ends[row * S + j] - begin);
      };
      if (next_row_ + b.count >= UINT32_MAX) {
        throw Error(fmt::format("{} interactions: more than this build's limit of 2^32 - 1",
                                next_row_ + b.count));
      }
      size_t bad = 0;
      // Fetch item slots a few rows ahead.
      constexpr size_t kPrefetch = 32;
      for (size_t i = 0; i < std::min(kPrefetch, b.count); ++i) items.prefetch(b.item_keys[i]);
      constexpr size_t kUserPrefetch = 4;  // users change every few rows
      const auto& changes = b.user_changes;
      for (size_t c = 0; c < std::min(kUserPrefetch, changes.size()); ++c) users.prefetch(changes[c].second);
      size_t change = 0;
      for (size_t i = 0; i < b.count; ++i) {
        while (bad < b.bad_rows.size() && b.bad_rows[bad].first == i) {
          budget.skip(BadRow(b.bad_rows[bad++].second));
        }
        if (i + kPrefetch < b.count) items.prefetch(b.item_keys[i + kPrefetch]);
        // Exports often group a user's events: a run of the same user is looked up once.
        if (change < changes.size() && changes[change].first == i) {
          if (change + kUserPrefetch < changes.size()) users.prefetch(changes[change + kUserPrefetch].second);
          last_user = users.insert(text(i, 0), changes[change++].second);
        }
        const uint32_t item = items.insert(text(i, 1), b.item_keys[i]);
        impression_items.clear();
        if (impression_col >= 0) {
          split_values(text(i, 2), impression);
          for (std::string_view v : impression) impression_items.push_back(items.insert(v));
        }
        const InteractionKey key{b.timestamps[i], last_user, item, b.event_types[i], next_row_++};
        sorter_->add(key, b.payload.data() + i * P, impression_items);
      }
      rows_read_ += b.count;
      while (bad < b.bad_rows.size()) budget.skip(BadRow(b.bad_rows[bad++].second));
      const bool last = b.last;
      const std::exception_ptr failure = b.failure;
      if (on_progress) on_progress(b.bytes_consumed);
      queue.put_free(batch);
      if (failure) std::rethrow_exception(failure);
      if (last) break;
    }
  }

  // Merges the sorted rows, the existing dataset's first, into the columns: ordered by (user,
  // timestamp, item, event type), exact duplicates dropped (the later row wins, so an incremental
  // batch replaces what it repeats).
  void write(const fs::path& dir, uint32_t num_users, Json& meta, Json& vocabulary_sizes,
             ImportReport& report) {
    // Copying the columns into the page cache is most of this phase: two threads do it.
    ColumnWriterPool writers(2);
    MergedColumn<uint32_t> user(dir / "interactions.user.col", writers),
        item(dir / "interactions.item.col", writers),
        event_type(dir / "interactions.event_type.col", writers);
    MergedColumn<int64_t> timestamp(dir / "interactions.timestamp.col", writers);
    MergedColumn<float> event_value(dir / "interactions.event_value.col", writers);
    std::vector<std::unique_ptr<MergedColumn<uint32_t>>> context;
    std::vector<std::unique_ptr<MergedColumn<float>>> numerical;
    Json names = Json::array();
    for (size_t k = 0; k < context_.size(); ++k) {
      const std::string prefix = fmt::format("interactions.context.{}", k);
      write_strings(dir, prefix + ".vocabulary", context_[k].vocabulary);
      vocabulary_sizes[prefix] = context_[k].vocabulary.size();
      context.push_back(std::make_unique<MergedColumn<uint32_t>>(dir / (prefix + ".values.col"), writers));
      names.push_back(context_[k].name);
    }
    meta["context"] = names;
    names = Json::array();
    for (size_t k = 0; k < numerical_.size(); ++k) {
      numerical.push_back(std::make_unique<MergedColumn<float>>(
          dir / fmt::format("interactions.numerical.{}.col", k), writers));
      names.push_back(numerical_[k]);
    }
    meta["numerical"] = names;
    meta["impressions"] = has_impressions_;
    std::unique_ptr<MergedColumn<uint64_t>> impression_offsets;
    std::unique_ptr<MergedColumn<uint32_t>> impression_items;
    if (has_impressions_) {
      impression_offsets = std::make_unique<MergedColumn<uint64_t>>(
          dir / "interactions.impression_offsets.col", writers);
      impression_items = std::make_unique<MergedColumn<uint32_t>>(
          dir / "interactions.impression_items.col", writers);
      impression_offsets->push(uint64_t{0});
    }
    // Joins the writer thread before the columns it writes go, however this ends.
    struct StopOnExit {
      ColumnWriterPool& writers;
      ~StopOnExit() { writers.stop(); }
    } stop_on_exit{writers};

    std::vector<uint64_t> user_offsets(uint64_t{num_users} + 1, 0);
    uint64_t stored = 0, impressions_total = 0;
    const size_t C = context_.size();
    sorter_->merge([&](const SortedRun& run) {
      const InteractionKey& k = run.key();
      const uint32_t* payload = run.payload();
      user.push(k.user);
      item.push(k.item);
      timestamp.push(k.timestamp);
      event_type.push(k.event_type);
      event_value.push(bits_float(payload[0]));
      for (size_t c = 0; c < C; ++c) context[c]->push(payload[1 + c]);
      for (size_t x = 0; x < numerical.size(); ++x) numerical[x]->push(bits_float(payload[1 + C + x]));
      if (has_impressions_) {
        const std::span<const uint32_t> shown = run.impressions();
        impression_items->push(shown);
        impressions_total += shown.size();
        impression_offsets->push(impressions_total);
      }
      ++user_offsets[k.user + 1];
      ++stored;
    });
    writers.finish();
    for (auto* c : {&user, &item, &event_type}) c->finish();
    timestamp.finish();
    event_value.finish();
    for (auto& c : context) c->finish();
    for (auto& x : numerical) x->finish();
    if (has_impressions_) {
      impression_offsets->finish();
      impression_items->finish();
    }
    for (uint32_t u = 0; u < num_users; ++u) user_offsets[u + 1] += user_offsets[u];
    write_column<uint64_t>(dir / "interactions.user_offsets.col", user_offsets);

    const uint64_t total = next_row_;  // the existing rows and the new ones
    report.interactions = stored;
    report.duplicates = total - stored;
    report.runs_spilled = sorter_->stats().runs_spilled;
    report.merge_passes = sorter_->stats().merge_passes;
    report.bytes_spilled = sorter_->stats().bytes_spilled;
    report.sort_seconds = sorter_->stats().last_sort_seconds;
  }

  uint64_t rows_read() const { return rows_read_; }

 private:
  struct Context {
    std::string name;
    IdMap vocabulary;
  };

  size_t payload_words() const { return 1 + context_.size() + numerical_.size(); }

  bool has_impressions_ = false;
  std::vector<Context> context_;
  std::vector<std::string> numerical_;
  std::unique_ptr<InteractionSorter> sorter_;
  uint32_t next_row_ = 0;
  uint64_t rows_read_ = 0;
};

// ---- the directory -------------------------------------------------------------------------

// Parent directories created for `out`, removed again when the import fails.
class CreatedParents {
 public:
  explicit CreatedParents(const fs::path& dir) {
    fs::path p = dir;
    while (!p.empty() && !fs::exists(p)) {
      created_.push_back(p);
      p = p.parent_path();
    }
    if (!created_.empty()) fs::create_directories(dir);
  }
  ~CreatedParents() {
    if (kept_) return;
    std::error_code ignored;
    for (const fs::path& p : created_) fs::remove(p, ignored);  // innermost first; only if empty
  }
  void keep() { kept_ = true; }

 private:
  std::vector<fs::path> created_;
  bool kept_ = false;
};

bool is_dataset_dir(const fs::path& dir) { return fs::exists(dir / "meta.json"); }

struct SchemaChoice {
  std::optional<Schema> schema;
  std::string source;  // the file it came from, or "inferred"
};

bool same_fields(const Schema& a, const Schema& b) {
  if (a.fields.size() != b.fields.size()) return false;
  std::unordered_map<std::string, const SchemaField*> by_name;
  for (const SchemaField& g : b.fields) by_name.emplace(field_name_key(g.name), &g);
  for (const SchemaField& f : a.fields) {
    const auto found = by_name.find(field_name_key(f.name));
    const SchemaField* g = found == by_name.end() ? nullptr : found->second;
    if (g == nullptr || g->type != f.type || g->nullable != f.nullable ||
        g->categorical != f.categorical || g->textual != f.textual) {
      return false;
    }
  }
  return true;
}

SchemaChoice choose_schema(DatasetKind kind, const ImportOptions& options, const Dataset* existing) {
  SchemaChoice choice;
  std::optional<Schema> stored;
  std::string stored_source;
  if (existing != nullptr) {
    const std::string& text = kind == DatasetKind::Interactions ? existing->interactions_schema
                              : kind == DatasetKind::Users      ? existing->users_schema
                                                                : existing->items_schema;
    if (!text.empty()) {
      stored_source = (existing->dir / "schema" / (std::string(kind_name(kind)) + ".json")).string();
      stored = parse_schema(text, kind, stored_source);
    }
  }
  if (!options.schema_dir.empty()) {
    const fs::path path = options.schema_dir / (std::string(kind_name(kind)) + ".json");
    if (fs::exists(path)) {
      choice.schema = parse_schema(read_file(path), kind, path.string());
      choice.source = path.string();
      if (stored && !same_fields(*stored, *choice.schema)) {
        throw Error(fmt::format("{}: differs from the dataset's schema {}; an incremental import "
                                "keeps the schema, a full import (--mode full --overwrite) changes it",
                                path.string(), stored_source));
      }
      return choice;
    }
  }
  if (stored) {
    choice.schema = std::move(stored);
    choice.source = stored_source;
  }
  return choice;
}

// Opens a CSV and settles its schema: the chosen one, or one inferred from its header and first
// rows (then checked like a given one).
std::unique_ptr<CsvInput> open_csv(const std::vector<fs::path>& parts, DatasetKind kind,
                                   SchemaChoice& choice, size_t block_size) {
  auto in = std::make_unique<CsvInput>(parts, kind, block_size,
                                       choice.schema ? 1 : kInferenceSampleRows);
  check_required_columns(*in, kind);
  if (!choice.schema) {
    choice.schema = infer_schema(kind, in->header(), in->sample());
    choice.source = fmt::format("inferred from {}", parts.front().string());
    check_schema(*choice.schema, kind, choice.source);
  }
  return in;
}

}  // namespace

uint64_t default_import_memory_limit() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return uint64_t{1} << 30;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 4;
}

ImportReport import_dataset(const ImportOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  ImportReport report;
  fs::path out = options.out.lexically_normal();
  if (out.empty()) throw Error("import: no output directory given (--out DATASET_DIR)");
  if (!out.has_filename()) out = out.parent_path();
  if (out.filename() == "." || out.filename() == "..") out = fs::absolute(out).lexically_normal();
  if (out.parent_path().empty()) out = fs::path(".") / out;

  const bool incremental = options.mode == ImportMode::Incremental;
  // One writer per dataset: without the lock, two incremental imports both read the old dataset
  // and the second rename drops the first one's rows.
  CreatedParents parents(out.parent_path());
  const DirectoryLock lock(out, incremental ? "this incremental import" : "this import");
  if (incremental || (options.overwrite && is_dataset_dir(out))) check_only_dataset_entries(out, "an import");
  if (!incremental && options.interactions.empty()) {
    throw Error("import: a full import needs the interactions file (--interactions FILE)");
  }
  std::vector<fs::path> parts[3];  // interactions, users, items
  for (int k = 0; k < 3; ++k) {
    const fs::path& p = k == 0 ? options.interactions : k == 1 ? options.users : options.items;
    if (!p.empty()) parts[k] = expand_input(p);
  }
  report.memory_limit = options.memory_limit > 0 ? options.memory_limit : default_import_memory_limit();
  if (!options.schema_dir.empty() && !fs::is_directory(options.schema_dir)) {
    throw Error(fmt::format("{}: the schema directory does not exist", options.schema_dir.string()));
  }

  std::optional<Dataset> existing;
  if (incremental) {
    if (!fs::exists(out)) {
      throw Error(fmt::format("{}: no dataset to add to; create it with a full import first (--mode "
                              "full)",
                              out.string()));
    }
    existing = Dataset::open(out);
  } else if (fs::exists(out)) {
    if (!options.overwrite) {
      throw Error(fmt::format("{}: already exists; pass --overwrite to replace it, or --mode "
                              "incremental to add to it",
                              out.string()));
    }
    const bool empty_dir = fs::is_directory(out) && fs::is_empty(out);
    if (!empty_dir && !is_dataset_dir(out)) {
      throw Error(fmt::format("{}: exists and is not a tastebud dataset; refusing to replace it",
                              out.string()));
    }
  }
  const Dataset* old = existing ? &*existing : nullptr;

  SchemaChoice schemas[3] = {choose_schema(DatasetKind::Interactions, options, old),
                             choose_schema(DatasetKind::Users, options, old),
                             choose_schema(DatasetKind::Items, options, old)};
  SchemaChoice& interactions_schema = schemas[0];
  SchemaChoice& users_schema = schemas[1];
  SchemaChoice& items_schema = schemas[2];

  BadRowBudget budget(options);
  IdMap users = old ? IdMap(old->user_ids) : IdMap();
  IdMap items = old ? IdMap(old->item_ids) : IdMap();
  IdMap event_types = old ? IdMap(old->event_types) : IdMap();
  const uint32_t old_users = users.size(), old_items = items.size();

  // Open every file first, so that header problems surface before any long read.
  std::unique_ptr<CsvInput> users_in, items_in, interactions_in;
  if (!parts[1].empty())
    users_in = open_csv(parts[1], DatasetKind::Users, users_schema, options.block_size);
  if (!parts[2].empty())
    items_in = open_csv(parts[2], DatasetKind::Items, items_schema, options.block_size);
  if (!parts[0].empty()) {
    interactions_in = open_csv(parts[0], DatasetKind::Interactions, interactions_schema,
                               options.block_size);
  }

  // The dataset is built beside `out` (what killed imports left there goes first); the sort's
  // runs spill into it and are gone before it is swapped in.
  DirectoryReplacement replacement(out);
  const fs::path& dir = replacement.path();
  const fs::path spill_dir = dir / "spill";
  fs::create_directory(spill_dir);

  const Schema no_fields;
  MetadataBuilder user_metadata(DatasetKind::Users,
                                users_schema.schema ? *users_schema.schema : no_fields);
  MetadataBuilder item_metadata(DatasetKind::Items,
                                items_schema.schema ? *items_schema.schema : no_fields);
  InteractionsBuilder interactions(
      interactions_schema.schema ? *interactions_schema.schema : no_fields, report.memory_limit / 2,
      spill_dir);
  if (old) {
    user_metadata.load_existing(old->users, old->num_users());
    item_metadata.load_existing(old->items, old->num_items());
    interactions.load_existing(old->interactions);
  }
  if (users_in) user_metadata.read(*users_in, *users_schema.schema, users_schema.source, users, budget);
  if (items_in) item_metadata.read(*items_in, *items_schema.schema, items_schema.source, items, budget);
  if (interactions_in) {
    const uint64_t total = interactions_in->bytes_total();
    if (options.on_progress) {
      interactions.on_progress = [&options, total](uint64_t bytes) { options.on_progress(bytes, total); };  // total by value: it ends with this block
    }
    interactions.read(*interactions_in, *interactions_schema.schema, interactions_schema.source,
                      users, items, event_types, budget);
    report.interactions_bytes = total;
    if (interactions.rows_read() == 0) {
      throw Error(fmt::format("{}: no usable rows: every data row was bad and skipped",
                              options.interactions.string()));
    }
  }
  if (event_types.size() == 0) event_types.insert("");
  const auto read_done = std::chrono::steady_clock::now();
  report.read_seconds = std::chrono::duration<double>(read_done - started).count();

  fs::create_directory(dir / "schema");

  Json meta;
  meta["format"] = "tastebud-dataset";
  meta["version"] = kDatasetFormatVersion;
  meta["num_users"] = users.size();
  meta["num_items"] = items.size();
  Json vocabulary_sizes = Json::object();
  Json interactions_meta, users_meta, items_meta;
  interactions.write(dir, users.size(), interactions_meta, vocabulary_sizes, report);
  fs::remove_all(spill_dir);
  meta["num_interactions"] = report.interactions;
  meta["num_event_types"] = event_types.size();
  user_metadata.write(dir, users.size(), users_meta, vocabulary_sizes);
  item_metadata.write(dir, items.size(), items_meta, vocabulary_sizes);
  write_strings(dir, "user_ids", users);
  write_strings(dir, "item_ids", items);
  write_strings(dir, "event_types", event_types);
  meta["vocabulary_sizes"] = vocabulary_sizes;
  meta["interactions"] = interactions_meta;
  meta["users"] = users_meta;
  meta["items"] = items_meta;

  report.rows_read = interactions.rows_read();
  report.bad_rows_skipped = budget.skipped();
  report.users = users.size();
  report.items = items.size();
  report.new_users = users.size() - old_users;
  report.new_items = items.size() - old_items;

  Json history = Json::array();
  if (old) {
    try {
      std::ifstream in(old->dir / "meta.json");
      const Json previous = Json::parse(in);
      if (previous.contains("imports")) history = previous["imports"];
    } catch (const Json::exception&) {
      // The history is informative only; Dataset::open already accepted the dataset.
    }
  }
  history.push_back({{"mode", incremental ? "incremental" : "full"},
                     {"time", static_cast<int64_t>(std::time(nullptr))},
                     {"interactions", options.interactions.string()},
                     {"users", options.users.string()},
                     {"items", options.items.string()},
                     {"rows_read", report.rows_read},
                     {"bad_rows_skipped", report.bad_rows_skipped},
                     {"duplicates", report.duplicates}});
  meta["imports"] = history;

  for (const SchemaChoice* s : {&interactions_schema, &users_schema, &items_schema}) {
    if (!s->schema) continue;
    const DatasetKind kind = s == &interactions_schema ? DatasetKind::Interactions
                             : s == &users_schema      ? DatasetKind::Users
                                                       : DatasetKind::Items;
    write_text_file(dir / "schema" / (std::string(kind_name(kind)) + ".json"),
                    schema_to_json(*s->schema));
  }
  write_text_file(dir / "meta.json", meta.dump(2) + "\n");
  if (old) carry_over_dataset_files(old->dir, dir);  // the deletion audit log (delete_users.h)

  existing.reset();  // unmap the old columns before their directory goes
  replacement.commit();
  parents.keep();
  const auto finished = std::chrono::steady_clock::now();
  report.seconds = std::chrono::duration<double>(finished - started).count();
  report.write_seconds = report.seconds - report.read_seconds - report.sort_seconds;
  return report;
}

}  // namespace tastebud::datasets
