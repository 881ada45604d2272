// The interactions' stage of an import (import.cpp orchestrates): the CSV parsed on a thread of its
// own, rows handed to the external sort (external_sort.h) with the existing dataset's as a sorted
// run, then merged, duplicates dropped, and written as the dataset's interaction columns.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "external_sort.h"
#include "import_input.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/encode.h"

namespace tastebud::datasets::import_detail {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// The interactions read, sorted within the memory budget and merged with the existing dataset's.
class InteractionsBuilder {
 public:
  std::function<void(uint64_t bytes_read)> on_progress;  // after each batch of rows; may be empty

  // memory_budget bounds the sort (see InteractionSorter); its runs go to spill_dir.
  InteractionsBuilder(const Schema& schema, uint64_t memory_budget, const fs::path& spill_dir);

  void load_existing(const Interactions& old);

  void read(CsvInput& in, const Schema& schema, const std::string& schema_source, IdMap& users,
            IdMap& items, IdMap& event_types, BadRowBudget& budget);

  // Merges the sorted rows, the existing dataset's first, into the columns: ordered by (user,
  // timestamp, item, event type), exact duplicates dropped (the later row wins, so an incremental
  // batch replaces what it repeats).
  void write(const fs::path& dir, uint32_t num_users, Json& meta, Json& vocabulary_sizes,
             ImportReport& report);

  uint64_t rows_read() const { return rows_read_; }

 private:
  struct Context {
    std::string name;
    IdMap vocabulary;
  };

  size_t payload_words() const { return 1 + context_.size() + numerical_.size(); }

  bool has_impressions_ = false;
  std::vector<Context> context_;
  std::vector<std::string> numerical_;
  std::unique_ptr<InteractionSorter> sorter_;
  uint32_t next_row_ = 0;
  uint64_t rows_read_ = 0;
};

}  // namespace tastebud::datasets::import_detail
