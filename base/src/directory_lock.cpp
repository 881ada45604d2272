#include "tastebud/directory_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud {

namespace fs = std::filesystem;

fs::path DirectoryLock::lock_file(const fs::path& dir) {
  fs::path d = dir.lexically_normal();
  if (!d.has_filename()) d = d.parent_path();
  if (d.empty() || d.filename() == "." || d.filename() == "..") d = fs::absolute(d).lexically_normal();
  if (!d.has_filename()) d = d.parent_path();
  const fs::path parent = d.has_parent_path() ? d.parent_path() : fs::path(".");
  return parent / fmt::format(".{}.lock", d.filename().string());
}

namespace {

std::string owner_of(int fd) {
  char text[32] = {};
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  const long pid = n > 0 ? std::strtol(text, nullptr, 10) : 0;
  return pid > 0 ? fmt::format("PID {}", pid) : std::string("another process");
}

// True when `fd` is still the file at `path`: a releasing holder unlinks the lock file, so a lock
// taken on a file that was unlinked meanwhile guards nothing, and is taken again.
bool still_at(int fd, const fs::path& path) {
  struct stat held, named;
  return ::fstat(fd, &held) == 0 && ::stat(path.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
         held.st_dev == named.st_dev;
}

}  // namespace

DirectoryLock::DirectoryLock(const fs::path& dir, std::string_view what) : path_(lock_file(dir)) {
  std::error_code ec;
  fs::create_directories(path_.parent_path(), ec);
  for (;;) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw Error(fmt::format("{}: cannot create the lock file {}: {}", dir.string(), path_.string(), std::strerror(errno)));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      const std::string owner = error == EWOULDBLOCK ? owner_of(fd_) : std::string();
      ::close(fd_);
      fd_ = -1;
      if (error == EWOULDBLOCK)
        throw Error(fmt::format("{}: in use by {} (it holds {}); {} does not write beside another writer: "
                                "try again when that one has finished", dir.string(), owner, path_.string(), what));
      throw Error(fmt::format("{}: cannot lock {}: {}", dir.string(), path_.string(), std::strerror(error)));
    }
    if (still_at(fd_, path_)) break;
    ::close(fd_);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds without the PID; a second writer then says "another process".
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ < 0) return;
  // Unlinked while still held, so that nothing is left beside the directory; a writer that
  // opened the old file meanwhile sees it is gone (still_at) and takes the new one.
  ::unlink(path_.c_str());
  ::close(fd_);
}

}  // namespace tastebud
