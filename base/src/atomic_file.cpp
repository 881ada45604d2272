#include "tastebud/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud {

namespace fs = std::filesystem;

namespace {

fs::path directory_of(const fs::path& path) { return path.has_parent_path() ? path.parent_path() : fs::path("."); }

bool process_alive(long pid) { return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM; }

// The digits at `at` of `name` as a PID, or 0.
long pid_at(const std::string& name, size_t at) {
  long pid = 0;
  size_t end = at;
  while (end < name.size() && end - at < 10 && name[end] >= '0' && name[end] <= '9') pid = pid * 10 + (name[end++] - '0');
  if (end == at) return 0;
  if (end < name.size() && name[end] != '-') return 0;
  return pid;
}

// Refuses a target that is a directory: the rename would fail only after the whole job.
void check_target(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(fmt::format("{}: is a directory; name a file to write", path.string()));
  const fs::path dir = directory_of(path);
  if (!fs::is_directory(dir, ec)) throw Error(fmt::format("{}: the directory {} does not exist", path.string(), dir.string()));
}

void rename_into_place(const fs::path& temp, const fs::path& path) {
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw Error(fmt::format("{}: cannot rename {} into place: {}", path.string(), temp.filename().string(), std::strerror(error)));
  }
  fsync_directory(directory_of(path));
}

}  // namespace

fs::path temporary_name(const fs::path& path) {
  static std::atomic<uint64_t> counter{0};
  return directory_of(path) / fmt::format(".{}.tmp-{}-{}", path.filename().string(), ::getpid(), counter++);
}

long temporary_owner(const std::string& name) {
  // ".X.tmp-PID..." and ".X.old-PID..." (this helper, imports, older batch outputs): hidden
  // names only, so that a user's own "notes.tmp-2024" beside a batch output is never taken.
  for (const char* tag : {".tmp-", ".old-"}) {
    const size_t at = name.rfind(tag);
    if (at == std::string::npos || at == 0 || name[0] != '.') continue;
    if (const long pid = pid_at(name, at + 5)) return pid;
  }
  // "X.tmpPID" (older model and checkpoint writers).
  const size_t at = name.rfind(".tmp");
  if (at != std::string::npos && at > 0 && at + 4 < name.size() && pid_at(name, at + 4) != 0 &&
      name.find('-', at) == std::string::npos)
    return pid_at(name, at + 4);
  return 0;
}

size_t remove_stale_temporaries(const fs::path& dir) {
  size_t removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const long pid = temporary_owner(name);
    if (pid <= 0 || pid == ::getpid() || process_alive(pid)) continue;
    std::error_code ignored;
    if (fs::remove_all(it->path(), ignored) > 0) ++removed;
  }
  return removed;
}

void copy_permissions(const fs::path& from, const fs::path& to) {
  const fs::perms dir = fs::status(from).permissions();
  const fs::perms file = dir & ~(fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec);
  for (const auto& entry : fs::directory_iterator(to)) {
    const fs::path twin = from / entry.path().filename();
    std::error_code missing;
    const fs::file_status original = fs::symlink_status(twin, missing);
    const bool has_twin = !missing && fs::exists(original);
    if (entry.is_directory() && !entry.is_symlink()) {
      if (has_twin && fs::is_directory(original)) {
        copy_permissions(twin, entry.path());
      } else {
        fs::permissions(entry.path(), dir);
      }
    } else if (entry.is_regular_file() && !entry.is_symlink()) {
      fs::permissions(entry.path(), has_twin && fs::is_regular_file(original) ? original.permissions() : file);
    }
  }
  fs::permissions(to, dir);  // last: a read-only directory is still written into above
}

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open the directory: {}", dir.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems (and /proc-like ones) cannot sync a directory; the data itself is synced.
  if (rc != 0 && error != EINVAL && error != EROFS)
    throw Error(fmt::format("{}: fsync failed: {}", dir.string(), std::strerror(error)));
}

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  check_target(path_);
  temp_ = temporary_name(path_);
  // Truncating, not exclusive: a leftover of a killed process that had this PID (PIDs restart in
  // every container) under this name is ours to replace.
  file_ = std::fopen(temp_.c_str(), "wb");
  if (file_ == nullptr) fail("cannot create", errno);
  // A large stdio buffer turns many small appends into few write calls.
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
}

AtomicFile::~AtomicFile() {
  if (file_ == nullptr) return;
  std::fclose(file_);
  ::unlink(temp_.c_str());
}

void AtomicFile::write(std::string_view bytes) {
  if (bytes.empty()) return;
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) fail("cannot write", errno);
}

void AtomicFile::commit() {
  std::FILE* file = file_;
  file_ = nullptr;
  int error = 0;
  struct stat old;
  if (::stat(path_.c_str(), &old) == 0 && ::fchmod(::fileno(file), old.st_mode & 07777) != 0) error = errno;
  if (error == 0 && (std::fflush(file) != 0 || ::fsync(::fileno(file)) != 0)) error = errno;
  if (std::fclose(file) != 0 && error == 0) error = errno;
  if (error != 0) {
    ::unlink(temp_.c_str());
    fail("cannot write", error);
  }
  rename_into_place(temp_, path_);
}

void AtomicFile::fail(const char* what, int error) {
  throw Error(fmt::format("{}: {} {}: {}", path_.string(), what, temp_.filename().string(), std::strerror(error)));
}

void write_file_atomically(const fs::path& path, std::string_view bytes) {
  AtomicFile file(path);
  file.write(bytes);
  file.commit();
}

}  // namespace tastebud
