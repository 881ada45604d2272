// The users' and items' stage of an import (import.cpp orchestrates): metadata rows read from
// their CSV after the existing dataset's, the latest row of each user or item kept, and written as
// the dataset's categorical, numerical and textual columns.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "import_input.h"
#include "tastebud/datasets/columns.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/encode.h"

namespace tastebud::datasets::import_detail {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// Metadata rows in arrival order (existing rows first, then the CSV's) and, per user or item,
// which row is current: a later row with the same id replaces the earlier one.
class MetadataBuilder {
 public:
  MetadataBuilder(DatasetKind kind, const Schema& schema);

  void load_existing(const Metadata& m, uint32_t entities);

  void read(CsvInput& in, const Schema& schema, const std::string& schema_source, IdMap& ids,
            BadRowBudget& budget);

  void write(const fs::path& dir, uint32_t entities, Json& meta, Json& vocabulary_sizes) const;

  uint32_t rows_with_data() const;

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

}  // namespace tastebud::datasets::import_detail
