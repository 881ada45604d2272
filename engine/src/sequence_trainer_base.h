// What the sequence model's two trainers share (tastebud/engine/sequence_trainer.h): the checked
// state, each user's windows, the items each user's negatives avoid, the epoch's order and loop,
// and a range of the order filled into packed sequences with each position's target, negatives
// and weight. The CPU trainer (sequence_trainer_cpu.cpp) and the CUDA one
// (sequence_trainer_cuda.cpp, CUDA builds) implement one batch each and own where the parameters
// live while they train. Internal to the engine.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "cpu/sampler.h"
#include "sequence_pass.h"
#include "tastebud/engine/sequence_trainer.h"

namespace tastebud {

class SequenceTrainerBase {
 public:
  SequenceTrainerBase(const SequenceSet& data, const SequenceTrainOptions& options, SequenceState state);
  virtual ~SequenceTrainerBase() = default;

  EpochStats train_epoch(uint32_t epoch, const ProgressFn& progress);
  uint64_t positions_per_epoch() const;
  // The state as it trains: the parameters and moments copied into state_ first.
  virtual const SequenceState& state() = 0;

 protected:
  struct Window {
    uint32_t user;
    uint64_t last;       // its last target's index in data.items
    uint64_t positions;  // targets (and inputs): at most max_sequence
  };

  // Sequences order[first, end) into one batch: forward, loss, backward, update. False when its
  // loss is not finite (no update); loss gains the batch's summed loss otherwise.
  virtual bool train_batch(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end,
                           double& loss) = 0;

  // Sequences order[first, end) appended to seqs (their dropout ids their places g in the
  // epoch), and per position its target then `negatives` Philox draws (slot_items) and its
  // target's weight (weight): every backend draws the same negatives.
  void fill(uint32_t epoch, std::span<const uint64_t> order, uint64_t first, uint64_t end, PackedSequences& seqs,
            std::vector<uint32_t>& slot_items, std::vector<float>& weight) const;
  uint64_t positions_of(uint64_t window) const { return windows_[window].positions; }
  // The positions of sequences order[first, end): a batch's loss is their mean.
  uint64_t positions_in(std::span<const uint64_t> order, uint64_t first, uint64_t end) const;
  const SequenceConfig& config() const { return state_.params.config; }

  const SequenceSet& data_;
  SequenceTrainOptions options_;
  SequenceState state_;
  SequenceLayout layout_;
  float beta_ = 1.0f;  // gBCE's calibration of the positive
  // Per item: its E row does not step (item metadata: the items no sequence holds, whose E rows
  // stay zero; update mode: the items it leaves); empty: every row steps.
  std::vector<uint8_t> frozen_;

 private:
  void build_windows();
  void build_known_items();

  std::vector<Window> windows_;
  std::vector<uint64_t> known_offsets_;
  std::vector<uint32_t> known_;
  cpu::AliasTable alias_;
};

std::unique_ptr<SequenceTrainerBase> make_cpu_sequence_trainer(const SequenceSet& data,
                                                               const SequenceTrainOptions& options,
                                                               SequenceState state);
// Throws an Error saying why in builds without CUDA or without a usable GPU.
std::unique_ptr<SequenceTrainerBase> make_cuda_sequence_trainer(const SequenceSet& data,
                                                                const SequenceTrainOptions& options,
                                                                SequenceState state);

}  // namespace tastebud
