#include "external_sort.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "direct_column_file.h"
#include "tastebud/error.h"

namespace tastebud::datasets {

namespace fs = std::filesystem;

namespace {

// The smallest read buffer of a run in a merge; with less, more runs are merged in passes.
constexpr size_t kMinMergeBuffer = size_t{4} << 10;
// A spill file's write buffer at most; the budget may give less.
constexpr size_t kMaxWriteBuffer = size_t{1} << 20;

[[noreturn]] void throw_io(const fs::path& path, const char* what) {
  throw Error(fmt::format("{}: {} failed: {}", path.string(), what, std::strerror(errno)));
}

// The buffer's rows in order: a counting sort of their indices by user (over [min_user,
// max_user]) into order, then each user's slice by the rest of the key, keeping only the last of
// each set of exact duplicates. Indices, not keys, are moved: a quarter of a key's bytes, and
// exports list a user's rows together, so the slices still read the keys nearly in sequence.
// Returns how many indices are kept, at the front of order.
size_t sort_rows(const InteractionKey* keys, size_t n, uint32_t min_user, uint32_t max_user,
                 uint32_t* order, unsigned threads) {
  if (n == 0) return 0;
  const size_t span = size_t{max_user} - min_user + 1;
  std::vector<uint64_t> offsets(span + 1, 0);
  for (size_t r = 0; r < n; ++r) ++offsets[keys[r].user - min_user + 1];
  for (size_t u = 0; u < span; ++u) offsets[u + 1] += offsets[u];
  {
    std::vector<uint64_t> cursor(offsets.begin(), offsets.end() - 1);
    for (size_t r = 0; r < n; ++r) order[cursor[keys[r].user - min_user]++] = static_cast<uint32_t>(r);
  }
  std::vector<uint64_t> kept(span, 0);
  auto before = [keys](uint32_t a, uint32_t b) { return sorts_before(keys[a], keys[b]); };
  auto sort_users = [&](size_t begin, size_t end) {
    for (size_t u = begin; u < end; ++u) {
      uint32_t* first = order + offsets[u];
      uint32_t* last = order + offsets[u + 1];
      // Exports usually list a user's events in time order already.
      if (!std::is_sorted(first, last, before)) std::sort(first, last, before);
      uint32_t* kept_end = first;
      for (uint32_t* k = first; k < last; ++k) {
        if (k + 1 == last || !same_event(keys[k[1]], keys[*k])) *kept_end++ = *k;
      }
      kept[u] = static_cast<uint64_t>(kept_end - first);
    }
  };
  if (threads > 1 && n > (size_t{1} << 16)) {
    size_t split = 0;
    while (split < span && offsets[split] < n / 2) ++split;
    std::jthread second(sort_users, split, span);
    sort_users(0, split);
  } else {
    sort_users(0, span);
  }
  // Close the gaps the duplicates left.
  size_t at = 0;
  for (size_t u = 0; u < span; ++u) {
    if (at != offsets[u]) std::memmove(order + at, order + offsets[u], kept[u] * sizeof(uint32_t));
    at += kept[u];
  }
  return at;
}

}  // namespace

// ---- runs in memory and on disk ------------------------------------------------------------

// The sorted buffer: the order of its rows, and the rows where they arrived.
class InteractionSorter::MemoryRun : public SortedRun {
 public:
  MemoryRun(std::unique_ptr<uint32_t[]> order, size_t count, std::vector<InteractionKey> keys,
            std::vector<uint32_t> payload, std::vector<uint64_t> impression_offsets,
            std::vector<uint32_t> impression_items, size_t payload_words)
      : order_(std::move(order)),
        count_(count),
        keys_(std::move(keys)),
        payload_(std::move(payload)),
        impression_offsets_(std::move(impression_offsets)),
        impression_items_(std::move(impression_items)),
        payload_words_(payload_words) {}

  bool next() override {
    if (at_ == count_) return false;
    index_ = order_[at_++];
    return true;
  }
  const InteractionKey& key() const override { return keys_[index_]; }
  const uint32_t* payload() const override { return payload_.data() + size_t{index_} * payload_words_; }
  std::span<const uint32_t> impressions() const override {
    if (impression_offsets_.size() < 2) return {};
    return {impression_items_.data() + impression_offsets_[index_],
            static_cast<size_t>(impression_offsets_[index_ + 1] - impression_offsets_[index_])};
  }

 private:
  std::unique_ptr<uint32_t[]> order_;
  size_t count_;
  std::vector<InteractionKey> keys_;
  std::vector<uint32_t> payload_;
  std::vector<uint64_t> impression_offsets_;
  std::vector<uint32_t> impression_items_;
  size_t payload_words_;
  size_t at_ = 0;
  uint32_t index_ = 0;
};

// A run file: records back to back, each its key, its payload words and, with impressions, their
// count and items. Written once, read once, then removed.
class InteractionSorter::RunWriter {
 public:
  RunWriter(fs::path path, size_t buffer_bytes) : file_(std::move(path), buffer_bytes) {}
  void put(const SortedRun& run, size_t payload_words, bool impressions) {
    file_.append(&run.key(), sizeof(InteractionKey));
    file_.append(run.payload(), payload_words * sizeof(uint32_t));
    if (impressions) {
      const std::span<const uint32_t> items = run.impressions();
      const auto count = static_cast<uint32_t>(items.size());
      file_.append(&count, sizeof(count));
      file_.append(items.data(), items.size_bytes());
    }
  }
  uint64_t finish() { return file_.finish(); }

 private:
  DirectFile file_;
};

class InteractionSorter::FileRun : public SortedRun {
 public:
  FileRun(fs::path path, size_t payload_words, bool impressions, size_t buffer_bytes)
      : path_(std::move(path)), payload_words_(payload_words), impressions_(impressions) {
    // Around the page cache, as the run was written (see direct_column_file.h).
    if (buffer_bytes >= kMinDirectBuffer) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd_ < 0) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw_io(path_, "opening the sort's spill file");
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
    capacity_ = std::max<size_t>(kReadAlign, (buffer_bytes + kReadAlign - 1) / kReadAlign * kReadAlign);
    buffer_.reset(static_cast<char*>(std::aligned_alloc(kReadAlign, capacity_)));
    if (!buffer_) throw Error(fmt::format("{}: out of memory for the read buffer", path_.string()));
    payload_.resize(payload_words);
  }
  ~FileRun() override {
    if (fd_ >= 0) ::close(fd_);
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

  bool next() override {
    if (pos_ == end_ && !refill()) return false;
    read(&key_, sizeof(key_));
    read(payload_.data(), payload_words_ * sizeof(uint32_t));
    if (impressions_) {
      uint32_t count = 0;
      read(&count, sizeof(count));
      impressions_items_.resize(count);
      read(impressions_items_.data(), count * sizeof(uint32_t));
    }
    return true;
  }
  const InteractionKey& key() const override { return key_; }
  const uint32_t* payload() const override { return payload_.data(); }
  std::span<const uint32_t> impressions() const override { return impressions_items_; }

 private:
  bool refill() {
    pos_ = 0;
    end_ = 0;
    for (;;) {
      const ssize_t n = ::read(fd_, buffer_.get(), capacity_);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_io(path_, "reading the sort's spill file");
      }
      end_ = static_cast<size_t>(n);
      return n > 0;
    }
  }
  void read(void* data, size_t bytes) {
    char* p = static_cast<char*>(data);
    while (bytes > 0) {
      if (pos_ == end_ && !refill()) {
        throw Error(fmt::format("{}: the sort's spill file ends inside a record (was it changed "
                                "while the import ran?)",
                                path_.string()));
      }
      const size_t n = std::min(bytes, end_ - pos_);
      std::memcpy(p, buffer_.get() + pos_, n);
      pos_ += n;
      p += n;
      bytes -= n;
    }
  }

  fs::path path_;
  int fd_ = -1;
  size_t payload_words_;
  bool impressions_;
  static constexpr size_t kReadAlign = 4096;
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> buffer_;
  size_t capacity_ = 0;
  size_t pos_ = 0, end_ = 0;
  InteractionKey key_{};
  std::vector<uint32_t> payload_;
  std::vector<uint32_t> impressions_items_;
};

// ---- merging -------------------------------------------------------------------------------

void merge_sorted_runs(std::span<SortedRun* const> runs,
                       const std::function<void(const SortedRun&)>& emit) {
  // A binary min-heap of the runs by their current record.
  std::vector<SortedRun*> heap;
  for (SortedRun* run : runs)
    if (run->next()) heap.push_back(run);
  auto after = [](const SortedRun* a, const SortedRun* b) { return sorts_before(b->key(), a->key()); };
  std::make_heap(heap.begin(), heap.end(), after);
  auto sift_down = [&] {
    const size_t n = heap.size();
    size_t i = 0;
    for (;;) {
      const size_t l = 2 * i + 1, r = l + 1;
      size_t smallest = i;
      if (l < n && sorts_before(heap[l]->key(), heap[smallest]->key())) smallest = l;
      if (r < n && sorts_before(heap[r]->key(), heap[smallest]->key())) smallest = r;
      if (smallest == i) return;
      std::swap(heap[i], heap[smallest]);
      i = smallest;
    }
  };
  while (!heap.empty()) {
    SortedRun* top = heap.front();
    // The second smallest record is a child of the root; the same event there is a later row,
    // and the group of equal events is contiguous in the order, so it is the only place to look.
    bool superseded = false;
    for (size_t c = 1; c <= 2 && c < heap.size(); ++c) {
      if (same_event(heap[c]->key(), top->key())) superseded = true;
    }
    if (!superseded) emit(*top);
    if (top->next()) {
      sift_down();
    } else {
      heap.front() = heap.back();
      heap.pop_back();
      if (!heap.empty()) sift_down();
    }
  }
}

// ---- the sorter ----------------------------------------------------------------------------

InteractionSorter::InteractionSorter(size_t payload_words, bool impressions, uint64_t memory_budget,
                                     fs::path spill_dir)
    : payload_words_(payload_words),
      impressions_(impressions),
      buffer_budget_(memory_budget - memory_budget / 4),
      merge_budget_(memory_budget / 4),
      spill_dir_(std::move(spill_dir)) {
  rows_capacity_ = std::max<size_t>(1, buffer_budget_ / row_bytes());
  // Untouched capacity costs address space, not memory. (Huge pages for these buffers were tried:
  // more system time, not less, in the one run that compared them on this VM.)
  keys_.reserve(rows_capacity_);
  payload_.reserve(rows_capacity_ * payload_words_);
  if (impressions_) impression_offsets_.reserve(rows_capacity_ + 1);
}

InteractionSorter::~InteractionSorter() {
  std::error_code ignored;
  for (const fs::path& path : run_files_) fs::remove(path, ignored);
}

// A buffered row: its key, its place in the sorted order, its payload, its impression offset.
size_t InteractionSorter::row_bytes() const {
  return sizeof(InteractionKey) + sizeof(uint32_t) + payload_words_ * sizeof(uint32_t) +
         (impressions_ ? sizeof(uint64_t) : 0);
}

void InteractionSorter::add(const InteractionKey& key, const uint32_t* payload,
                            std::span<const uint32_t> impressions) {
  if (impressions_ && impression_items_.size() + impressions.size() > impression_items_.capacity()) {
    // Grow by half, and spill first when that would pass the budget.
    const size_t half_more = impression_items_.capacity() + impression_items_.capacity() / 2;
    const size_t grown = std::max(impression_items_.size() + impressions.size(), half_more);
    if (!keys_.empty() && keys_.size() * row_bytes() + grown * sizeof(uint32_t) > buffer_budget_) spill();
    if (impression_items_.size() + impressions.size() > impression_items_.capacity()) {
      impression_items_.reserve(std::max(impression_items_.size() + impressions.size(), half_more));
    }
  }
  keys_.push_back(key);
  payload_.insert(payload_.end(), payload, payload + payload_words_);
  if (impressions_) {
    impression_items_.insert(impression_items_.end(), impressions.begin(), impressions.end());
    impression_offsets_.push_back(impression_items_.size());
  }
  min_user_ = std::min(min_user_, key.user);
  max_user_ = std::max(max_user_, key.user);
  ++rows_added_;
  if (keys_.size() >= rows_capacity_ ||
      (impressions_ && keys_.size() * row_bytes() + impression_items_.capacity() * sizeof(uint32_t) >=
                           buffer_budget_)) {
    spill();
  }
}

void InteractionSorter::add_sorted(std::unique_ptr<SortedRun> run) {
  sorted_sources_.push_back(std::move(run));
}

std::unique_ptr<InteractionSorter::MemoryRun> InteractionSorter::sort_buffer(unsigned threads) {
  const size_t n = keys_.size();
  stats_.peak_buffer_bytes = std::max<uint64_t>(
      stats_.peak_buffer_bytes, n * row_bytes() + impression_items_.capacity() * sizeof(uint32_t));
  // Every element is written by the scatter: no need to zero it first.
  std::unique_ptr<uint32_t[]> order(new uint32_t[std::max<size_t>(n, 1)]);
  const size_t kept = sort_rows(keys_.data(), n, min_user_, max_user_, order.get(), threads);
  return std::make_unique<MemoryRun>(std::move(order), kept, std::move(keys_), std::move(payload_),
                                     impressions_ ? std::move(impression_offsets_) : std::vector<uint64_t>(),
                                     std::move(impression_items_), payload_words_);
}

fs::path InteractionSorter::next_run_path() {
  return spill_dir_ / fmt::format("run-{:06}.bin", run_counter_++);
}

size_t InteractionSorter::merge_buffer_bytes(size_t runs) const {
  return static_cast<size_t>(std::max<uint64_t>(kMinMergeBuffer, merge_budget_ / std::max<size_t>(runs, 1)));
}

void InteractionSorter::spill() {
  if (keys_.empty()) return;
  // The buffer becomes a run for as long as it takes to write it, then takes the next rows.
  const size_t n = keys_.size();
  stats_.peak_buffer_bytes = std::max<uint64_t>(
      stats_.peak_buffer_bytes, n * row_bytes() + impression_items_.capacity() * sizeof(uint32_t));
  if (!spill_order_) spill_order_.reset(new uint32_t[rows_capacity_]);
  const size_t kept = sort_rows(keys_.data(), n, min_user_, max_user_, spill_order_.get(), 1);
  const fs::path path = next_run_path();
  run_files_.push_back(path);
  RunWriter writer(path, std::min<size_t>(kMaxWriteBuffer, std::max<size_t>(merge_budget_, 64)));
  {
    struct View : SortedRun {
      const InteractionSorter* sorter;
      uint32_t index = 0;
      bool next() override { return false; }
      const InteractionKey& key() const override { return sorter->keys_[index]; }
      const uint32_t* payload() const override {
        return sorter->payload_.data() + size_t{index} * sorter->payload_words_;
      }
      std::span<const uint32_t> impressions() const override {
        if (!sorter->impressions_) return {};
        const auto& off = sorter->impression_offsets_;
        return {sorter->impression_items_.data() + off[index], static_cast<size_t>(off[index + 1] - off[index])};
      }
    } view;
    view.sorter = this;
    for (size_t i = 0; i < kept; ++i) {
      view.index = spill_order_[i];
      writer.put(view, payload_words_, impressions_);
    }
  }
  stats_.bytes_spilled += writer.finish();
  ++stats_.runs_spilled;
  keys_.clear();
  payload_.clear();
  impression_offsets_.resize(1);
  impression_items_.clear();
  min_user_ = UINT32_MAX;
  max_user_ = 0;
}

void InteractionSorter::merge(const std::function<void(const SortedRun&)>& emit, unsigned threads) {
  const auto started = std::chrono::steady_clock::now();
  // The last buffer stays in memory as a run; the buffer is gone after this.
  spill_order_.reset();
  std::unique_ptr<MemoryRun> last = sort_buffer(threads);

  // Too many runs for the merge budget: merge the oldest into one until the rest fit.
  const size_t others = sorted_sources_.size() + 1;  // sources read in place, and the last buffer
  const size_t fan_in = std::max<size_t>(2, merge_budget_ / kMinMergeBuffer);
  size_t first = 0;
  while (run_files_.size() - first > 1 && run_files_.size() - first + others > fan_in) {
    const size_t take = std::min(fan_in, run_files_.size() - first);
    std::vector<std::unique_ptr<SortedRun>> inputs;
    std::vector<SortedRun*> pointers;
    for (size_t k = 0; k < take; ++k) {
      inputs.push_back(std::make_unique<FileRun>(run_files_[first + k], payload_words_, impressions_,
                                                 merge_buffer_bytes(take + 1)));
      pointers.push_back(inputs.back().get());
    }
    const fs::path path = next_run_path();
    RunWriter writer(path, merge_buffer_bytes(take + 1));
    merge_sorted_runs(pointers, [&](const SortedRun& run) { writer.put(run, payload_words_, impressions_); });
    stats_.bytes_spilled += writer.finish();
    ++stats_.merge_passes;
    inputs.clear();  // removes the merged files
    first += take;
    run_files_.push_back(path);
  }

  stats_.last_sort_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  // Sources in row order: the presorted ones hold the earliest rows, then the spilled runs, then
  // the last buffer. The merge relies on it only through the keys' rows, but keep it plain.
  std::vector<std::unique_ptr<SortedRun>> files;
  std::vector<SortedRun*> runs;
  for (auto& source : sorted_sources_) runs.push_back(source.get());
  const size_t file_count = run_files_.size() - first;
  for (size_t k = first; k < run_files_.size(); ++k) {
    files.push_back(std::make_unique<FileRun>(run_files_[k], payload_words_, impressions_,
                                              merge_buffer_bytes(file_count)));
    runs.push_back(files.back().get());
  }
  runs.push_back(last.get());
  merge_sorted_runs(runs, emit);
  files.clear();
  sorted_sources_.clear();
  run_files_.clear();
}

}  // namespace tastebud::datasets
