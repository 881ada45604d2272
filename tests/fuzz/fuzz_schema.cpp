// Avro-record schema JSON: every problem is a tastebud::Error naming the file and field; a schema
// that parses round-trips through schema_to_json.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tastebud/datasets/schema.h"
#include "tastebud/error.h"

using namespace tastebud;
using namespace tastebud::datasets;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (DatasetKind kind : {DatasetKind::Interactions, DatasetKind::Users, DatasetKind::Items}) {
    try {
      const Schema schema = parse_schema(text, kind, "fuzz.json");
      const Schema again = parse_schema(schema_to_json(schema), kind, "round trip");
      if (again.fields.size() != schema.fields.size()) std::abort();
    } catch (const Error&) {
    }
  }
  return 0;
}
