#include "tastebud/datasets/schema.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tastebud/datasets/encode.h"
#include "tastebud/error.h"
#include "tastebud/json_input.h"

namespace tastebud::datasets {

bool same_field_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) ==
                  std::toupper(static_cast<unsigned char>(y));
         });
}

std::string field_name_key(std::string_view name) {
  std::string out(name);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

namespace {

std::string upper(std::string_view s) { return field_name_key(s); }

bool parse_type_name(std::string_view name, FieldType* type) {
  static constexpr std::pair<std::string_view, FieldType> kTypes[] = {
      {"string", FieldType::String}, {"int", FieldType::Int},       {"long", FieldType::Long},
      {"float", FieldType::Float},   {"double", FieldType::Double}, {"boolean", FieldType::Boolean}};
  for (const auto& [n, t] : kTypes) {
    if (n == name) {
      *type = t;
      return true;
    }
  }
  return false;
}

bool is_number(FieldType t) {
  return t == FieldType::Int || t == FieldType::Long || t == FieldType::Float ||
         t == FieldType::Double;
}

std::string_view schema_record_name(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::Interactions: return "Interactions";
    case DatasetKind::Users: return "Users";
    case DatasetKind::Items: return "Items";
  }
  return "";
}

std::string_view id_field(DatasetKind kind) {
  return kind == DatasetKind::Items ? "ITEM_ID" : "USER_ID";
}

}  // namespace

std::string_view kind_name(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::Interactions: return "interactions";
    case DatasetKind::Users: return "users";
    case DatasetKind::Items: return "items";
  }
  return "";
}

std::string_view type_name(FieldType type) {
  switch (type) {
    case FieldType::String: return "string";
    case FieldType::Int: return "int";
    case FieldType::Long: return "long";
    case FieldType::Float: return "float";
    case FieldType::Double: return "double";
    case FieldType::Boolean: return "boolean";
  }
  return "";
}

const SchemaField* Schema::find(std::string_view field_name) const {
  for (const SchemaField& f : fields)
    if (same_field_name(f.name, field_name)) return &f;
  return nullptr;
}

FieldRole field_role(DatasetKind kind, const SchemaField& field) {
  const std::string name = upper(field.name);
  if (name == "USER_ID" && kind != DatasetKind::Items) return FieldRole::UserId;
  if (name == "ITEM_ID" && kind != DatasetKind::Users) return FieldRole::ItemId;
  if (kind == DatasetKind::Interactions) {
    if (name == "TIMESTAMP") return FieldRole::Timestamp;
    if (name == "EVENT_TYPE") return FieldRole::EventType;
    if (name == "EVENT_VALUE") return FieldRole::EventValue;
    if (name == "IMPRESSION") return FieldRole::Impression;
    if (name == "RECOMMENDATION_ID") return FieldRole::Ignored;
  }
  if (kind == DatasetKind::Items && name == "CREATION_TIMESTAMP") return FieldRole::CreationTimestamp;
  if (field.type == FieldType::String) {
    if (field.textual && kind == DatasetKind::Items) return FieldRole::Textual;
    return FieldRole::Categorical;
  }
  return FieldRole::Numerical;
}

void check_schema(const Schema& schema, DatasetKind kind, const std::string& source) {
  auto fail = [&](std::string_view field, const std::string& what) {
    throw Error(fmt::format("{}: field {}: {}", source, field, what));
  };
  std::vector<std::string_view> required = {id_field(kind)};
  if (kind == DatasetKind::Interactions) required = {"USER_ID", "ITEM_ID", "TIMESTAMP"};
  for (std::string_view name : required) {
    const SchemaField* f = schema.find(name);
    if (f == nullptr) {
      throw Error(fmt::format("{}: field {}: required field is missing from the {} schema", source,
                              name, kind_name(kind)));
    }
    if (f->nullable) fail(name, "a required field cannot be nullable");
  }
  int textual = 0;
  std::unordered_set<std::string> names;
  for (size_t i = 0; i < schema.fields.size(); ++i) {
    const SchemaField& f = schema.fields[i];
    if (!names.insert(field_name_key(f.name)).second) fail(f.name, "appears twice");
    const FieldRole role = field_role(kind, f);
    switch (role) {
      case FieldRole::UserId:
      case FieldRole::ItemId:
      case FieldRole::EventType:
      case FieldRole::Impression:
        if (f.type != FieldType::String) fail(f.name, "expected type \"string\"");
        break;
      case FieldRole::Timestamp:
      case FieldRole::CreationTimestamp:
        if (f.type != FieldType::Long && f.type != FieldType::Int)
          fail(f.name, "expected type \"long\" (Unix seconds)");
        break;
      case FieldRole::EventValue:
        if (!is_number(f.type)) fail(f.name, "expected type \"float\" (or a union with \"null\")");
        break;
      default: break;
    }
    if (f.textual) {
      if (kind != DatasetKind::Items) fail(f.name, "only Items may have a textual field");
      if (f.type != FieldType::String) fail(f.name, "a textual field must be a string");
      if (++textual > 1) fail(f.name, "Items may have at most one textual field");
    }
    if (f.categorical && f.type != FieldType::String) fail(f.name, "a categorical field must be a string");
  }
}

// A member of the record or of one field, of the type it must have (nlohmann's own type errors
// would name neither the file nor the field).
std::string string_member(const nlohmann::json& object, const char* key, std::string fallback,
                          const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) throw Error(fmt::format("{}: \"{}\" must be a string, not {}", where, key, it->dump()));
  return it->get<std::string>();
}

bool bool_member(const nlohmann::json& object, const char* key, const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return false;
  if (!it->is_boolean()) throw Error(fmt::format("{}: \"{}\" must be true or false, not {}", where, key, it->dump()));
  return it->get<bool>();
}

Schema parse_schema(std::string_view json_text, DatasetKind kind, const std::string& source) {
  nlohmann::json doc;
  if (json_nested_deeper_than(json_text, kMaxJsonDepth))
    throw Error(fmt::format("{}: JSON nested deeper than {} levels", source, kMaxJsonDepth));
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e999
    throw Error(fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
  if (!doc.is_object() || string_member(doc, "type", "", source) != "record" || !doc.contains("fields") ||
      !doc["fields"].is_array()) {
    throw Error(fmt::format("{}: expected an Avro record: {{\"type\": \"record\", \"name\": ..., "
                            "\"fields\": [...]}}",
                            source));
  }
  Schema schema;
  schema.name = string_member(doc, "name", std::string(schema_record_name(kind)), source);
  schema.name_space = string_member(doc, "namespace", "tastebud", source);
  schema.version = string_member(doc, "version", "1.0", source);
  for (const auto& f : doc["fields"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("type")) {
      throw Error(fmt::format("{}: every field needs a \"name\" and a \"type\": {}", source, f.dump()));
    }
    SchemaField field;
    field.name = f["name"].get<std::string>();
    const nlohmann::json& type = f["type"];
    std::string type_text;
    if (type.is_string()) {
      type_text = type.get<std::string>();
    } else if (type.is_array()) {
      for (const auto& t : type) {
        if (!t.is_string()) {
          throw Error(fmt::format("{}: field {}: unsupported type {}: flat records only", source,
                                  field.name, type.dump()));
        }
        if (t == "null") {
          field.nullable = true;
        } else if (!type_text.empty()) {
          throw Error(fmt::format("{}: field {}: a union may join \"null\" with one type, not {}",
                                  source, field.name, type.dump()));
        } else {
          type_text = t.get<std::string>();
        }
      }
    }
    if (!parse_type_name(type_text, &field.type)) {
      throw Error(fmt::format("{}: field {}: unsupported type {}; expected string, int, long, float, "
                              "double, boolean or a union of one of them with \"null\"",
                              source, field.name, type.dump()));
    }
    const std::string where = fmt::format("{}: field {}", source, field.name);
    field.categorical = bool_member(f, "categorical", where);
    field.textual = bool_member(f, "textual", where);
    schema.fields.push_back(std::move(field));
  }
  check_schema(schema, kind, source);
  return schema;
}

std::string schema_to_json(const Schema& schema) {
  nlohmann::ordered_json doc;
  doc["type"] = "record";
  doc["name"] = schema.name;
  doc["namespace"] = schema.name_space;
  auto& fields = doc["fields"] = nlohmann::ordered_json::array();
  for (const SchemaField& f : schema.fields) {
    nlohmann::ordered_json field;
    field["name"] = f.name;
    if (f.nullable) {
      field["type"] = {"null", type_name(f.type)};
    } else {
      field["type"] = type_name(f.type);
    }
    if (f.categorical) field["categorical"] = true;
    if (f.textual) field["textual"] = true;
    fields.push_back(std::move(field));
  }
  doc["version"] = schema.version;
  return doc.dump(2) + "\n";
}

namespace {

// What the sampled values of one column look like.
struct ValueShape {
  bool any = false, all_int = true, all_number = true, all_bool = true;
  // Free text: long values with several words (a description).
  bool long_text = false;
  // Mostly unique strings of words (MovieLens's "Toy Story (1995)"): a categorical field would give
  // each its own value, so they are text; ids and codes without spaces are not.
  bool unique_text = false;
};

// Sampled values below this count say too little about uniqueness to call a column text.
constexpr uint64_t kMinUniqueTextValues = 20;

ValueShape value_shape(const std::vector<std::vector<std::string>>& rows, size_t c) {
  ValueShape shape;
  uint64_t length = 0, spaces = 0, spaced = 0, values = 0;
  std::unordered_set<std::string_view> distinct;
  for (const auto& row : rows) {
    if (c >= row.size()) continue;
    const std::string_view v = trim(row[c]);
    if (v.empty()) continue;
    shape.any = true;
    ++values;
    length += v.size();
    const auto n = static_cast<uint64_t>(std::count(v.begin(), v.end(), ' '));
    spaces += n;
    spaced += n > 0;
    distinct.insert(v);
    int64_t i;
    float x;
    bool b;
    if (shape.all_int && !parse_int64(v, &i)) shape.all_int = false;
    // "nan" and "inf" count as numbers here, so that the import then rejects them by name
    // instead of taking the column for text.
    if (shape.all_number && parse_float(v, &x) == NumberParse::NotANumber) shape.all_number = false;
    if (shape.all_bool && !parse_bool(v, &b)) shape.all_bool = false;
  }
  shape.long_text = values > 0 && length / values >= 40 && spaces / values >= 4;
  shape.unique_text = values >= kMinUniqueTextValues && distinct.size() * 10 >= values * 9 &&
                      length >= 10 * values && spaced * 2 >= values;
  return shape;
}

bool is_text(const ValueShape& v) { return !(v.any && (v.all_int || v.all_number || v.all_bool)); }

// Items' textual field: a DESCRIPTION, TEXT or SUMMARY column by name, else the first column of
// long free text, else the first of mostly unique strings of words; -1 when none.
int textual_column(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  for (size_t c = 0; c < header.size(); ++c) {
    const std::string name = upper(header[c]);
    if (name.find("DESCRIPTION") != std::string::npos || name == "TEXT" || name == "SUMMARY") return static_cast<int>(c);
  }
  int unique = -1;
  for (size_t c = 0; c < header.size(); ++c) {
    SchemaField probe;
    probe.name = header[c];
    probe.type = FieldType::String;
    if (field_role(DatasetKind::Items, probe) != FieldRole::Categorical) continue;
    const ValueShape v = value_shape(rows, c);
    if (!is_text(v)) continue;
    if (v.long_text) return static_cast<int>(c);
    if (v.unique_text && unique < 0) unique = static_cast<int>(c);
  }
  return unique;
}

}  // namespace

Schema infer_schema(DatasetKind kind, const std::vector<std::string>& header,
                    const std::vector<std::vector<std::string>>& sample_rows) {
  Schema schema;
  schema.name = schema_record_name(kind);
  const int textual = kind == DatasetKind::Items ? textual_column(header, sample_rows) : -1;
  for (size_t c = 0; c < header.size(); ++c) {
    SchemaField field;
    field.name = header[c];
    const std::string name = upper(header[c]);
    const bool required = name == id_field(kind) ||
                          (kind == DatasetKind::Interactions &&
                           (name == "USER_ID" || name == "ITEM_ID" || name == "TIMESTAMP"));
    field.nullable = !required;
    const FieldRole role = field_role(kind, field);
    if (role == FieldRole::Timestamp || role == FieldRole::CreationTimestamp) {
      field.type = FieldType::Long;
    } else if (role == FieldRole::EventValue) {
      field.type = FieldType::Float;
    } else if (role == FieldRole::Categorical || role == FieldRole::Numerical) {
      // The values decide: all numbers, all booleans, or text.
      const ValueShape v = value_shape(sample_rows, c);
      if (v.any && v.all_bool && !v.all_number) {
        field.type = FieldType::Boolean;
      } else if (v.any && v.all_int) {
        field.type = FieldType::Long;
      } else if (v.any && v.all_number) {
        field.type = FieldType::Double;
      } else {
        field.type = FieldType::String;
        field.textual = static_cast<int>(c) == textual;
        field.categorical = !field.textual;
      }
    }
    schema.fields.push_back(std::move(field));
  }
  return schema;
}

}  // namespace tastebud::datasets
