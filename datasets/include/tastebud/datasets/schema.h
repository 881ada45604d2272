// Dataset schemas as Avro records (JSON), as described in shared/PERSONALIZE.md: parsing,
// checking against the reserved fields, writing back, and inference from a CSV header and values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tastebud::datasets {

enum class DatasetKind { Interactions, Users, Items };

// "interactions", "users", "items": the schema file name without ".json" and the prefix of the
// column files.
std::string_view kind_name(DatasetKind kind);

enum class FieldType { String, Int, Long, Float, Double, Boolean };
std::string_view type_name(FieldType type);

// Field and column names match without regard to case, as CSV headers are written by hand.
bool same_field_name(std::string_view a, std::string_view b);
// The key two names that same_field_name matches share (upper case): for hash lookups, so that
// checks over a header of 100,000 columns stay linear.
std::string field_name_key(std::string_view name);

struct SchemaField {
  std::string name;
  FieldType type = FieldType::String;
  bool nullable = false;
  bool categorical = false;  // string fields: encoded as a (possibly '|' multi-valued) vocabulary
  bool textual = false;      // items only, at most one: hashed into tokens
};

struct Schema {
  std::string name;  // "Interactions", "Users", "Items"
  std::string name_space = "tastebud";
  std::string version = "1.0";
  std::vector<SchemaField> fields;

  // Field names match without regard to case, as CSV headers are written by hand.
  const SchemaField* find(std::string_view field_name) const;
  bool empty() const { return fields.empty(); }
};

// How a field is stored, given its kind of dataset.
enum class FieldRole {
  UserId,
  ItemId,
  Timestamp,          // interactions TIMESTAMP
  EventType,
  EventValue,
  Impression,
  CreationTimestamp,  // items
  Categorical,        // metadata or interaction context
  Numerical,          // numbers and booleans, stored as float
  Textual,
  Ignored,            // RECOMMENDATION_ID: one value per request, nothing to learn from
};
FieldRole field_role(DatasetKind kind, const SchemaField& field);

// Parses an Avro record schema; `source` (the file name) goes into every message. Checks that the
// required fields are there with usable types; throws tastebud::Error saying what is wrong.
Schema parse_schema(std::string_view json_text, DatasetKind kind, const std::string& source);
std::string schema_to_json(const Schema& schema);
// Throws when the schema lacks a required field, types a reserved field wrongly, or has more than
// one textual field.
void check_schema(const Schema& schema, DatasetKind kind, const std::string& source);

// Types from the header names (reserved fields) and sampled values (all other fields): numbers
// become "long" or "double", true/false "boolean", anything else a categorical string; in Items, a
// field named like DESCRIPTION or holding long free text becomes the one textual field. Fields
// other than the required ones are nullable, since a sample cannot prove a value is never missing.
Schema infer_schema(DatasetKind kind, const std::vector<std::string>& header,
                    const std::vector<std::vector<std::string>>& sample_rows);

}  // namespace tastebud::datasets
