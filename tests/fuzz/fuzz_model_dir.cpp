// A whole model directory on load: the input is split at NUL bytes into config.json,
// user_ids.json and item_ids.json beside a valid seen.bin and model.bin (a GMF of 3 users and
// 4 items). Whatever the JSON files hold, load_model_dir answers with a model or a tastebud::Error.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "host/inference.h"
#include "host/model_dir.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"

using namespace tastebud;
using namespace tastebud::host;

namespace {

std::filesystem::path model_dir() {
  const std::filesystem::path dir = fuzz::scratch_file(nullptr, 0, "unused").parent_path() / "model";
  std::filesystem::create_directories(dir);
  ModelConfig c;
  c.kind = ModelKind::kGMF;
  c.num_users = 3;
  c.num_items = 4;
  c.factors = 2;
  save_model(ModelParams::initialize(c, 1), dir / "model.bin");
  SeenItems seen;
  seen.offsets = {0, 2, 3, 3};
  seen.items = {1, 3, 0};
  write_seen(seen, dir / "seen.bin");
  return dir;
}

void put(const std::filesystem::path& path, std::string_view text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir = model_dir();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t a = input.find('\0'), b = a == std::string_view::npos ? a : input.find('\0', a + 1);
  put(dir / "config.json", input.substr(0, a));
  put(dir / "user_ids.json", a == std::string_view::npos ? "[\"u0\",\"u1\",\"u2\"]" : input.substr(a + 1, b - a - 1));
  put(dir / "item_ids.json", b == std::string_view::npos ? "[\"i0\",\"i1\",\"i2\",\"i3\"]" : input.substr(b + 1));
  try {
    load_model_dir(dir);
  } catch (const Error&) {
  }
  return 0;
}
