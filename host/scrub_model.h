// delete-users --model: a trained model directory without some users. Their rows leave the id
// tables of model.bin and checkpoint.bin (with their optimizer state), their ids leave
// user_ids.json and their rows seen.bin, so batch jobs treat them as unknown users. The directory
// is rebuilt beside itself and swapped in (base/directory_swap.h): readers see it before or
// after, never half of it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tastebud/directory_lock.h"

namespace tastebud::datasets {
class Dataset;
}

namespace tastebud::host {

struct ScrubReport {
  std::filesystem::path dir;  // the directory rewritten (a symlink such as `current` resolved)
  uint32_t users_removed = 0;
  uint32_t users_left = 0;
};

// Holds the model directory's DirectoryLock. Ids the model does not know are ignored; when it
// knows none of them nothing is rewritten. What a killed scrub left beside the directory (its
// rebuilt or its swapped-out copy, both holding the users) is removed first.
ScrubReport scrub_users_from_model(const std::filesystem::path& model_dir,
                                   const std::vector<std::string>& user_ids);

// What `delete-users --model PATH` scrubs: a model directory, or every version of a retrain
// directory (PATH is the retrain directory, its `current` link or one of its versions), so that no
// version a server could promote or roll back to keeps a deleted user. Construction checks and
// locks all of it (a retrain directory's lock: no retrain promotes a candidate meanwhile) and
// throws before anything is written; scrub() then rewrites them.
class ModelsToScrub {
 public:
  explicit ModelsToScrub(const std::filesystem::path& model);
  std::vector<ScrubReport> scrub(const std::vector<std::string>& user_ids) const;

 private:
  std::unique_ptr<DirectoryLock> lock_;
  std::filesystem::path retrain_dir_;  // empty: one model directory
  std::vector<std::filesystem::path> models_;
};

// The users a model holds that `dataset` no longer has (deleted while the model trained on an
// older copy of it) leave the model: retrain calls it, holding the dataset's lock, before it
// promotes a candidate.
ScrubReport scrub_users_missing_from(const std::filesystem::path& model_dir,
                                     const datasets::Dataset& dataset);

}  // namespace tastebud::host
