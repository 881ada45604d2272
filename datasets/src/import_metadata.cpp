#include "import_metadata.h"

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tastebud/datasets/columns.h"
#include "tastebud/error.h"

namespace tastebud::datasets::import_detail {

namespace fs = std::filesystem;

MetadataBuilder::MetadataBuilder(DatasetKind kind, const Schema& schema)
    : kind_(kind) {
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

void MetadataBuilder::load_existing(const Metadata& m, uint32_t entities) {
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

void MetadataBuilder::read(CsvInput& in, const Schema& schema, const std::string& schema_source, IdMap& ids,
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

void MetadataBuilder::write(const fs::path& dir, uint32_t entities, Json& meta, Json& vocabulary_sizes) const {
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

uint32_t MetadataBuilder::rows_with_data() const {
  return static_cast<uint32_t>(std::count_if(row_of_.begin(), row_of_.end(),
                                             [](uint32_t r) { return r != kNoRow; }));
}

}  // namespace tastebud::datasets::import_detail
