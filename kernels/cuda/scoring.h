// Scoring many users against the whole catalog on the GPU, for batch inference: the twin of the
// catalog loop of engine/src/scorer.cpp (the first MLP layer split into a per-user and a per-item
// half, the item half computed once for the catalog). Logits only; selection is in cuda/topk.h.
//
// Two paths write the same [users x items] logits:
//   - the fused tower (score_catalog_fused): one kernel per group of users computes, for every
//     item, relu(user half + item half), the remaining dense layers and the head, with the
//     activations in registers and the small weight matrices in shared memory. The paper's model
//     (layers 64,32,16,8) spends ~700 FMAs per (user, item) pair and moves 4 bytes (its logit), so
//     the pass is bound by FP32 issue, not memory: materialising [pairs x 32] activations for
//     cuBLAS would move ~50x more bytes and run GEMMs 16 and 8 columns wide. Each thread takes one
//     item and the block's kTowerUsers users, so every weight read from shared memory feeds several
//     FMAs and the item's row is read once for all of them. Layer widths are compile-time
//     (registers need fixed indices): a model runs on the smallest instantiated shape of its depth
//     whose widths are each at least its own, zero-padded; padding is exact (a padded unit is
//     relu(0 + 0) = 0 and its outgoing weights are 0).
//   - the layered path (pair_first_layer, cuda::dense_forward, pair_head) for models no fused shape
//     fits (a layer wider than 64, more than four layers): activations of a (users x item tile)
//     block go through cuBLAS, which is the right tool at those widths.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cuda/common.h"

namespace tastebud::cuda {

// mlp_rows[r, j] = user_mlp[users[r], j] + (contexts ? contexts[r, j] : 0), j < e;
// head_rows[r, j] = user_gmf[users[r], j] * head_weight[j], j < f (nothing when f == 0): the user's
// GMF factors folded into the head, so a pair's GMF term is one dot product with the item's.
void gather_user_inputs(const float* d_user_mlp, int64_t e, const float* d_user_gmf, int64_t f,
                        const float* d_head_weight, const uint32_t* d_users, int64_t count,
                        const float* d_contexts, float* d_mlp_rows, float* d_head_rows,
                        StreamHandle stream);

// One side's half of the first MLP layer: out[r, j] = (bias ? bias[j] : 0) + in[r, :] . weight[:,
// j] for j < width, and 0 for width <= j < padded. in: [rows x in_width], weight: [in_width x
// width] row-major, out: [rows x padded].
void first_layer_half(const float* d_in, int64_t rows, int64_t in_width, const float* d_weight,
                      const float* d_bias, int64_t width, int64_t padded, float* d_out,
                      StreamHandle stream);

// Users per block of the fused tower for these padded widths (rows of user_part read together).
int fused_tower_users(std::span<const int64_t> padded_widths);

// The fused shapes: `hidden` are the model's widths after the concatenated embedding (layers[1..]).
// Returns the padded widths of the smallest fused shape that holds them, or empty when none does
// (use the layered path). A GMF-only model (hidden empty) always runs fused: returns empty too, and
// score_catalog_fused takes empty widths as "no MLP".
std::vector<int64_t> fused_tower_widths(std::span<const int64_t> hidden);

// The tower weights as the fused kernel reads them, zero-padded to `padded` widths: for each dense
// layer j >= 1 (input widths[j-1], output widths[j]) the weight [padded[j-1] x padded[j]]
// row-major, then the bias [padded[j]]; last the MLP half of the head weight [padded.back()].
// weights[j] and biases[j] are the model's, unpadded (weights[0] / biases[0], the split first
// layer, are not read); head_mlp is head_weight + factors.
std::vector<float> pack_tower(std::span<const int64_t> widths, std::span<const int64_t> padded,
                              std::span<const float* const> weights,
                              std::span<const float* const> biases, const float* head_mlp);

// What the scoring kernels read of the model, on the device.
struct CatalogModel {
  int64_t items = 0;
  int64_t factors = 0;               // GMF width; 0 without a GMF branch
  const float* item_gmf = nullptr;   // [items x factors]
  std::vector<int64_t> widths;       // fused: padded widths; layered: the model's; empty: GMF only
  const float* item_part = nullptr;  // [items x widths[0]]: item half of the first layer, no bias
  const float* tower = nullptr;      // fused only: pack_tower(...) on the device
  int64_t tower_floats = 0;
  float head_bias = 0.0f;
};

// scores[u * ld + i] = logit of item i for user u, u < users, i < model.items. user_part:
// [users x widths[0]] (first_layer_half of the users' MLP rows, with the first layer's bias),
// user_head: [users x factors] (gather_user_inputs). users <= 65535 * fused_tower_users(widths).
void score_catalog_fused(const CatalogModel& model, const float* d_user_part,
                         const float* d_user_head, int64_t users, float* d_scores, int64_t ld,
                         StreamHandle stream);

// Layered path, one block of users x a tile of items at a time (rows r = u * items + t):
// out[r, j] = relu(user_part[u, j] + item_part[first_item + t, j]), j < width.
void pair_first_layer(const float* d_user_part, int64_t users, const float* d_item_part,
                      int64_t first_item, int64_t items, int64_t width, float* d_out,
                      StreamHandle stream);
// scores[u * ld + first_item + t] = head_bias + user_head[u, :] . item_gmf[first_item + t, :]
//                                   + top[r, :] . head_mlp. top: the last dense layer's output
//                                   [rows x h].
void pair_head(const float* d_top, int64_t h, const float* d_head_mlp, const float* d_user_head,
               const float* d_item_gmf, int64_t f, float head_bias, int64_t users,
               int64_t first_item, int64_t items, float* d_scores, int64_t ld, StreamHandle stream);

}  // namespace tastebud::cuda
