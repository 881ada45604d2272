// The CSV reader (RFC 4180, blocks of any size) and schema inference over what it reads. The only
// exceptions a CSV may raise are tastebud::Error (BadRow for one row); anything else is a finding.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "tastebud/datasets/csv.h"
#include "tastebud/datasets/schema.h"
#include "tastebud/error.h"

using namespace tastebud;
using namespace tastebud::datasets;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz::scratch_file(data, size, "input.csv");
  for (size_t block : {size_t{7}, size_t{4096}}) {
    std::vector<std::string> header;
    std::vector<std::vector<std::string>> sample;
    try {
      CsvReader reader(path, block);
      CsvRecord record;
      for (int rows = 0; rows < 10000; ++rows) {
        try {
          if (!reader.next(record)) break;
        } catch (const BadRow&) {
          continue;  // the reader moved past the row
        }
        std::vector<std::string> fields(record.fields.begin(), record.fields.end());
        if (header.empty()) header = fields;
        else if (sample.size() < 20 && fields.size() == header.size()) sample.push_back(fields);
        for (size_t f = 0; f < record.fields.size(); ++f) (void)reader.field_label(f);
      }
    } catch (const Error&) {
    }
    for (DatasetKind kind : {DatasetKind::Interactions, DatasetKind::Users, DatasetKind::Items}) {
      try {
        infer_schema(kind, header, sample);
      } catch (const Error&) {
      }
    }
  }
  return 0;
}
