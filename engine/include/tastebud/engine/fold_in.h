// A user's rows learned from a few events with everything else frozen: how a neural model answers
// events it has not trained on (an anonymous session, or a user's latest events) without a
// retrain. A few Adam steps of the training loss (BCE, `negatives` Philox-drawn negatives per
// positive, none of them a positive) on the user's GMF and MLP rows alone; the item tables, the
// dense layers and the head stay as they are. The forward and backward pass are the training's
// own (kernels/cpu/neumf.h), so the rows are what training would move them to with the item side
// fixed. Deterministic for a seed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tastebud/engine/model.h"

namespace tastebud {

struct FoldInOptions {
  uint32_t steps = 30;
  uint32_t negatives = 4;
  float lr = 0.05f;
  float l2 = 1e-4f;
  uint64_t seed = 0;
};

// One user's rows: GMF (factors wide; empty without a GMF branch) and MLP (E wide; empty without).
struct UserRows {
  std::vector<float> gmf, mlp;
};

// The trained rows of `user`.
UserRows user_rows(const ModelParams& params, uint32_t user);
// A new user's starting rows: zeros (MF: its constant column at one, as every user row has it).
UserRows new_user_rows(const ModelParams& params);
// `start` moved toward `positives` (item indices); an empty list returns `start` unchanged.
UserRows fold_in_user(const ModelParams& params, UserRows start, std::span<const uint32_t> positives,
                      const FoldInOptions& options = {});

}  // namespace tastebud
