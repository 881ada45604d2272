// The events `tastebud serve` accepts (PutEvents), appended to CSV part files that
// `tastebud import --mode incremental --interactions DIR` and `retrain --interactions DIR` read as
// they are: USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE, one file per server start
// (events-<UTC start>-<pid>.csv) in the log's directory. PutUsers and PutItems go the same way into
// users/users-*.csv and items/items-*.csv beneath it, whose header is the dataset's Users or Items
// schema (in subfolders, so an import of the folder reads the events alone).
//
// Group commit: append() hands its rows to whichever caller is writing; that caller writes every
// row waiting, fsyncs once, and wakes them all. append() returns only once its rows are on disk,
// so an acknowledged event survives kill -9 and power loss. A kill mid-write can leave the last
// line of a file half written; opening the log cuts every file in the directory back to its last
// complete line first (repair_event_files), so no later import trips on it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tastebud::host {

struct EventRow {
  std::string user_id, item_id, event_type;
  int64_t timestamp = 0;               // Unix seconds
  std::optional<double> event_value;
};

// One CSV line (RFC 4180 quoting where a field needs it), with its newline.
std::string event_csv_line(const EventRow& row);
std::string csv_line(const std::vector<std::string>& fields);

// The events' CSV header.
inline constexpr std::string_view kEventsHeader = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n";

// Cuts each events-, users- and items-*.csv in `dir` back to its last complete line; returns the
// bytes cut.
uint64_t repair_event_files(const std::filesystem::path& dir);

// What `retrain --events DIR` takes from a server's log: every complete line past each file's
// consumed offset (DIR/consumed.json), written with the header to `part` as one CSV for an
// incremental import. Nothing is marked taken until commit_event_backlog, after the import: a
// failed retrain leaves the events for the next one (and an import drops exact duplicates).
struct EventBacklog {
  std::map<std::string, uint64_t> offsets;  // file name -> bytes taken through
  uint64_t rows = 0;
};
// `kind`: "events", "users" or "items" (the files' prefix); the part's header is the first file's,
// and a file of that kind with another header (a schema changed in between) is left as it is.
EventBacklog collect_event_backlog(const std::filesystem::path& dir, const std::filesystem::path& part,
                                   std::string_view kind = "events");
// Records the offsets (consumed.json, written atomically) and rotates: a file taken whole whose
// writer (the PID in its name) is gone is removed.
void commit_event_backlog(const std::filesystem::path& dir, const EventBacklog& taken);

class PutEventsLog {
 public:
  explicit PutEventsLog(const std::filesystem::path& dir, std::string_view kind = "events",
                        std::string_view header = kEventsHeader);
  PutEventsLog(const PutEventsLog&) = delete;
  PutEventsLog& operator=(const PutEventsLog&) = delete;
  ~PutEventsLog();

  // Appends complete CSV lines and returns once they are on disk; throws Error when the write or
  // the fsync fails (the rows are then not acknowledged).
  void append(std::string_view lines, uint64_t rows);
  uint64_t rows_written() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  mutable std::mutex mutex_;
  std::condition_variable done_;
  std::string pending_;          // lines waiting for the next write
  uint64_t pending_rows_ = 0;
  uint64_t next_ticket_ = 1;     // the batch the next append joins
  uint64_t durable_ticket_ = 0;  // every batch up to this one is on disk
  bool writing_ = false;
  bool broken_ = false;          // a write failed: nothing more is acknowledged
  uint64_t rows_written_ = 0;
};

}  // namespace tastebud::host
