// The sequence model (`--model sasrec`): SASRec (Kang & McAuley, Self-Attentive Sequential
// Recommendation, 2018) in its pre-LN form, trained on sampled negatives with gSASRec's loss
// (Petrov & Macdonald, 2023). A user's latest items (oldest first, right-aligned in a window of
// max_sequence positions, so the newest item always sits at position max_sequence - 1) become
//   x = E[item] * sqrt(d) + P[position], dropout,
//   per block:  x += dropout(Wo . attention(LN1(x)))       (causal, multi-head, q/k/v with bias)
//               x += dropout(W2 . relu(W1 . LN2(x) + b1) + b2)
//   h = LN(x),  score(position, item) = h . E[item]       (one table E for input and output).
// With item metadata an item's row is E[item] plus its feature sum (its metadata-table rows F and
// numeric projections N, tastebud/feature_view.h), in the input and the output alike, so an item
// with no history still has a representation; fold_item_features writes that sum into E once
// training is done, and answering reads the folded table only.
// Weights are [in x out], row-major; every tensor lives in one flat float vector (SequenceLayout),
// the item table (then F and N) first, so that the dense rest is one contiguous range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace tastebud {

struct SequenceConfig {
  uint32_t num_items = 0;
  uint32_t hidden = 64;         // d: the item, position and every layer's width
  uint32_t blocks = 2;
  uint32_t heads = 1;           // d must be a multiple of heads
  uint32_t max_sequence = 200;  // L: the latest items a user is read from
  float dropout = 0.2f;         // training only
  uint32_t feature_rows = 0;    // item metadata: rows of the metadata table F (0: none)
  uint32_t numeric = 0;         // item metadata: numeric fields, a projection row each

  // Throws an Error naming the parameter (`hidden`, `heads`, ...) that is out of range.
  void check() const;
  bool has_features() const;
};

// Offsets of every tensor in the flat parameter vector.
struct SequenceLayout {
  struct Block {
    size_t ln1_gamma, ln1_beta, wq, bq, wk, bk, wv, bv, wo, bo, ln2_gamma, ln2_beta, w1, b1, w2, b2;
  };
  size_t items = 0;      // [num_items x d]
  size_t features = 0;   // [feature_rows x d]
  size_t numeric = 0;    // [numeric x d]
  size_t positions = 0;  // [L x d]; also where the dense range begins
  std::vector<Block> blocks;
  size_t final_gamma = 0, final_beta = 0;
  size_t total = 0;

  explicit SequenceLayout(const SequenceConfig& config);
  size_t dense_begin() const { return positions; }
  size_t dense_size() const { return total - positions; }
};

struct SequenceParams {
  SequenceConfig config;
  std::vector<float> values;  // SequenceLayout(config).total

  // Xavier-normal items and positions (N(0, sqrt(2 / (rows + d)))), weights N(0, 1/sqrt(d)),
  // biases 0, layer norms (1, 0);
  // draws keyed by (seed, tensor, index) as every model's are.
  static SequenceParams initialize(const SequenceConfig& config, uint64_t seed);
};

struct FeatureView;

// Every item's row with its metadata: out[i * d ..] = E[i] + the feature sum of item i (F rows and
// numeric projections, add_feature_columns' order). params with no metadata: E itself.
void item_representations(const SequenceParams& params, const float* values, const FeatureView& items, float* out);

// The model that answers exactly as params with these items' metadata, without it: E holds each
// item's row plus its feature sum, F and N are gone (feature_rows and numeric 0).
SequenceParams fold_item_features(const SequenceParams& params, const FeatureView& items);

// Answers from a trained model: h of a sequence's newest position, and items scored against it.
// Thread-safe (each thread keeps its own workspace).
class SequenceEncoder {
 public:
  // params without item metadata (fold_item_features first).
  explicit SequenceEncoder(const SequenceParams& params);
  ~SequenceEncoder();
  SequenceEncoder(SequenceEncoder&&) noexcept;

  uint32_t hidden() const { return params_->config.hidden; }
  const SequenceParams& params() const { return *params_; }
  // h (hidden() wide) after `items` (oldest first; only the newest max_sequence count). An empty
  // sequence gives zeros: every item scores 0.
  void encode(std::span<const uint32_t> items, std::span<float> h) const;
  // out[k] = h . E[items[k]]; items empty: every item (out has num_items entries).
  void score(std::span<const float> h, std::span<const uint32_t> items, std::span<float> out) const;
  // encode, then score.
  void score_sequence(std::span<const uint32_t> sequence, std::span<const uint32_t> items, std::span<float> out) const;

 private:
  const SequenceParams* params_;
  std::unique_ptr<SequenceLayout> layout_;
};

}  // namespace tastebud
