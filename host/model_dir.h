// A trained model's directory: what inference needs besides the parameters.
//   config.json      the model and training configuration, the dataset it came from
//   model.bin        parameters of the best epoch          (engine/model_io.h)
//   checkpoint.bin   parameters and optimizer state of the last finished epoch
//   metrics.jsonl    one row per epoch
//   user_ids.json, item_ids.json   dense index -> external id
//   seen.bin         the training positives per user (CSR), removed from recommendations
//   excluded.bin     when the model names event types to leave out (--exclude-events, a use case
//                    that leaves out only purchases): each user's items of those types, removed
//                    from recommendations instead of seen.bin's
//   recipe.bin       recipes; sasrec: popularity and each user's latest items
//   sequence.bin, sequence_checkpoint.bin   sasrec: the best epoch's parameters; the last finished
//                    epoch's parameters, Adam's moments and progress (host/sequence_training.h)
//   vocabularies.json  metadata models: each categorical field's values by table row,
//                    {"user"|"item": {FIELD: [value, ...]}} (a warm start matches rows by value)
// Binary files end in a CRC-32 (tastebud/checksum.h); config.json holds the id files' CRC-32s.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tastebud/datasets/dataset.h"

namespace tastebud::host {

struct SeenItems {
  std::vector<uint64_t> offsets;  // users + 1
  std::vector<uint32_t> items;    // sorted per user
};

void write_ids(const datasets::StringTable& ids, const std::filesystem::path& path);
std::vector<std::string> read_ids(const std::filesystem::path& path);

void write_seen(const SeenItems& seen, const std::filesystem::path& path);
// Validates what it reads (checksum, counts within the file, offsets increasing, item indices
// below num_items, each user's items sorted): a damaged file is an Error "corrupt: FILE: ...".
SeenItems read_seen(const std::filesystem::path& path, uint32_t num_items);
void check_seen(const SeenItems& seen, uint32_t num_items, const std::filesystem::path& path);
// excluded.bin: per user, the items of the user's events of `event_types` (names matched as
// find_event_type does; "none": no type) over the rows of `dataset`, each type's `latest` newest
// only (0: all), sorted, in seen.bin's format.
void write_excluded(const datasets::Dataset& dataset, const std::vector<std::string>& event_types, uint32_t latest,
                    const std::filesystem::path& path);

// The CRC-32 of the id files (and vocabularies.json when there is one), which config.json records ("checksums") after they are written;
// check_file_checksums throws "corrupt: FILE" for a file whose bytes no longer match.
nlohmann::json file_checksums(const std::filesystem::path& dir);
void check_file_checksums(const nlohmann::json& config, const std::filesystem::path& dir);
// config.json's own text: the config with checksums["config.json"], the CRC-32 of its compact dump
// without that entry, so check_file_checksums finds a changed value in config.json itself too.
std::string config_file_text(nlohmann::json config);

// Refuses (Error naming `flag`) an output that would replace what the job reads: `input` itself
// (empty: none), or a file a model directory holds (model.bin, checkpoint.bin, config.json, ids,
// seen.bin, ...). Called before anything is loaded or written.
void check_output_apart(const std::filesystem::path& output, const std::filesystem::path& model_dir,
                        const std::filesystem::path& input, std::string_view flag);

// External id -> dense index.
std::unordered_map<std::string, uint32_t> index_ids(const std::vector<std::string>& ids);

}  // namespace tastebud::host
