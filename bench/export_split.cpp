// Writes the training positives and the leave-one-out evaluation of a dataset as raw uint32
// arrays, so a peer implementation (bench/peers/) trains and ranks exactly what tastebud does.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/split.h"
#include "tastebud/error.h"

namespace {

template <class T>
void write_array(const std::filesystem::path& path, const std::vector<T>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
  if (!out) throw tastebud::Error("cannot write " + path.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: export_split DATASET_DIR OUT_DIR\n");
    return 2;
  }
  try {
    const auto dataset = tastebud::datasets::Dataset::open(argv[1]);
    const tastebud::host::Split split = tastebud::host::make_split(dataset, tastebud::host::SplitOptions{});
    const std::filesystem::path out = argv[2];
    std::filesystem::create_directories(out);
    write_array(out / "train_user.u32", split.train.user);
    write_array(out / "train_item.u32", split.train.item);
    write_array(out / "eval_user.u32", split.eval_users);
    write_array(out / "eval_item.u32", split.held_out_item);
    write_array(out / "eval_candidates.u32", split.candidates);
    const nlohmann::json meta{{"num_users", split.train.num_users},
                              {"num_items", split.train.num_items},
                              {"candidates_per_user", split.negatives_per_user}};
    std::ofstream(out / "meta.json") << meta.dump() << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "export_split: %s\n", e.what());
    return 1;
  }
  return 0;
}
