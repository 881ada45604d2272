#include "tastebud/directory_swap.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include <fmt/format.h>

#include "tastebud/atomic_file.h"
#include "tastebud/error.h"

namespace tastebud {

namespace fs = std::filesystem;

namespace {

fs::path parent_of(const fs::path& path) { return path.has_parent_path() ? path.parent_path() : fs::path("."); }

// ".NAME.old-PID-N" beside `target`: where the fallback keeps the old directory for a moment.
fs::path old_name(const fs::path& target) {
  static std::atomic<uint64_t> counter{0};
  return parent_of(target) / fmt::format(".{}.old-{}-{}", target.filename().string(), ::getpid(), counter++);
}

bool exists_or_dangles(const fs::path& path) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(path, ec));
}

// A writer killed between the fallback's two renames left no `target`, only its old copy.
void restore_old_copy(const fs::path& target) {
  if (exists_or_dangles(target)) return;
  const std::string prefix = fmt::format(".{}.old-", target.filename().string());
  std::error_code ec;
  for (fs::directory_iterator it(parent_of(target), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0 || !it->is_directory()) continue;
    const long pid = temporary_owner(name);
    if (pid <= 0 || pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;
    if (::rename(it->path().c_str(), target.c_str()) == 0) return;
  }
}

void fsync_path(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) throw Error(fmt::format("{}: fsync failed: {}", path.string(), std::strerror(error)));
}

}  // namespace

void replace_by_two_renames(const fs::path& built, const fs::path& target) {
  const fs::path old = old_name(target);
  if (::rename(target.c_str(), old.c_str()) != 0)
    throw Error(fmt::format("{}: cannot move the old directory aside: {}", target.string(), std::strerror(errno)));
  if (::rename(built.c_str(), target.c_str()) != 0) {
    const int error = errno;
    ::rename(old.c_str(), target.c_str());
    throw Error(fmt::format("{}: cannot rename {} into place: {}", target.string(), built.filename().string(),
                            std::strerror(error)));
  }
  // `built` is the old directory now, as after an exchange.
  if (::rename(old.c_str(), built.c_str()) != 0) {
    std::error_code ignored;
    fs::remove_all(old, ignored);
  }
}

void fsync_tree(const fs::path& dir) {
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_symlink()) continue;
    fsync_path(entry.path(), entry.is_directory() ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  }
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

DirectoryReplacement::DirectoryReplacement(fs::path target) : target_(std::move(target)) {
  restore_old_copy(target_);
  remove_stale_temporaries(parent_of(target_));
  temp_ = temporary_name(target_);
  // A leftover of a killed process that had this PID (PIDs restart in every container) is ours.
  std::error_code ignored;
  fs::remove_all(temp_, ignored);
  fs::create_directory(temp_);
}

DirectoryReplacement::~DirectoryReplacement() {
  std::error_code ignored;
  fs::remove_all(temp_, ignored);
}

void DirectoryReplacement::commit() {
  const bool replacing = exists_or_dangles(target_);
  if (replacing) copy_permissions(target_, temp_);  // the owner's modes, not the umask's
  fsync_tree(temp_);
  if (!replacing) {
    if (::rename(temp_.c_str(), target_.c_str()) != 0)
      throw Error(fmt::format("{}: cannot rename {} into place: {}", target_.string(), temp_.filename().string(),
                              std::strerror(errno)));
  } else if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) != 0) {
    const int error = errno;
    if (error != EINVAL && error != ENOSYS && error != EOPNOTSUPP)
      throw Error(fmt::format("{}: cannot swap in {}: {}", target_.string(), temp_.filename().string(),
                              std::strerror(error)));
    replace_by_two_renames(temp_, target_);
  }
  fsync_directory(parent_of(target_));
  std::error_code ignored;
  fs::remove_all(temp_, ignored);  // the old directory, if there was one
}

void replace_symlink(const fs::path& link, const fs::path& points_to) {
  const fs::path temp = temporary_name(link);
  std::error_code ignored;
  fs::remove(temp, ignored);
  fs::create_symlink(points_to, temp);
  if (::rename(temp.c_str(), link.c_str()) != 0) {
    const int error = errno;
    fs::remove(temp, ignored);
    throw Error(fmt::format("{}: cannot point it to {}: {}", link.string(), points_to.string(), std::strerror(error)));
  }
  fsync_directory(parent_of(link));
}

}  // namespace tastebud
