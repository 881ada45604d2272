// Warm start and update mode (train --warm-start MODEL_DIR [--update]): a run's first state taken
// from a previous model, its rows matched to the dataset's ids by external id (never by index), and
// the rows of the users and items that changed since that model, which alone train in update mode.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/trainer.h"

namespace tastebud::host {

// A trained model directory read for a warm start: its parameters (model.bin, the model that was
// served) and, where its checkpoint.bin fits them, the optimizer state and step of its last epoch.
struct ParentModel {
  std::filesystem::path dir;  // canonical: a `current` symlink resolved to its version
  nlohmann::json config;      // its config.json
  std::vector<std::string> user_ids, item_ids;
  TrainState state;
  // Several ranks (some_rows): the parent rows (ascending) that state's user and item tables
  // hold, the ones this rank's own rows come from; otherwise the tables are whole.
  bool some_rows = false;
  std::vector<uint64_t> user_rows, item_rows;
  bool optimizer_state = false;  // state.state0/state1/step came from checkpoint.bin
  std::string optimizer;         // the optimizer it trained with
  // Its vocabularies.json ({"user"|"item": {FIELD: [values]}}); null for a model without one,
  // whose metadata tables then match row by row and must keep their sizes.
  nlohmann::json vocabularies;
};

// Throws tastebud::Error naming the directory for a recipe, a missing model.bin or a damaged file.
// With dataset and ranks > 1, rank `rank` reads only the parent's id-table rows that its own rows
// of the dataset's ids (u % ranks == rank) come from, so no rank holds the parent's whole tables.
ParentModel load_parent_model(const std::filesystem::path& dir, const datasets::Dataset* dataset = nullptr,
                              uint32_t rank = 0, uint32_t ranks = 1);

// Throws, naming every difference (model kind, factors, layers, metadata tables, context), unless
// `config` has the parent's shape; the user and item counts may differ, and so may the number of
// values of a categorical metadata field when the parent records them (vocabularies.json).
void check_same_shape(const ParentModel& parent, const ModelConfig& config);

// The first state over the dataset's ids (fresh may be a rank's share, ModelParams::sharded, with
// the parent loaded for that rank): every id-table row of an id the parent knew is the
// parent's row (values and, with `optimizer_state` and the same optimizer, its optimizer state);
// the rows of new ids and, without the parent's optimizer state, every state stay as in `fresh`.
// Dense layers, head, numeric projections and the context table are the parent's; a metadata
// table's row of a categorical value the parent knew (by value, through its vocabularies.json) or
// of a text bucket is the parent's row, a new value's row stays as in `fresh`. `kept_users` /
// `kept_items` (may be null) count the matched ids.
TrainState warm_start_state(const ParentModel& parent, TrainState fresh,
                            const datasets::Dataset& dataset, const std::string& optimizer,
                            uint32_t* kept_users, uint32_t* kept_items);

// vocabularies.json (host/model_dir.h) of a metadata model: the categorical values behind its
// tables' rows, which a later warm start matches by value. Writes nothing without categorical
// metadata fields.
void write_vocabularies(const datasets::Dataset& dataset, const ModelConfig& config,
                        const std::filesystem::path& path);

// What config.json records about the data a model trained on: the path, the counts and the newest
// interaction's TIMESTAMP ("last_timestamp"), the end an update compares against.
nlohmann::json dataset_record(const datasets::Dataset& dataset);
// What a warm-started model's config.json records about its parent: the path, its config.json's
// CRC-32 and the dataset it was trained on.
nlohmann::json parent_record(const ParentModel& parent);

// Update mode: the users and items that train. An id is changed when the parent did not know it
// or when it has an interaction newer than the parent's dataset end (last_timestamp); a parent
// that does not record its dataset end (trained before it was recorded) changes new ids only.
struct ChangedRows {
  std::vector<uint8_t> users, items;  // one flag per dataset index
  std::vector<uint8_t> new_items;     // the items the parent did not know
  uint32_t changed_users = 0, changed_items = 0;
  bool dataset_end_known = false;
  // No id is new and none has an interaction newer than the parent's dataset end: an update has
  // nothing to train and the parent stays the model.
  bool none() const { return changed_users == 0 && changed_items == 0; }
};
ChangedRows changed_rows(const ParentModel& parent, const datasets::Dataset& dataset);

// What update mode trains on: the positives of `train` whose user changed (the whole history of
// a changed user, so that its row fits all of it) or whose item is new (likewise), with the same
// per-user and per-item inputs (impressions, metadata). An old item with new interactions trains
// through the changed users' positives, which hold them: an item's every positive would make the
// refresh of a popular item an epoch. Throws when there are none.
TrainingSet changed_positives(const TrainingSet& train, const ChangedRows& changed);

// The training job's two steps, each saying what it did on `log`: the warm state (warm_start_state
// with the counts), and update mode's positives with the masks and frozen dense layers set in
// `options`.
TrainState start_warm(const ParentModel& parent, TrainState fresh, const datasets::Dataset& dataset,
                      const std::string& optimizer, std::ostream& log);
TrainingSet start_update(const ParentModel& parent, const datasets::Dataset& dataset,
                         const TrainingSet& train, TrainOptions& options, std::ostream& log);

}  // namespace tastebud::host
