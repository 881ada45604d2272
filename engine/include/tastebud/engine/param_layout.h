// The parameter plan of a model: which tensor plays which role, its name and shape, and where each
// dense tensor sits in one flat buffer. ModelParams::tensors(), the model and checkpoint files,
// both backends and their load_state read this one plan, so none of them re-derives it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tastebud {

struct ModelConfig;

enum class TensorRole : uint8_t {
  // Sparse: updated lazily, only the rows a batch touched.
  kUserGmf, kItemGmf, kUserMlp, kItemMlp,  // the id tables, always present (zero width when unused)
  kUserFeatures, kItemFeatures,            // metadata feature tables
  kContext,                                // the context table
  // Dense: updated whole every step, laid out in one flat buffer.
  kDenseWeight, kDenseBias,                // MLP layer j: [layers[j] x layers[j+1]], [layers[j+1]]
  kHeadWeight, kHeadBias,
  kUserNumeric, kItemNumeric,              // metadata numeric projections
};

struct TensorSlot {
  TensorRole role = TensorRole::kUserGmf;
  uint32_t layer = 0;  // dense layer j of kDenseWeight and kDenseBias
  std::string name;
  std::vector<uint64_t> shape;
  uint64_t dense_offset = 0;  // dense tensors: first float in the flat dense buffer

  uint64_t size() const;
  bool sparse() const { return role < TensorRole::kDenseWeight; }
  // Item id tables: with item metadata, rows of items without positives stay at zero.
  bool item_id_table() const { return role == TensorRole::kItemGmf || role == TensorRole::kItemMlp; }
};

class ParamLayout {
 public:
  static constexpr size_t kNone = static_cast<size_t>(-1);
  // Floats: every dense tensor starts 128-byte aligned (cuBLAS and the CPU's vector code); the
  // gaps hold zeros whose gradients are zero, so updating the whole buffer leaves them zero.
  static constexpr uint64_t kDenseAlign = 32;

  explicit ParamLayout(const ModelConfig& config);

  const std::vector<TensorSlot>& slots() const { return slots_; }
  const TensorSlot& operator[](size_t index) const { return slots_[index]; }
  size_t size() const { return slots_.size(); }
  size_t sparse_count() const { return sparse_count_; }
  uint64_t dense_floats() const { return dense_floats_; }  // the flat dense buffer, gaps included
  // Index of the tensor with this role (and layer), kNone when the model has none.
  size_t find(TensorRole role, uint32_t layer = 0) const;
  uint64_t dense_offset(TensorRole role, uint32_t layer = 0) const;  // the tensor must be dense

 private:
  std::vector<TensorSlot> slots_;
  size_t sparse_count_ = 0;
  uint64_t dense_floats_ = 0;
};

}  // namespace tastebud
