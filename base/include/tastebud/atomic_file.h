// Files that appear under their name only once they are whole and on disk. Every writer of the
// project (datasets, models, checkpoints, batch outputs, generated CSVs) goes through here:
// a temporary name in the same directory, the bytes, fsync of the file, rename over the target,
// fsync of the directory. A kill at any moment leaves the old file or the new one, never half.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string_view>

namespace tastebud {

// ".NAME.tmp-PID-N" beside `path`: hidden, unique within the process, and naming its owner, so
// that remove_stale_temporaries can tell a dead writer's leftovers from a live one's.
std::filesystem::path temporary_name(const std::filesystem::path& path);

// A file written in pieces (batch outputs, generated CSVs). Dropped without commit(), it removes
// its temporary.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  void write(std::string_view bytes);
  void commit();  // flush, fsync, rename into place, fsync the directory
  const std::filesystem::path& path() const { return path_; }

 private:
  [[noreturn]] void fail(const char* what, int error);

  std::filesystem::path path_, temp_;
  std::FILE* file_ = nullptr;
};

// The whole file at once (models, checkpoints, ids, configs, metrics).
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// Makes a rename or a creation inside `dir` durable.
void fsync_directory(const std::filesystem::path& dir);

// Gives `to`, a directory built to replace the directory `from`, and everything in it the modes
// of `from` (a 700 dataset stays 700): a file or subdirectory `from` also has keeps its mode, any
// other file gets the directory's mode without execute bits, any other subdirectory the
// directory's mode. An AtomicFile that replaces a file keeps that file's mode the same way.
void copy_permissions(const std::filesystem::path& from, const std::filesystem::path& to);

// Removes what writers that died (kill -9, power loss) left in `dir`: entries named as temporary
// files and directories are (".X.tmp-PID...", ".X.old-PID...", and the older models' and
// checkpoints' "X.tmpPID") whose PID no longer runs. Returns how many were removed. Never throws.
size_t remove_stale_temporaries(const std::filesystem::path& dir);

// The process id a temporary's name holds, or 0 when the name is not a temporary's.
long temporary_owner(const std::string& name);

}  // namespace tastebud
