// Evaluation split across the ranks of a job (mpirun -np N tastebud train): every rank scores a
// contiguous share of the evaluated users with the whole model, and rank 0 receives the per-user
// values in split order, so the metrics and their bootstrap intervals are exactly the ones one
// process computes. Each call is collective; one process runs it alone.
#pragma once

#include <cstddef>

#include "host/evaluation.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/model.h"

namespace tastebud::host {

// Rank r's share of `users` evaluated users: [r * users / N, (r + 1) * users / N).
UserRange rank_share(size_t users, int rank, int ranks);

// Rank 0's parameters (the whole model: the other ranks' state has no id tables) copied to every
// rank, tensor by tensor, each sized from its shape.
void broadcast_params(Communicator& comm, ModelParams& params);

// Rank 0: every rank's values, concatenated in rank order. The others: empty.
UserValues gather_user_values(Communicator& comm, const UserValues& mine);

// The split's metrics, each rank scoring its share of the users (score must work on every rank);
// rank 0 gets them, the other ranks an empty map.
Metrics evaluate_across_ranks(Communicator& comm, const Split& split, const ScoreFn& score, uint32_t threads);

}  // namespace tastebud::host
