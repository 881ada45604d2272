// `tastebud import`: the three Personalize-layout CSV files in, a dataset directory out.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace tastebud::datasets {

enum class ImportMode {
  Full,         // the dataset is built from these files alone (replacing one needs `overwrite`)
  Incremental,  // these files are merged into the existing dataset at `out`
};

// A quarter of the machine's physical memory: the memory limit of an import that names none.
uint64_t default_import_memory_limit();

struct ImportOptions {
  // Each a file, a directory of part files or a glob of them, plain or .gz (see expand_input in
  // input_files.h); the parts are read as one file in name order.
  std::filesystem::path interactions;  // required in full mode
  std::filesystem::path users;         // empty: none
  std::filesystem::path items;         // empty: none
  // Holds interactions.json, users.json, items.json (each optional). A schema not given is the
  // existing dataset's (incremental) or inferred from the CSV.
  std::filesystem::path schema_dir;
  std::filesystem::path out;
  ImportMode mode = ImportMode::Full;
  bool overwrite = false;     // full mode: replace an existing dataset at `out`
  uint64_t max_bad_rows = 0;  // rows with a problem that may be skipped before the import fails
  std::function<void(const std::string&)> on_bad_row;  // told each skipped row's message
  // Told, as the interactions CSV is read, how many of its bytes are done and its size (the
  // command line's progress line); from the importing thread.
  std::function<void(uint64_t bytes_read, uint64_t bytes_total)> on_progress;
  size_t block_size = size_t{8} << 20;                 // CSV read block
  // Bytes the import may hold for its interaction rows: half goes to the sort's buffer and merge
  // (beyond it, sorted runs spill to disk beside `out` and are merged), the rest is left for the
  // id maps (O(users + items)), the read blocks and the column writers. 0: the default
  // (default_import_memory_limit). Any value works, down to a few KiB (tests); the dataset is the
  // same whatever the limit.
  uint64_t memory_limit = 0;
};

struct ImportReport {
  uint64_t rows_read = 0;      // interaction rows read from the CSV (skipped rows excluded)
  uint64_t interactions = 0;   // stored in the dataset after merging and removing duplicates
  uint64_t duplicates = 0;     // events dropped as exact duplicates
  uint64_t bad_rows_skipped = 0;
  uint32_t users = 0, items = 0;
  uint32_t new_users = 0, new_items = 0;  // beyond the existing dataset (all of them in full mode)
  uint64_t interactions_bytes = 0;        // size of the interactions files on disk (.gz compressed)
  double seconds = 0;
  // Where the time went: reading and encoding the CSVs (sorting and spilling full buffers
  // included), sorting the last buffer, merging and writing and syncing the columns.
  double read_seconds = 0, sort_seconds = 0, write_seconds = 0;
  uint64_t memory_limit = 0;   // the limit the import ran under
  uint64_t runs_spilled = 0;   // sorted runs written to disk (0: the sort stayed in memory)
  uint64_t merge_passes = 0;   // intermediate merges of runs
  uint64_t bytes_spilled = 0;
};

// Builds the dataset in a temporary directory next to `out` and renames it into place only when it
// is complete, so a failure leaves `out` as it was (absent or the previous dataset). Throws
// tastebud::Error; input errors name the file, the line and the field.
ImportReport import_dataset(const ImportOptions& options);

}  // namespace tastebud::datasets
