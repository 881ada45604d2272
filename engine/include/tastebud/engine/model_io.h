// Model and checkpoint files: a JSON header (config, counters) and named float tensors, written to
// a temporary name and renamed into place so a reader never sees half a file.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

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

class Communicator;  // tastebud/engine/comm.h

// The id tables of sharded parameters travel to rank 0 in blocks of about this many bytes.
inline constexpr size_t kRowBlockBytes = size_t{4} << 20;

// model.bin: the parameters only.
void save_model(const ModelParams& params, const std::filesystem::path& path);
// The same file from the parameters each rank holds (params.sharded(): its own id rows, see
// ModelParams::shard_rank): collective, rank 0 writes. Each block of rows of an id table is
// gathered to rank 0 and written before the next, so no rank ever holds a whole table.
void save_model(Communicator& comm, const ModelParams& held, const std::filesystem::path& path,
                size_t block_bytes = kRowBlockBytes);
ModelParams load_model(const std::filesystem::path& path);

// checkpoint.bin: parameters, optimizer state, steps, and the caller's JSON (epoch, history, ...).
void save_checkpoint(const TrainState& state, const std::string& extra_json,
                     const std::filesystem::path& path);
// The same file from each rank's held state (collective, rank 0 writes; see save_model).
void save_checkpoint(Communicator& comm, const TrainState& held, const std::string& extra_json,
                     const std::filesystem::path& path, size_t block_bytes = kRowBlockBytes);
TrainState load_checkpoint(const std::filesystem::path& path, std::string* extra_json);
// Rank `rank` of `ranks`' part of a checkpoint: the file read in pieces, the id tables' rows
// u % ranks == rank kept (ModelParams::sharded), everything else whole; memory: the part and a
// block. The checksum is checked as the file is read.
TrainState load_checkpoint_shard(const std::filesystem::path& path, std::string* extra_json, uint32_t rank,
                                 uint32_t ranks);

// Some rows of a file's id tables: the listed rows (ascending) of every user table and of every
// item table, in that order, each table's values holding only those rows (the shapes stay the
// whole tables'); every other tensor whole. A rank's warm start reads the parent rows its own rows
// come from this way (host/warm_start.h). Memory: the rows and a block; the checksum is checked.
struct RowSelection {
  std::vector<uint64_t> users, items;
};
ModelParams load_model_rows(const std::filesystem::path& path, const RowSelection& rows);
TrainState load_checkpoint_rows(const std::filesystem::path& path, std::string* extra_json, const RowSelection& rows);

}  // namespace tastebud
