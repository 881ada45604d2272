#include "sequence_pass.h"

#include <algorithm>
#include <cmath>

#include "cpu/dense.h"
#include "cpu/sequence.h"
#include "tastebud/sequence_math.h"

namespace tastebud {

namespace {

void add_into(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace

void PackedSequences::clear() {
  starts.assign(1, 0);
  input.clear();
  position.clear();
  dropout_id.clear();
}

void PackedSequences::add(std::span<const uint32_t> items, uint32_t max_sequence, uint64_t id) {
  if (items.size() > max_sequence) items = items.subspan(items.size() - max_sequence);
  const uint32_t first = max_sequence - static_cast<uint32_t>(items.size());
  for (size_t t = 0; t < items.size(); ++t) {
    input.push_back(items[t]);
    position.push_back(first + static_cast<uint32_t>(t));
  }
  starts.push_back(static_cast<int64_t>(input.size()));
  dropout_id.push_back(id);
}

SequencePass::SequencePass(const SequenceConfig& config)
    : config_(config), layout_(config), d_(config.hidden), xs_(config.blocks + 1), acts_(config.blocks) {}

void PackedSequences::attention_offsets(uint32_t heads, std::vector<int64_t>& offsets) const {
  offsets.assign(1, 0);
  for (size_t b = 0; b < count(); ++b) {
    const int64_t len = starts[b + 1] - starts[b];
    offsets.push_back(offsets.back() + int64_t{heads} * len * len);
  }
}

void SequencePass::resize(const PackedSequences& seqs) {
  const size_t n = static_cast<size_t>(seqs.rows() * d_), rows = static_cast<size_t>(seqs.rows());
  seqs.attention_offsets(config_.heads, prob_offsets_);
  for (auto& x : xs_) x.resize(n);
  for (BlockActivations& a : acts_) {
    for (auto* v : {&a.a1, &a.q, &a.k, &a.v, &a.att, &a.x1, &a.a2, &a.f1}) v->resize(n);
    for (auto* v : {&a.mean1, &a.rstd1, &a.mean2, &a.rstd2}) v->resize(rows);
    a.probs.resize(static_cast<size_t>(prob_offsets_.back()));
    a.mask_o.resize(n);
    a.mask_f.resize(n);
  }
  mask_in_.resize(n);
  for (auto* v : {&h_, &tmp_, &d_tmp_, &d_tmp2_, &d_f1_, &d_a_, &d_q_, &d_k_, &d_v_, &d_att_}) v->resize(n);
  mean_f_.resize(rows);
  rstd_f_.resize(rows);
}

void SequencePass::apply_dropout(const PackedSequences& seqs, const DropoutKeys& keys, uint32_t site, float* x,
                                 std::vector<uint8_t>& mask) const {
  const uint64_t dpad = (static_cast<uint64_t>(d_) + 15) / 16 * 16, sites = dropout_sites(config_);
  const float keep_scale = 1.0f / (1.0f - keys.rate);
  for (size_t b = 0; b < seqs.count(); ++b) {
    for (int64_t r = seqs.starts[b]; r < seqs.starts[b + 1]; ++r) {
      const uint64_t base = ((seqs.dropout_id[b] * sites + site) * config_.max_sequence + seqs.position[r]) * dpad;
      float* row = x + r * d_;
      uint8_t* m = mask.data() + r * d_;
      for (int64_t c0 = 0; c0 < d_; c0 += 16) {
        const uint32_t bits = dropout_keep_bits(keys.seed, keys.epoch, (base + c0) / 16, keys.rate);
        for (int64_t c = c0; c < std::min<int64_t>(d_, c0 + 16); ++c) {
          m[c] = static_cast<uint8_t>((bits >> (c - c0)) & 1u);
          row[c] = m[c] ? row[c] * keep_scale : 0.0f;
        }
      }
    }
  }
}

// The inverse of apply_dropout's scaling on a gradient: kept elements scaled, dropped ones zero.
namespace {
void dropout_backward(float* dx, const std::vector<uint8_t>& mask, int64_t n, float rate) {
  const float keep_scale = 1.0f / (1.0f - rate);
  for (int64_t i = 0; i < n; ++i) dx[i] = mask[i] ? dx[i] * keep_scale : 0.0f;
}
}  // namespace

// The first block's input: each row's item row scaled by sqrt(d) plus its position's row.
void SequencePass::input_rows(const float* p, const PackedSequences& seqs, const float* items) {
  const float scale = std::sqrt(static_cast<float>(d_));
  float* x0 = xs_[0].data();
  for (int64_t r = 0; r < seqs.rows(); ++r) {
    const float* e = items + static_cast<size_t>(seqs.input[r]) * d_;
    const float* pos = p + layout_.positions + static_cast<size_t>(seqs.position[r]) * d_;
    for (int64_t c = 0; c < d_; ++c) x0[r * d_ + c] = e[c] * scale + pos[c];
  }
}

void SequencePass::forward(const float* p, const PackedSequences& seqs, const DropoutKeys* dropout,
                           const float* items) {
  resize(seqs);
  const int64_t rows = seqs.rows();
  input_rows(p, seqs, items != nullptr ? items : p + layout_.items);
  if (dropout != nullptr) apply_dropout(seqs, *dropout, 0, xs_[0].data(), mask_in_);
  for (size_t b = 0; b < acts_.size(); ++b) block_forward(p, b, seqs, dropout);
  cpu::layer_norm_forward(xs_.back().data(), p + layout_.final_gamma, p + layout_.final_beta, rows, d_,
                          kSequenceLayerNormEps, h_.data(), mean_f_.data(), rstd_f_.data());
}

void SequencePass::forward_newest(const float* p, const PackedSequences& seqs) {
  resize(seqs);
  input_rows(p, seqs, p + layout_.items);
  for (size_t b = 0; b + 1 < acts_.size(); ++b) block_forward(p, b, seqs, nullptr);
  newest_block_forward(p, seqs);
}

// The last block for each sequence's newest row: LN1, keys and values over every row, then the
// query, attention, feed-forward and final norm of the newest rows alone (packed [count x d]).
void SequencePass::newest_block_forward(const float* p, const PackedSequences& seqs) {
  const size_t b = acts_.size() - 1;
  const SequenceLayout::Block& w = layout_.blocks[b];
  BlockActivations& a = acts_[b];
  const int64_t rows = seqs.rows(), count = static_cast<int64_t>(seqs.count());
  const int64_t heads = config_.heads, dh = d_ / heads;
  const float* x = xs_[b].data();
  cpu::layer_norm_forward(x, p + w.ln1_gamma, p + w.ln1_beta, rows, d_, kSequenceLayerNormEps, a.a1.data(),
                          a.mean1.data(), a.rstd1.data());
  cpu::dense_forward(a.a1.data(), rows, d_, p + w.wk, p + w.bk, d_, false, a.k.data());
  cpu::dense_forward(a.a1.data(), rows, d_, p + w.wv, p + w.bv, d_, false, a.v.data());
  float* newest_a1 = d_tmp_.data();  // [count x d] each, scratch the forward pass does not read
  float* newest_x = d_tmp2_.data();
  for (int64_t s = 0; s < count; ++s) {
    const int64_t last = seqs.starts[s + 1] - 1;
    std::copy_n(a.a1.data() + last * d_, d_, newest_a1 + s * d_);
    std::copy_n(x + last * d_, d_, newest_x + s * d_);
  }
  cpu::dense_forward(newest_a1, count, d_, p + w.wq, p + w.bq, d_, false, a.q.data());
  for (int64_t s = 0; s < count; ++s) {
    const int64_t r0 = seqs.starts[s], n = seqs.starts[s + 1] - r0;
    cpu::newest_query_attention(a.q.data() + s * d_, a.k.data() + r0 * d_, a.v.data() + r0 * d_, n, heads, dh,
                                a.att.data() + s * d_);
  }
  const int64_t n = count * d_;
  cpu::dense_forward(a.att.data(), count, d_, p + w.wo, p + w.bo, d_, false, tmp_.data());
  std::copy(newest_x, newest_x + n, a.x1.begin());
  add_into(a.x1.data(), tmp_.data(), n);
  feed_forward(p, w, a, count);
  float* out = xs_[b + 1].data();
  std::copy(a.x1.begin(), a.x1.begin() + n, out);
  add_into(out, tmp_.data(), n);
  cpu::layer_norm_forward(out, p + layout_.final_gamma, p + layout_.final_beta, count, d_, kSequenceLayerNormEps,
                          h_.data(), mean_f_.data(), rstd_f_.data());
}

void SequencePass::attention(size_t b, const PackedSequences& seqs, bool backward) {
  BlockActivations& a = acts_[b];
  const int64_t heads = config_.heads, dh = d_ / heads;
  for (size_t s = 0; s < seqs.count(); ++s) {
    const int64_t r0 = seqs.starts[s], n = seqs.starts[s + 1] - r0, o = r0 * d_;
    float* probs = a.probs.data() + prob_offsets_[s];
    if (!backward) {
      cpu::causal_attention_forward(a.q.data() + o, a.k.data() + o, a.v.data() + o, n, int64_t{0}, heads, dh, probs,
                                    a.att.data() + o);
    } else {
      cpu::causal_attention_backward(d_att_.data() + o, a.q.data() + o, a.k.data() + o, a.v.data() + o, probs, n,
                                     int64_t{0}, heads, dh, d_q_.data() + o, d_k_.data() + o, d_v_.data() + o);
    }
  }
}

// The feed-forward branch of the first `rows` rows of a.x1: a2 = LN2(x1), f1 = relu(W1 a2 + b1),
// tmp_ = W2 f1 + b2 (before dropout and the residual add).
void SequencePass::feed_forward(const float* p, const SequenceLayout::Block& w, BlockActivations& a, int64_t rows) {
  cpu::layer_norm_forward(a.x1.data(), p + w.ln2_gamma, p + w.ln2_beta, rows, d_, kSequenceLayerNormEps, a.a2.data(),
                          a.mean2.data(), a.rstd2.data());
  cpu::dense_forward(a.a2.data(), rows, d_, p + w.w1, p + w.b1, d_, true, a.f1.data());
  cpu::dense_forward(a.f1.data(), rows, d_, p + w.w2, p + w.b2, d_, false, tmp_.data());
}

void SequencePass::block_forward(const float* p, size_t b, const PackedSequences& seqs, const DropoutKeys* dropout) {
  const SequenceLayout::Block& w = layout_.blocks[b];
  BlockActivations& a = acts_[b];
  const int64_t rows = seqs.rows(), n = rows * d_;
  const float* x = xs_[b].data();
  cpu::layer_norm_forward(x, p + w.ln1_gamma, p + w.ln1_beta, rows, d_, kSequenceLayerNormEps, a.a1.data(), a.mean1.data(),
                          a.rstd1.data());
  cpu::dense_forward(a.a1.data(), rows, d_, p + w.wq, p + w.bq, d_, false, a.q.data());
  cpu::dense_forward(a.a1.data(), rows, d_, p + w.wk, p + w.bk, d_, false, a.k.data());
  cpu::dense_forward(a.a1.data(), rows, d_, p + w.wv, p + w.bv, d_, false, a.v.data());
  attention(b, seqs, false);
  cpu::dense_forward(a.att.data(), rows, d_, p + w.wo, p + w.bo, d_, false, tmp_.data());
  if (dropout != nullptr) apply_dropout(seqs, *dropout, 1 + 2 * static_cast<uint32_t>(b), tmp_.data(), a.mask_o);
  std::copy(x, x + n, a.x1.begin());
  add_into(a.x1.data(), tmp_.data(), n);
  feed_forward(p, w, a, rows);
  if (dropout != nullptr) apply_dropout(seqs, *dropout, 2 + 2 * static_cast<uint32_t>(b), tmp_.data(), a.mask_f);
  float* out = xs_[b + 1].data();
  std::copy(a.x1.begin(), a.x1.begin() + n, out);
  add_into(out, tmp_.data(), n);
}

void SequencePass::backward(const float* p, const PackedSequences& seqs, const DropoutKeys* dropout, const float* dh,
                            float* grad_dense, float* d_input) {
  const int64_t rows = seqs.rows(), n = rows * d_;
  const size_t base = layout_.dense_begin();
  cpu::AlignedVector<float>& dx = d_a_;
  cpu::layer_norm_backward(dh, xs_.back().data(), p + layout_.final_gamma, mean_f_.data(), rstd_f_.data(), rows, d_,
                           dx.data(), grad_dense + (layout_.final_gamma - base), grad_dense + (layout_.final_beta - base));
  for (size_t b = acts_.size(); b-- > 0;) block_backward(p, b, seqs, dropout, grad_dense, dx);
  if (dropout != nullptr) dropout_backward(dx.data(), mask_in_, n, dropout->rate);
  const float scale = std::sqrt(static_cast<float>(d_));
  for (int64_t r = 0; r < rows; ++r) {
    float* g = grad_dense + (layout_.positions - base) + static_cast<size_t>(seqs.position[r]) * d_;
    for (int64_t c = 0; c < d_; ++c) {
      g[c] += dx[r * d_ + c];
      d_input[r * d_ + c] = dx[r * d_ + c] * scale;
    }
  }
}

// dx: on entry the gradient w.r.t. block b's output, on return w.r.t. its input.
void SequencePass::block_backward(const float* p, size_t b, const PackedSequences& seqs, const DropoutKeys* dropout,
                                  float* grad_dense, cpu::AlignedVector<float>& dx) {
  const SequenceLayout::Block& w = layout_.blocks[b];
  BlockActivations& a = acts_[b];
  const int64_t rows = seqs.rows(), n = rows * d_;
  auto G = [&](size_t offset) { return grad_dense + (offset - layout_.dense_begin()); };
  // The feed-forward branch: x2 = x1 + dropout(W2 relu(W1 LN2(x1) + b1) + b2).
  std::copy(dx.begin(), dx.begin() + n, d_tmp_.begin());
  if (dropout != nullptr) dropout_backward(d_tmp_.data(), a.mask_f, n, dropout->rate);
  cpu::dense_backward(a.f1.data(), a.f1.data(), d_tmp_.data(), rows, d_, p + w.w2, d_, false, G(w.w2), G(w.b2),
                      d_f1_.data());
  cpu::dense_backward(a.a2.data(), a.f1.data(), d_f1_.data(), rows, d_, p + w.w1, d_, true, G(w.w1), G(w.b1),
                      d_tmp2_.data());
  cpu::layer_norm_backward(d_tmp2_.data(), a.x1.data(), p + w.ln2_gamma, a.mean2.data(), a.rstd2.data(), rows, d_,
                           d_tmp_.data(), G(w.ln2_gamma), G(w.ln2_beta));
  add_into(dx.data(), d_tmp_.data(), n);
  // The attention branch: x1 = x + dropout(Wo attention(q, k, v) + bo), q, k, v of LN1(x).
  std::copy(dx.begin(), dx.begin() + n, d_tmp_.begin());
  if (dropout != nullptr) dropout_backward(d_tmp_.data(), a.mask_o, n, dropout->rate);
  cpu::dense_backward(a.att.data(), a.att.data(), d_tmp_.data(), rows, d_, p + w.wo, d_, false, G(w.wo), G(w.bo),
                      d_att_.data());
  attention(b, seqs, true);
  cpu::dense_backward(a.a1.data(), a.q.data(), d_q_.data(), rows, d_, p + w.wq, d_, false, G(w.wq), G(w.bq),
                      d_tmp2_.data());
  cpu::dense_backward(a.a1.data(), a.k.data(), d_k_.data(), rows, d_, p + w.wk, d_, false, G(w.wk), G(w.bk),
                      d_tmp_.data());
  add_into(d_tmp2_.data(), d_tmp_.data(), n);
  cpu::dense_backward(a.a1.data(), a.v.data(), d_v_.data(), rows, d_, p + w.wv, d_, false, G(w.wv), G(w.bv),
                      d_tmp_.data());
  add_into(d_tmp2_.data(), d_tmp_.data(), n);
  cpu::layer_norm_backward(d_tmp2_.data(), xs_[b].data(), p + w.ln1_gamma, a.mean1.data(), a.rstd1.data(), rows, d_,
                           d_tmp_.data(), G(w.ln1_gamma), G(w.ln1_beta));
  add_into(dx.data(), d_tmp_.data(), n);
}

}  // namespace tastebud
