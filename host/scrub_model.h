// delete-users --model: a trained model directory without some users. Their rows leave the id
// tables of model.bin and checkpoint.bin (with their optimizer state), their ids leave
// user_ids.json and their rows seen.bin, so batch jobs treat them as unknown users. The directory
// is rebuilt beside itself and swapped in (renameat2 RENAME_EXCHANGE): readers see it before or
// after, never half of it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace tastebud::host {

struct ScrubReport {
  std::filesystem::path dir;  // the directory rewritten (a symlink such as `current` resolved)
  uint32_t users_removed = 0;
  uint32_t users_left = 0;
};

// Holds the model directory's DirectoryLock. Ids the model does not know are ignored; when it
// knows none of them nothing is rewritten.
ScrubReport scrub_users_from_model(const std::filesystem::path& model_dir,
                                   const std::vector<std::string>& user_ids);

}  // namespace tastebud::host
