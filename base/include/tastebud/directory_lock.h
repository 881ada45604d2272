// One writer at a time per dataset or model directory. Two incremental imports into one dataset
// used to both succeed while one batch vanished; now the second stops and names the first.
#pragma once

#include <filesystem>
#include <string_view>

namespace tastebud {

// An exclusive flock(2) on ".NAME.lock" beside the directory (beside, not inside: an import
// replaces the dataset directory by a rename, which a lock inside would not survive). The lock
// file holds the owner's PID and is removed on release; the kernel drops the lock when the process
// dies, however it dies (the file then stays, harmlessly, until the next writer releases it).
// The parent directory is created when missing.
class DirectoryLock {
 public:
  // Throws Error "DIR: in use by PID N (WHAT)" when another process, or another lock in this one,
  // holds it. `what` names this writer for that message ("an import", "a training run").
  DirectoryLock(const std::filesystem::path& dir, std::string_view what);
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock();

  static std::filesystem::path lock_file(const std::filesystem::path& dir);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace tastebud
