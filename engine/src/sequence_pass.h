// One forward and backward pass of the sequence model (tastebud/engine/sequence_model.h) over a
// few sequences packed row after row, with what the backward pass needs kept from the forward.
// Internal to the engine: the trainer runs one per chunk of a batch, the encoder one per thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cpu/aligned.h"
#include "tastebud/engine/sequence_model.h"

namespace tastebud {

// Both trainers' layer norms' epsilon.
inline constexpr float kSequenceLayerNormEps = 1e-5f;

// Dropout sites: the input, then per block its attention and feed-forward outputs.
inline uint32_t dropout_sites(const SequenceConfig& c) { return 1 + 2 * c.blocks; }

// Sequences packed without padding rows: sequence b owns rows starts[b] .. starts[b + 1].
struct PackedSequences {
  std::vector<int64_t> starts{0};
  std::vector<uint32_t> input;       // per row: its item
  std::vector<uint32_t> position;    // per row: its position, the newest at max_sequence - 1
  std::vector<uint64_t> dropout_id;  // per sequence: the key of its dropout draws within the epoch

  int64_t rows() const { return starts.back(); }
  size_t count() const { return starts.size() - 1; }
  void clear();
  // Appends a sequence (oldest first, at most max_sequence items) right-aligned in the window.
  void add(std::span<const uint32_t> items, uint32_t max_sequence, uint64_t dropout_id = 0);
  // Where each sequence's attention weights [heads x n x n] start in one buffer (count + 1
  // offsets, the last the total): the layout both backends' passes keep them in.
  void attention_offsets(uint32_t heads, std::vector<int64_t>& offsets) const;
};

// Training's dropout: element c of row r of site s (the input, then each block's attention and
// feed-forward outputs) keeps bit ((id * sites + s) * L + position) * dpad + c of the epoch's
// Philox stream (dropout_keep_bits), so a draw depends on the sequence and never on the chunk
// or thread that runs it.
struct DropoutKeys {
  uint64_t seed = 0;
  uint32_t epoch = 0;
  float rate = 0.0f;
};

class SequencePass {
 public:
  explicit SequencePass(const SequenceConfig& config);

  // params: the whole flat vector; dropout null: none (answering); items: the item rows the input
  // reads ([num_items x d]; null: params' own table E; training with metadata: E plus features).
  void forward(const float* params, const PackedSequences& seqs, const DropoutKeys* dropout,
               const float* items = nullptr);
  const float* hidden() const { return h_.data(); }  // [rows x d]; after forward_newest [count x d]

  // Answering: h of each sequence's newest position alone (hidden() row b for sequence b), the
  // last block run for those rows only (its keys and values still read every row). The same
  // values as forward's rows up to rounding, a third less work for two blocks.
  void forward_newest(const float* params, const PackedSequences& seqs);

  // dh: the loss's gradient w.r.t. hidden(). Adds the dense tensors' gradients to grad_dense
  // (SequenceLayout::dense_size() floats, indexed from dense_begin) and writes d_input [rows x d],
  // the gradient w.r.t. each row's item row. Needs the forward pass just run on the same input.
  void backward(const float* params, const PackedSequences& seqs, const DropoutKeys* dropout, const float* dh,
                float* grad_dense, float* d_input);

 private:
  struct BlockActivations {
    cpu::AlignedVector<float> a1, q, k, v, probs, att, x1, a2, f1, mean1, rstd1, mean2, rstd2;
    std::vector<uint8_t> mask_o, mask_f;
  };
  void resize(const PackedSequences& seqs);
  void input_rows(const float* params, const PackedSequences& seqs, const float* items);
  void block_forward(const float* params, size_t b, const PackedSequences& seqs, const DropoutKeys* dropout);
  void block_backward(const float* params, size_t b, const PackedSequences& seqs, const DropoutKeys* dropout,
                      float* grad_dense, cpu::AlignedVector<float>& dx);
  void attention(size_t b, const PackedSequences& seqs, bool backward);
  void newest_block_forward(const float* params, const PackedSequences& seqs);
  void feed_forward(const float* params, const SequenceLayout::Block& w, BlockActivations& a, int64_t rows);
  void apply_dropout(const PackedSequences& seqs, const DropoutKeys& keys, uint32_t site, float* x,
                     std::vector<uint8_t>& mask) const;

  SequenceConfig config_;
  SequenceLayout layout_;
  int64_t d_ = 0;
  std::vector<cpu::AlignedVector<float>> xs_;  // each block's input, then the last block's output
  std::vector<BlockActivations> acts_;
  std::vector<int64_t> prob_offsets_;   // per sequence: its heads x n x n attention weights
  std::vector<uint8_t> mask_in_;
  cpu::AlignedVector<float> h_, mean_f_, rstd_f_;
  cpu::AlignedVector<float> tmp_, d_tmp_, d_tmp2_, d_f1_, d_a_, d_q_, d_k_, d_v_, d_att_;
};

}  // namespace tastebud
