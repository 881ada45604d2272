#include "host/event_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tastebud/atomic_file.h"
#include "tastebud/read_file.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace fs = std::filesystem;

namespace {


void append_field(std::string& out, std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) {
    out += field;
    return;
  }
  out += '"';
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string start_stamp() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y%m%dT%H%M%SZ", &utc);
  return text;
}

}  // namespace

std::string csv_line(const std::vector<std::string>& fields) {
  std::string line;
  for (size_t k = 0; k < fields.size(); ++k) {
    if (k > 0) line += ',';
    append_field(line, fields[k]);
  }
  line += '\n';
  return line;
}

std::string event_csv_line(const EventRow& row) {
  return csv_line({row.user_id, row.item_id, fmt::format("{}", row.timestamp), row.event_type,
                   row.event_value ? fmt::format("{}", *row.event_value) : std::string()});
}

uint64_t repair_event_files(const fs::path& dir) {
  uint64_t cut = 0;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool logged = name.starts_with("events-") || name.starts_with("users-") || name.starts_with("items-");
    if (!e.is_regular_file() || !logged || !name.ends_with(".csv")) continue;
    const int fd = ::open(e.path().c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", e.path().string(), std::strerror(errno)));
    off_t end = ::lseek(fd, 0, SEEK_END), keep = end;
    char c = 0;
    while (keep > 0 && ::pread(fd, &c, 1, keep - 1) == 1 && c != '\n') --keep;
    if (keep < end) {
      if (::ftruncate(fd, keep) != 0 || ::fsync(fd) != 0) {
        const int error = errno;
        ::close(fd);
        throw Error(fmt::format("{}: cannot cut the half-written last line: {}", e.path().string(), std::strerror(error)));
      }
      cut += static_cast<uint64_t>(end - keep);
    }
    ::close(fd);
  }
  return cut;
}

namespace {

// The writer's PID of an events-<stamp>-<pid>.csv name; 0 when the name has none.
long writer_of(const std::string& name) {
  const size_t dash = name.rfind('-'), dot = name.rfind('.');
  if (dash == std::string::npos || dot == std::string::npos || dot <= dash + 1) return 0;
  try {
    return std::stol(name.substr(dash + 1, dot - dash - 1));
  } catch (const std::exception&) {
    return 0;
  }
}

bool is_log_file(const fs::directory_entry& e, std::string_view kind) {
  const std::string name = e.path().filename().string();
  return e.is_regular_file() && name.starts_with(fmt::format("{}-", kind)) && name.ends_with(".csv");
}

std::map<std::string, uint64_t> read_consumed(const fs::path& dir) {
  std::map<std::string, uint64_t> offsets;
  const fs::path file = dir / "consumed.json";
  if (!fs::exists(file)) return offsets;
  try {
    const nlohmann::json record = nlohmann::json::parse(read_file(file));
    for (auto it = record.begin(); it != record.end(); ++it) offsets[it.key()] = it.value().get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not the event log's record of what retrain took: {}", file.string(), e.what()));
  }
  return offsets;
}

}  // namespace

EventBacklog collect_event_backlog(const fs::path& dir, const fs::path& part, std::string_view kind) {
  EventBacklog taken;
  taken.offsets = read_consumed(dir);
  std::vector<fs::path> files;
  for (const fs::directory_entry& e : fs::directory_iterator(dir))
    if (is_log_file(e, kind)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  AtomicFile out(part);
  std::string header;
  for (const fs::path& file : files) {
    const std::string text = read_file(file);
    const size_t end = text.rfind('\n');  // a line still being written is left for next time
    const size_t header_end = text.find('\n');
    if (end == std::string::npos) continue;
    const std::string_view own_header(text.data(), header_end + 1);
    if (header.empty()) {
      header = own_header;
      out.write(header);
    }
    if (own_header != header) continue;  // another schema's rows: a later retrain's
    uint64_t& from = taken.offsets[file.filename().string()];
    if (from == 0) from = header.size();
    if (from > end + 1) throw Error(fmt::format("{}: shorter than consumed.json says was taken", file.string()));
    const std::string_view lines(text.data() + from, end + 1 - from);
    out.write(lines);
    taken.rows += static_cast<uint64_t>(std::count(lines.begin(), lines.end(), '\n'));
    from = end + 1;
  }
  if (header.empty()) out.write(kind == "events" ? kEventsHeader : std::string_view("\n"));
  out.commit();
  return taken;
}

void commit_event_backlog(const fs::path& dir, const EventBacklog& taken) {
  nlohmann::json record = nlohmann::json::object();
  for (const auto& [name, bytes] : taken.offsets) {
    const fs::path file = dir / name;
    std::error_code ec;
    const uint64_t size = fs::file_size(file, ec);
    if (ec) continue;  // gone: nothing to record
    const long writer = writer_of(name);
    const bool writer_gone = writer > 0 && writer != ::getpid() && ::kill(static_cast<pid_t>(writer), 0) != 0 && errno == ESRCH;
    if (size == bytes && writer_gone) continue;  // taken whole and closed for good: rotated out below
    record[name] = bytes;
  }
  write_file_atomically(dir / "consumed.json", record.dump(1) + "\n");
  for (const auto& [name, bytes] : taken.offsets)
    if (!record.contains(name)) fs::remove(dir / name);
}

PutEventsLog::PutEventsLog(const fs::path& dir, std::string_view kind, std::string_view header) {
  fs::create_directories(dir);
  repair_event_files(dir);
  path_ = dir / fmt::format("{}-{}-{}.csv", kind, start_stamp(), ::getpid());
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(fmt::format("{}: cannot create the event log: {}", path_.string(), std::strerror(errno)));
  if (!write_all(fd_, header) || ::fsync(fd_) != 0) {
    const int error = errno;
    ::close(fd_);
    fs::remove(path_);
    throw Error(fmt::format("{}: cannot write the event log: {}", path_.string(), std::strerror(error)));
  }
  fsync_directory(dir);
}

PutEventsLog::~PutEventsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void PutEventsLog::append(std::string_view lines, uint64_t rows) {
  std::unique_lock lock(mutex_);
  const uint64_t ticket = next_ticket_;
  pending_.append(lines);
  pending_rows_ += rows;
  while (durable_ticket_ < ticket) {
    if (broken_) throw Error(fmt::format("{}: the event log failed to write; events are not accepted", path_.string()));
    if (writing_) {
      done_.wait(lock);
      continue;
    }
    // This caller writes every row waiting (its own among them), then wakes the others.
    writing_ = true;
    const std::string batch = std::move(pending_);
    const uint64_t batch_rows = pending_rows_, batch_ticket = next_ticket_++;
    pending_.clear();
    pending_rows_ = 0;
    lock.unlock();
    const bool ok = write_all(fd_, batch) && ::fdatasync(fd_) == 0;
    lock.lock();
    writing_ = false;
    if (ok) {
      durable_ticket_ = batch_ticket;
      rows_written_ += batch_rows;
    } else {
      broken_ = true;  // the file may end in a half line now: no later row may follow it
    }
    done_.notify_all();
  }
}

uint64_t PutEventsLog::rows_written() const {
  std::lock_guard lock(mutex_);
  return rows_written_;
}

}  // namespace tastebud::host
