// Every model-directory loader on the same bytes: model.bin and checkpoint.bin (tensor files),
// seen.bin and recipe.bin (for a catalog of 30 items, as the seeds have). A damaged file is a tastebud::Error ("corrupt: ..."); a crash, a read
// out of bounds, an allocation beyond the file or any other exception is a finding.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "host/model_dir.h"
#include "host/recipes.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"

using namespace tastebud;
using namespace tastebud::host;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz::scratch_file(data, size, "model.file");
  try {
    load_model(path);
  } catch (const Error&) {
  }
  try {
    std::string extra;
    load_checkpoint(path, &extra);
  } catch (const Error&) {
  }
  try {
    read_seen(path, 30);
  } catch (const Error&) {
  }
  try {
    read_recipe(path, 30);
  } catch (const Error&) {
  }
  return 0;
}
