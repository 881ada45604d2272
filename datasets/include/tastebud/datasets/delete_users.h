// `tastebud delete-users`: a dataset without some users. Their interactions, their Users rows and
// their ids leave every column; the dataset is rebuilt in a temporary directory beside it and
// swapped in, so a reader sees it before or after, never half of it. Each deletion appends a line
// to DATASET/deletions.jsonl (when, how many users and interactions, which dataset), with no ids.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tastebud::datasets {

struct DeleteUsersReport {
  uint64_t requested = 0;      // distinct ids asked for
  uint32_t users_deleted = 0;  // of them, the ids the dataset had
  uint64_t interactions_deleted = 0;
  uint32_t users_left = 0;
  uint64_t interactions_left = 0;
};

// Removes `user_ids` from the dataset at `dir` (ids it does not hold are counted, not an error).
// Holds the dataset's DirectoryLock; throws tastebud::Error naming the file on a column it cannot
// rewrite, leaving the dataset as it was.
DeleteUsersReport delete_users(const std::filesystem::path& dir,
                               const std::vector<std::string>& user_ids);

// The USER_ID column of a CSV with a header row (other columns ignored), distinct, in file order.
// Throws naming the file, the line and the field for a missing column or an empty id.
std::vector<std::string> read_user_id_list(const std::filesystem::path& path);

// The files of a dataset directory that are not columns and outlive every rewrite of it (the
// deletion audit log): an import that rebuilds `to` from `from` copies them over.
void carry_over_dataset_files(const std::filesystem::path& from, const std::filesystem::path& to);

// Every rewrite (import, delete-users) replaces the whole dataset directory: an entry that is not
// the dataset's (a model trained into it, a retrain directory, notes) would be lost or copied with
// the users a deletion removes. Throws naming the first such entry of `dir`, before `job` writes.
void check_only_dataset_entries(const std::filesystem::path& dir, std::string_view job);

// Throws when `path` (the parameter `name` of a job that writes there, e.g. "out") lies inside the
// dataset directory `dataset`, which the next import would replace.
void check_outside_dataset(const std::filesystem::path& path, const std::filesystem::path& dataset,
                           std::string_view name);

}  // namespace tastebud::datasets
