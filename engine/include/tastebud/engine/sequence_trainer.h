// Training the sequence model (engine/sequence_model.h) on the CPU or the GPU: every user's latest items
// predict the next item at each position, against `negatives` sampled items per position (the
// Philox sampler the other models use, the user's own items rejected), with gSASRec's gBCE loss
// (t = gbce_t; 0 is plain BCE), Adam on the dense tensors and lazily on the item rows a batch
// touched. Batches are cut into chunks of a fixed number of sequences, run in parallel with their
// own gradients and summed in chunk order, and item rows are summed in a fixed order: a seed gives
// the same model at any thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tastebud/engine/sequence_model.h"
#include "tastebud/feature_view.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/optim_math.h"

namespace tastebud {

class SequenceTrainerBase;  // engine/src/sequence_trainer_base.h

struct SequenceTrainOptions {
  uint32_t batch_size = 128;  // sequences per step
  uint32_t negatives = 1;     // sampled items per position
  float gbce_t = 0.0f;        // gSASRec's calibration (0.75 in its paper, with many negatives); 0: plain BCE
  SamplerKind sampler = SamplerKind::kUniform;
  float sampler_alpha = 0.75f;
  OptimizerParams optimizer;  // Adam (host/train_plan.cpp sets lr 0.005 for sasrec)
  // The item rows a step did not use: kLazy leaves them, kDense gives each a zero-gradient Adam
  // step (its momentum carries it on), as torch.optim.Adam does for a dense nn.Embedding.
  EmbeddingUpdates embedding_updates = EmbeddingUpdates::kLazy;
  uint64_t seed = 1;
  uint32_t threads = 0;       // 0: all cores
  // The CUDA trainer (engine/src/sequence_trainer_cuda.cpp): the same batches, negatives and
  // dropout on the GPU, sums in the GPU's own fixed order (so near the CPU's, not its bits). It
  // needs a CUDA build and a usable GPU (an Error says which is missing).
  bool cuda = false;
  // Update mode: only the item rows flagged here train (one flag per item; empty: every row), and
  // with freeze_dense the positions, blocks and final norm stay as they are (a model with item
  // metadata rows is refused: update mode trains the folded model).
  std::vector<uint8_t> trainable_items;
  bool freeze_dense = false;

  // Throws an Error naming the parameter that is out of range.
  void check() const;
};

// Each user's training sequence, oldest first, and each event's weight (CSR over users).
struct SequenceSet {
  uint32_t num_items = 0;
  std::vector<uint64_t> offsets;  // users + 1
  std::vector<uint32_t> items;
  std::vector<float> weights;
  // The items' metadata (its arrays owned by the caller) when the model has F and N
  // (SequenceConfig::feature_rows, numeric); empty otherwise.
  FeatureView item_features;

  uint32_t num_users() const { return offsets.empty() ? 0 : static_cast<uint32_t>(offsets.size() - 1); }
};

// Adam's two moments of every parameter and the steps taken: with the parameters, what a run
// resumes from.
struct SequenceState {
  SequenceParams params;
  std::vector<float> m, v;
  uint64_t step = 0;
};

class SequenceTrainer {
 public:
  SequenceTrainer(const SequenceSet& data, const SequenceTrainOptions& options, SequenceState state);
  ~SequenceTrainer();

  // One pass over every user's history in windows of max_sequence positions (the newest window
  // first, each older one max_sequence items further back; a user with one item has none), in a
  // Philox order of the seed and epoch; EpochStats::samples counts the positions trained (a
  // position: one next item predicted).
  EpochStats train_epoch(uint32_t epoch, const ProgressFn& progress);
  uint64_t positions_per_epoch() const;
  const SequenceState& state() const;

 private:
  std::unique_ptr<SequenceTrainerBase> impl_;
};

}  // namespace tastebud
