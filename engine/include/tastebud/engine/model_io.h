// Model and checkpoint files: a JSON header (config, counters) and named float tensors, written to
// a temporary name and renamed into place so a reader never sees half a file.
#pragma once

#include <filesystem>
#include <string>

#include "tastebud/atomic_file.h"  // write_file_atomically, which model files are written with
#include "tastebud/engine/trainer.h"

namespace tastebud {

// Format: "TBTENSOR" | u32 version | u64 header length | header (JSON text) | u64 tensor count |
// per tensor: u32 name length, name, u32 rank, u64 dims[rank], float values[prod(dims)] |
// (version 2) the checksum trailer of tastebud/checksum.h. Version 1 files (no trailer) still load.
// A damaged file is an Error starting "corrupt: FILE".
inline constexpr uint32_t kTensorFileVersion = 2;

std::string config_to_json(const ModelConfig& config);
ModelConfig config_from_json(const std::string& json_text, const std::string& what);

// model.bin: the parameters only.
void save_model(const ModelParams& params, const std::filesystem::path& path);
ModelParams load_model(const std::filesystem::path& path);

// checkpoint.bin: parameters, optimizer state, steps, and the caller's JSON (epoch, history, ...).
void save_checkpoint(const TrainState& state, const std::string& extra_json,
                     const std::filesystem::path& path);
TrainState load_checkpoint(const std::filesystem::path& path, std::string* extra_json);

}  // namespace tastebud
