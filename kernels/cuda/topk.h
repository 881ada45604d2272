// Per-user top-k on the GPU for evaluation scoring: the twin of cpu/topk.h, with the same order
// (higher score first, equal scores by lower index, NaN never selected).
#pragma once

#include <cstdint>

#include "cuda/common.h"

namespace tastebud::cuda {

// scores: [users x n], rows `ld` floats apart. out: [users x k]; a row with fewer than k
// selectable scores is padded with UINT32_MAX. One block per user and k rounds of a block-wide
// arg-max: simple, and plenty for k <= 100 and catalogs of tens of thousands of items.
void top_k(const float* d_scores, int64_t users, int64_t n, int64_t ld, int k, uint32_t* d_out,
           StreamHandle stream);

// Batch inference: the k best of each row with their scores, in one pass over the row. Items are
// skipped when NaN or, with d_allowed (n bytes, shared by all rows), when allowed[i] == 0; a row
// with fewer than k left is padded with item UINT32_MAX and score -inf. Same order as above.
// One block per row keeps its best k sorted in shared memory and appends the items that beat the
// current k-th to a candidate buffer, which is merged in (bitonic sort) when full: after the first
// thousand items only a few per thousand pass, so the row is read once and merges are rare.
// k <= kMaxSelectK.
constexpr int kMaxSelectK = 2048;
void select_top_k(const float* d_scores, int64_t users, int64_t n, int64_t ld,
                  const uint8_t* d_allowed, int k, uint32_t* d_items, float* d_top_scores,
                  StreamHandle stream);

// scores[u * ld + items[j]] = NaN for j in [offsets[u], offsets[u + 1]), u < users: the items a
// user must not be recommended (offsets[0] == 0; every item < ld).
void exclude_items(float* d_scores, int64_t users, int64_t ld, const uint64_t* d_offsets,
                   const uint32_t* d_items, StreamHandle stream);

}  // namespace tastebud::cuda
