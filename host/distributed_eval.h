// Evaluation split across the ranks of a job (mpirun -np N tastebud train): every rank scores a
// contiguous share of the evaluated users, with its users' rows and the item tables (the user
// tables stay sharded), and rank 0 receives the per-user
// values in split order, so the metrics and their bootstrap intervals are exactly the ones one
// process computes. Each call is collective; one process runs it alone.
#pragma once

#include <cstddef>
#include <span>

#include "host/evaluation.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/features.h"
#include "tastebud/engine/model.h"

namespace tastebud::host {

// Rank r's share of `users` evaluated users: [r * users / N, (r + 1) * users / N).
UserRange rank_share(size_t users, int rank, int ranks);

// What rank r scores its users with when the id tables are sharded (held.sharded()): the dense
// layers and metadata tables of held (replicated), the whole item tables (all-gathered: items are
// few next to users) and the rows of `users` alone, fetched once from their owners, as users
// 0, 1, ... of a model of users.size() users. Collective. held whole (one process): a copy.
ModelParams share_model(Communicator& comm, const ModelParams& held, std::span<const uint32_t> users);
// Entities `ids` of in, as entities 0, 1, ...: the users' metadata beside share_model's rows.
FeatureInputs subset_entities(const FeatureInputs& in, std::span<const uint32_t> ids);

// The model's metrics on split, each rank scoring its share of the users: with held sharded
// through share_model (rank r holds its shard, its users' rows and the item tables, never the
// whole user tables); whole, through one Scorer. user_features, item_features: the training
// set's metadata inputs (used when the config enables them); context_rows: one entity per eval
// user (used when the model has context). Rank 0 gets the metrics.
Metrics evaluate_model(Communicator& comm, const Split& split, const ModelParams& held, const FeatureInputs& user_features,
                       const FeatureInputs& item_features, const FeatureInputs& context_rows, uint32_t threads);

// Rank 0: every rank's values, concatenated in rank order. The others: empty.
UserValues gather_user_values(Communicator& comm, const UserValues& mine);

// The split's metrics, each rank scoring its share of the users (score must work on every rank);
// rank 0 gets them, the other ranks an empty map.
Metrics evaluate_across_ranks(Communicator& comm, const Split& split, const ScoreFn& score, uint32_t threads);

}  // namespace tastebud::host
