// The interaction sort of an import within a byte budget: rows are buffered until the budget is
// spent, each full buffer is sorted and spilled to disk as a run, and the runs (with the last
// buffer, kept in memory, and any presorted source such as the existing dataset) are k-way merged.
// The order and the duplicates removed are the same whatever the budget, so a bounded import
// writes the same bytes as an unbounded one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <vector>

namespace tastebud::datasets {

// A dataset's interaction order: (user, timestamp, item, event type), ties by row (the order rows
// arrived in), so that among exact duplicates the row that arrived last comes last.
struct InteractionKey {
  int64_t timestamp;
  uint32_t user, item, event_type, row;
};
static_assert(sizeof(InteractionKey) == 24);

inline bool same_event(const InteractionKey& a, const InteractionKey& b) {
  return a.user == b.user && a.timestamp == b.timestamp && a.item == b.item &&
         a.event_type == b.event_type;
}

inline bool sorts_before(const InteractionKey& a, const InteractionKey& b) {
  if (a.user != b.user) return a.user < b.user;
  if (a.timestamp != b.timestamp) return a.timestamp < b.timestamp;
  if (a.item != b.item) return a.item < b.item;
  if (a.event_type != b.event_type) return a.event_type < b.event_type;
  return a.row < b.row;
}

// A sorted stream of interactions without exact duplicates: one run of the sort, the existing
// dataset, or the merge of them. Each record is its key, `payload_words` 32-bit words the sort
// carries without reading (event value, context values, numbers), and its impression items.
class SortedRun {
 public:
  virtual ~SortedRun() = default;
  // Moves to the next record (the first on the first call); false at the end.
  virtual bool next() = 0;
  virtual const InteractionKey& key() const = 0;
  virtual const uint32_t* payload() const = 0;
  virtual std::span<const uint32_t> impressions() const = 0;
};

struct SortStats {
  uint64_t runs_spilled = 0;   // runs written to disk while rows were added
  uint64_t merge_passes = 0;   // intermediate merges (more runs than the budget merges at once)
  uint64_t bytes_spilled = 0;  // everything written to the spill directory
  uint64_t peak_buffer_bytes = 0;
  double last_sort_seconds = 0;  // sorting the last buffer and the intermediate merges
};

class InteractionSorter {
 public:
  // memory_budget: bytes for the row buffer (3/4) and the merge's read buffers (1/4); tiny
  // budgets (a few KiB, for tests) work and spill often. Runs go to files in spill_dir, which
  // must exist; the sorter removes its files.
  InteractionSorter(size_t payload_words, bool impressions, uint64_t memory_budget,
                    std::filesystem::path spill_dir);
  ~InteractionSorter();
  InteractionSorter(const InteractionSorter&) = delete;
  InteractionSorter& operator=(const InteractionSorter&) = delete;

  // Rows arrive with increasing key.row; payload points to payload_words words.
  void add(const InteractionKey& key, const uint32_t* payload, std::span<const uint32_t> impressions);
  // A source that is already sorted and free of duplicates, whose rows precede every added row.
  void add_sorted(std::unique_ptr<SortedRun> run);

  // Calls emit with each record in order, only the last of each set of exact duplicates
  // (same_event). Once, after the last add; threads > 1 sorts the last buffer on two threads.
  void merge(const std::function<void(const SortedRun&)>& emit, unsigned threads = 2);

  uint64_t rows_added() const { return rows_added_; }
  const SortStats& stats() const { return stats_; }

 private:
  class MemoryRun;
  class FileRun;
  class RunWriter;

  size_t row_bytes() const;
  void spill();
  std::unique_ptr<MemoryRun> sort_buffer(unsigned threads);
  std::filesystem::path next_run_path();
  size_t merge_buffer_bytes(size_t runs) const;

  size_t payload_words_;
  bool impressions_;
  uint64_t buffer_budget_, merge_budget_;
  std::filesystem::path spill_dir_;
  size_t rows_capacity_;

  // The buffer: keys and payloads in arrival order, impressions as CSR.
  std::vector<InteractionKey> keys_;
  std::vector<uint32_t> payload_;
  std::vector<uint64_t> impression_offsets_{0};
  std::vector<uint32_t> impression_items_;
  uint32_t min_user_ = UINT32_MAX, max_user_ = 0;
  std::unique_ptr<uint32_t[]> spill_order_;  // the sorted order of a buffer being spilled

  std::vector<std::filesystem::path> run_files_;
  std::vector<std::unique_ptr<SortedRun>> sorted_sources_;
  uint64_t rows_added_ = 0;
  uint64_t run_counter_ = 0;
  SortStats stats_;
};

// Merges sorted runs, emitting each record unless a later run's current record is the same event
// (rows arrive in row order, so the later record is the later row and wins). Each run must be
// free of duplicates itself.
void merge_sorted_runs(std::span<SortedRun* const> runs,
                       const std::function<void(const SortedRun&)>& emit);

}  // namespace tastebud::datasets
