// A dataset whose interactions.item.col (or, with the first byte odd, interactions.user.col) is the
// input, beside a valid dataset of 3 users and 3 items: Dataset::open, the summary and
// verify_columns answer or throw tastebud::Error; an index out of its table never reaches a read.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "fuzz_util.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/summary.h"
#include "tastebud/error.h"

using namespace tastebud;
using namespace tastebud::datasets;

namespace {

std::filesystem::path dataset() {
  const std::filesystem::path root = fuzz::scratch_file(nullptr, 0, "unused").parent_path();
  const std::filesystem::path csv = root / "interactions.csv";
  std::ofstream(csv) << "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,10\nu2,i2,20\nu3,i3,30\nu1,i2,40\n";
  ImportOptions o;
  o.interactions = csv;
  o.out = root / "dataset";
  o.overwrite = true;
  import_dataset(o);
  return o.out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir = dataset();
  if (size == 0) return 0;
  const char* name = (data[0] & 1) ? "interactions.user.col" : "interactions.item.col";
  static std::string originals[2];
  std::string& original = originals[data[0] & 1];
  if (original.empty()) {
    std::ifstream in(dir / name, std::ios::binary);
    original.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir / name, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data) + 1, static_cast<std::streamsize>(size - 1));
  try {
    const Dataset d = Dataset::open(dir);
    verify_columns(dir);
    format_summary(d);
  } catch (const Error&) {
  }
  std::ofstream(dir / name, std::ios::binary | std::ios::trunc) << original;
  return 0;
}
