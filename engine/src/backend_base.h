// The training step written once: what the CPU and the CUDA backend share, and the phases each
// of them implements. Internal to the engine.
//
// BackendBase owns the epoch (its batches, the step number, the progress calls, the loss summed
// in batch order, the stop at a non-finite loss, the timing), the state (state(), held_state(),
// load_state() with TrainState::check_fits, the id tables sharded across ranks by RankStep) and
// each step's optimizer rule. A backend implements one step as fixed phases, always called in
// this order, and nothing else of the epoch:
//   fill_rows        the batch rows of this rank's slice (fill_sample); several ranks: the id-table
//                    rows they use, fetched from their owners (RankStep::fetch)
//   gather           the rows' embeddings, plus their metadata and context rows
//   forward_backward the loss (summed over ranks) and every gradient; nothing is updated yet
//                    (these three through rows_and_gradients, which may fuse them)
//   update_dense     the dense update (several ranks: of the gradients summed over ranks)
//   update_tables    the lazy updates of the touched table rows (several ranks: at their owners)
//                    (these two through update, which may overlap them)
// A loss that stays on the device (the CUDA backend in one process) is read once at the end of
// the epoch (read_loss_totals); the step then turns the rest of the epoch's updates into no-ops
// itself after a non-finite loss.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "rank_step.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/param_layout.h"
#include "tastebud/engine/trainer.h"

namespace tastebud {

// One step of an epoch: which samples, which rows this rank computes, and the optimizer's rule.
struct BatchStep {
  uint32_t epoch = 0;
  uint64_t first = 0;     // the batch's first sample of the epoch
  uint32_t samples = 0;   // BCE rows or BPR pairs
  uint64_t index = 0;     // the batch of the epoch
  int64_t rows = 0;       // all ranks' rows (2 * samples with BPR)
  int64_t chunks = 0;     // of chunk_rows(max rows) rows each; the last may be short
  int64_t chunk_begin = 0, chunk_end = 0;  // this rank's chunks (rank_slice): all of them in one process
  int64_t row_begin = 0, row_end = 0;      // their rows (rank_rows)
  float scale = 0.0f;     // 1 / samples: the loss's scale, and the rows' L2 weight
  uint64_t step = 0;      // the optimizer step this batch takes (1-based, over the whole run)
  float step_size = 0.0f;           // Adam's bias-corrected step size, or the learning rate
  OptimizerParams optimizer;        // step_params of the step (Adam's epsilon of step t)
};

class BackendBase : public Backend {
 public:
  uint64_t samples_per_epoch() const final;
  EpochStats train_epoch(uint32_t epoch, const ProgressFn& progress) final;
  // Several ranks: collective; rank 0 gets the whole state, the others the state without the id
  // tables (empty), which only their owners hold.
  TrainState state() final;
  TrainState held_state() final;
  void load_state(const TrainState& state) final;

 protected:
  // Checks the inputs against the state's model (check_training_inputs) and that a sharded state
  // meets as many ranks.
  BackendBase(const TrainingSet& data, const TrainOptions& options, TrainState state);

  // The epoch's start: its shuffle and its counters.
  virtual void begin_epoch(uint32_t epoch) = 0;
  virtual void fill_rows(const BatchStep& batch) = 0;
  virtual void gather(const BatchStep& batch) = 0;
  // The batch's loss summed over ranks, or nullopt where it stays on the device.
  virtual std::optional<double> forward_backward(const BatchStep& batch) = 0;
  // fill_rows, gather and forward_backward in turn; a backend may run the three as one pass over
  // its chunks where nothing crosses ranks between them (the CPU backend in one process).
  virtual std::optional<double> rows_and_gradients(const BatchStep& batch);
  virtual void update_dense(const BatchStep& batch) = 0;
  virtual void update_tables(const BatchStep& batch) = 0;
  // update_dense, then update_tables; a backend may overlap the two (they touch different
  // parameters), as the CPU backend does in one process.
  virtual void update(const BatchStep& batch);
  // The epoch's impression negatives over all ranks (collective on several ranks).
  virtual uint64_t epoch_impressions() = 0;
  struct LossTotals {
    double loss = 0.0;
    uint64_t samples = 0;
    uint64_t batches = 0;  // steps taken
    bool finite = true;
  };
  // Where forward_backward returned no loss: the epoch's totals, read once.
  virtual LossTotals read_loss_totals() { return {}; }
  // The steps replayed from a captured graph since the last call (the CUDA backend's cuda_graph).
  virtual uint64_t take_graph_steps() { return 0; }
  // state_ gets the backend's current values (the id tables only in one process).
  virtual void download_state() = 0;
  // The backend takes state_'s values (its id tables empty when rank_step_ holds them).
  virtual void upload_state() = 0;

  // Shards the id tables on several ranks (rank_step_), then upload_state(): the end of each
  // backend's constructor, and of load_state.
  void install_state();

  bool bpr() const { return options_.loss == LossKind::kBpr; }
  int ranks() const { return options_.comm != nullptr ? options_.comm->size() : 1; }
  const TrainingSet& data_;
  TrainOptions options_;
  TrainState state_;
  ParamLayout layout_;  // roles, shapes and the flat dense offsets of state_'s tensors
  std::unique_ptr<RankStep> rank_step_;  // several ranks: this rank's rows of the id tables, the rows its slice uses
  uint64_t exchanged_bytes_ = 0;         // several ranks: this epoch's bytes the collectives filled, besides rank_step_'s
  // Rows of a full batch, and of each chunk of it (chunk_rows: a function of the batch size only).
  int64_t max_rows_ = 0;
  uint32_t chunk_rows_ = 0;

 private:
  BatchStep batch_step(uint32_t epoch, uint64_t first, uint32_t samples, uint64_t index, uint64_t step) const;
  void check_unsharded() const;
};

}  // namespace tastebud
