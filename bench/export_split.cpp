// Writes the training positives and the leave-one-out evaluation of a dataset as raw uint32
// arrays, so a peer implementation (bench/peers/) trains and ranks exactly what tastebud does.
// Also each user's training sequence for sequential peers (bench/peers/pytorch_sasrec.py):
// train_seq_offsets.u64 (num_users + 1) and train_seq_items.u32, CSR over users: the user's
// interaction rows that count (the EVENT_RULE arguments, as train's --event) and are not held out
// for evaluation, in the dataset's (user, timestamp) order, an
// immediate repeat of the same item merged into one.
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
  if (argc < 3) {
    std::fprintf(stderr, "usage: export_split DATASET_DIR OUT_DIR [EVENT_RULE...]  (rules as train --event)\n");
    return 2;
  }
  try {
    const auto dataset = tastebud::datasets::Dataset::open(argv[1]);
    tastebud::host::SplitOptions options;
    options.record_held_out_rows = true;
    for (int a = 3; a < argc; ++a) options.events.push_back(tastebud::host::parse_event_rule(argv[a]));
    const tastebud::host::EventWeights events(dataset, options.events);
    const tastebud::host::Split split = tastebud::host::make_split(dataset, options);
    const std::filesystem::path out = argv[2];
    std::filesystem::create_directories(out);
    write_array(out / "train_user.u32", split.train.user);
    write_array(out / "train_item.u32", split.train.item);
    write_array(out / "eval_user.u32", split.eval_users);
    write_array(out / "eval_item.u32", split.held_out_item);
    write_array(out / "eval_candidates.u32", split.candidates);
    // Interaction rows are sorted by (user, timestamp, item, event type) (datasets/FORMAT.md).
    const auto& rows = dataset.interactions;
    std::vector<uint64_t> seq_offsets(uint64_t{dataset.num_users()} + 1, 0);
    std::vector<uint32_t> seq_items;
    for (uint32_t u = 0; u < dataset.num_users(); ++u) {
      const uint64_t first = seq_items.size();
      for (uint64_t r = rows.user_offsets[u]; r < rows.user_offsets[u + 1]; ++r) {
        if (split.held_out_rows[r] != 0 || events.weight(rows, r) <= 0.0f) continue;
        if (seq_items.size() > first && seq_items.back() == rows.item[r]) continue;
        seq_items.push_back(rows.item[r]);
      }
      seq_offsets[u + 1] = seq_items.size();
    }
    write_array(out / "train_seq_offsets.u64", seq_offsets);
    write_array(out / "train_seq_items.u32", seq_items);
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
