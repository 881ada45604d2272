// Directories that change in one step, the directory-level twin of atomic_file.h. Every job that
// rewrites a whole directory (import, delete-users, scrub of a model) builds the new one beside
// the old under a temporary name, fsyncs it, exchanges it with the old in one rename, fsyncs the
// parent and removes the old copy; a reader sees the old directory or the new one, never half
// of either and never neither. Retrain's `current` link changes the same way (replace_symlink).
#pragma once

#include <filesystem>

namespace tastebud {

// A directory built to replace (or create) `target`.
//
// The constructor first cleans what killed writers left beside `target` (remove_stale_temporaries
// of its parent; and where a writer died between the two renames of the fallback below, leaving
// no `target` but its ".NAME.old-PID-N", that old directory is put back), then creates the empty
// temporary ".NAME.tmp-PID-N" beside `target`: write the new directory there (path()).
//
// commit(): gives the files the modes of the old directory (copy_permissions), fsyncs every file
// and directory of the build, puts it at `target`, fsyncs the parent (an error throws) and removes
// the old directory. Where `target` exists the two are exchanged by renameat2(RENAME_EXCHANGE).
// The one fallback rule: where the file system refuses the exchange (EINVAL, ENOSYS, EOPNOTSUPP),
// the old directory is renamed aside to ".NAME.old-PID-N", then the new one in (and the old back
// if that fails); any other error throws with `target` untouched.
//
// Dropped without commit() (an exception while building, a failed commit before the rename), it
// removes the temporary and `target` stays as it was.
class DirectoryReplacement {
 public:
  explicit DirectoryReplacement(std::filesystem::path target);
  DirectoryReplacement(const DirectoryReplacement&) = delete;
  DirectoryReplacement& operator=(const DirectoryReplacement&) = delete;
  ~DirectoryReplacement();

  const std::filesystem::path& path() const { return temp_; }  // where the new directory is built
  const std::filesystem::path& target() const { return target_; }
  void commit();

 private:
  std::filesystem::path target_, temp_;
};

// Makes the symlink `link` point to `points_to` in one step: a temporary symlink beside it,
// renamed over it, then fsync of the parent (an error throws). A writer killed in between leaves
// a ".NAME.tmp-PID-N" link that remove_stale_temporaries removes.
void replace_symlink(const std::filesystem::path& link, const std::filesystem::path& points_to);

// The fallback rule of DirectoryReplacement::commit on its own (declared for its test): `target`
// renamed aside to ".NAME.old-PID-N", `built` renamed to `target` (on failure the old one back and
// an Error), then the old directory renamed to `built`, where the caller removes it.
void replace_by_two_renames(const std::filesystem::path& built, const std::filesystem::path& target);

// fsync of every file and directory under `dir`, and of `dir`.
void fsync_tree(const std::filesystem::path& dir);

}  // namespace tastebud
