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

}  // namespace tastebud::cuda
