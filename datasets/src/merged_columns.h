// The columns of the merged interactions, filled record by record on the merging thread and
// written to their files on a second one, so that copying them into the page cache (most of a
// write phase's time) overlaps the merge. Their lengths are known only at the end (duplicates
// are dropped as the runs merge), so each header is rewritten when it finishes.
#pragma once

#include <condition_variable>
#include <algorithm>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "direct_column_file.h"
#include "tastebud/datasets/columns.h"

namespace tastebud::datasets {

// A chunk of a column's bytes on its way to the file.
struct ColumnChunk {
  static constexpr size_t kBytes = size_t{1} << 17;
  std::unique_ptr<char[]> bytes;
  size_t size = 0;
};

// One thread that appends chunks to column writers in the order they were handed over. At most
// max_pending chunks wait; a writer's failure is rethrown by the next hand-over or by finish().
class ColumnWriterThread {
 public:
  explicit ColumnWriterThread(size_t max_pending = 32) : max_pending_(max_pending) {
    thread_ = std::thread([this] { work(); });
  }
  ~ColumnWriterThread() { stop(); }
  ColumnWriterThread(const ColumnWriterThread&) = delete;
  ColumnWriterThread& operator=(const ColumnWriterThread&) = delete;

  void submit(DirectColumnFile* writer, ColumnChunk&& chunk) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return pending_.size() < max_pending_ || failure_; });
    if (failure_) std::rethrow_exception(failure_);
    pending_.push_back({writer, std::move(chunk)});
    changed_.notify_all();
  }
  // An empty chunk to fill next (one the thread has written, when there is one).
  ColumnChunk take_chunk() {
    {
      std::lock_guard lock(mutex_);
      if (!spare_.empty()) {
        ColumnChunk c = std::move(spare_.back());
        spare_.pop_back();
        return c;
      }
    }
    return {std::unique_ptr<char[]>(new char[ColumnChunk::kBytes]), 0};
  }
  // Waits until every chunk handed over is written.
  void finish() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return (pending_.empty() && !busy_) || failure_; });
    if (failure_) std::rethrow_exception(failure_);
  }
  // Drops what waits and joins the thread; the writers it was given may go after this.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      pending_.clear();
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Pending {
    DirectColumnFile* writer;
    ColumnChunk chunk;
  };
  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_) return;
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      busy_ = true;
      lock.unlock();
      std::exception_ptr failed;
      try {
        p.writer->append(p.chunk.bytes.get(), p.chunk.size);
      } catch (...) {
        failed = std::current_exception();
      }
      p.chunk.size = 0;
      lock.lock();
      busy_ = false;
      if (failed && !failure_) failure_ = failed;
      if (spare_.size() < max_pending_) spare_.push_back(std::move(p.chunk));
      changed_.notify_all();
    }
  }

  size_t max_pending_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Pending> pending_;
  std::vector<ColumnChunk> spare_;
  bool busy_ = false, stopping_ = false;
  std::exception_ptr failure_;
  std::thread thread_;
};

// Writer threads with the columns shared out by bytes per row, so each writes about as much;
// a column stays with one thread, which keeps its chunks in order.
class ColumnWriterPool {
 public:
  explicit ColumnWriterPool(size_t threads) {
    for (size_t t = 0; t < std::max<size_t>(threads, 1); ++t) {
      threads_.push_back(std::make_unique<ColumnWriterThread>());
      load_.push_back(0);
    }
  }
  ColumnWriterThread& for_column(size_t bytes_per_row) {
    const size_t t = static_cast<size_t>(std::min_element(load_.begin(), load_.end()) - load_.begin());
    load_[t] += bytes_per_row;
    return *threads_[t];
  }
  void finish() {
    for (auto& t : threads_) t->finish();
  }
  void stop() {
    for (auto& t : threads_) t->stop();
  }

 private:
  std::vector<std::unique_ptr<ColumnWriterThread>> threads_;
  std::vector<size_t> load_;
};

template <typename T>
class MergedColumn {
 public:
  MergedColumn(const std::filesystem::path& path, ColumnWriterThread& thread)
      : writer_(path, dtype_of<T>(), sizeof(T)), thread_(thread), chunk_(thread.take_chunk()) {}
  MergedColumn(const std::filesystem::path& path, ColumnWriterPool& pool)
      : MergedColumn(path, pool.for_column(sizeof(T))) {}
  void push(T value) {
    std::memcpy(chunk_.bytes.get() + chunk_.size, &value, sizeof(T));
    chunk_.size += sizeof(T);
    if (chunk_.size + sizeof(T) > ColumnChunk::kBytes) hand_over();
  }
  void push(std::span<const T> values) {
    for (T v : values) push(v);
  }
  // After the last push, once the thread has written everything handed over (its finish()).
  void finish() {
    writer_.append(chunk_.bytes.get(), chunk_.size);
    count_ += chunk_.size / sizeof(T);
    writer_.finish(count_);
  }

 private:
  void hand_over() {
    count_ += chunk_.size / sizeof(T);
    thread_.submit(&writer_, std::move(chunk_));
    chunk_ = thread_.take_chunk();
  }

  DirectColumnFile writer_;
  ColumnWriterThread& thread_;
  ColumnChunk chunk_;
  uint64_t count_ = 0;
};

}  // namespace tastebud::datasets
