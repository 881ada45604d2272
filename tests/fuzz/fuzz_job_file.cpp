// The training job file (TOML: flag names as keys, [[events]] tables), through the command line
// as `tastebud train --config FILE` over a directory that is not a dataset: every problem of the
// file is a tastebud::Error or a CLI11 usage error naming the key; the run then stops at the
// dataset, before any training.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "fuzz_util.h"
#include "host/commands.h"
#include "tastebud/error.h"

using namespace tastebud;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path file = fuzz::scratch_file(data, size, "job.toml");
  static const std::filesystem::path not_a_dataset = [&] {
    const std::filesystem::path d = file.parent_path() / "not-a-dataset";
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::string out = (file.parent_path() / "model").string();
  std::vector<std::string> args{"tastebud", "train", "--config", file.string(), "--data", not_a_dataset.string(),
                                "--out", out};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  CLI::App app;
  host::add_train_command(app);
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::Error&) {
  } catch (const Error&) {
  }
  return 0;
}
