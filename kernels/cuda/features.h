// Metadata features on the GPU: adding an entity's feature rows and numeric projection to its id
// embedding, the projections' gradient, and the deterministic reduction of the feature-row
// gradients; the twin of cpu/features.h.
#pragma once

#include <cstdint>
#include <memory>

#include "cuda/common.h"
#include "cuda/embedding.h"
#include "tastebud/feature_view.h"

namespace tastebud::cuda {

using FeatureView = tastebud::FeatureView;  // tastebud/feature_view.h

// For every batch row r of entity ids[r]: gmf[r * gmf_stride .. + f) and
// mlp[r * mlp_stride + mlp_offset .. + e) += the entity's feature sum, each output adding the
// feature rows in list order and then the projection rows, as cpu::add_features does. d_table
// [table rows x (f + e)] and d_projection [numeric x (f + e)] may be null when the view has none,
// d_gmf when f is 0 (the context table: no GMF part, the user's half of the MLP input).
void add_features(const FeatureView& v, const uint32_t* d_ids, int64_t rows, const float* d_table,
                  const float* d_projection, int64_t f, int64_t e, float* d_gmf, int64_t gmf_stride,
                  float* d_mlp, int64_t mlp_stride, int64_t mlp_offset, StreamHandle stream);

// d_grad[n, :] = sum over batch rows r of values[ids[r], n] * [d_gmf row r | d_mlp row r]
// (overwritten, not accumulated: the GPU takes the whole batch at once), summed in a fixed order
// (slices of rows, then the slices in order): deterministic, no atomics. `partial` needs
// numeric_gradient_partials(rows, numeric, f + e) floats.
int64_t numeric_gradient_partials(int64_t rows, int64_t numeric, int64_t width);
void numeric_gradient(const FeatureView& v, const uint32_t* d_ids, int64_t rows, const float* d_gmf,
                      int64_t gmf_stride, const float* d_mlp, int64_t mlp_stride, int64_t mlp_offset,
                      int64_t f, int64_t e, float* d_partial, float* d_grad, StreamHandle stream);

// The feature-table rows a batch touched, grouped as cpu::FeatureGroups: after build(), group k
// (k < *num_groups(), a count that stays on the device) is table row rows()[k]; its entries are
// order()[starts()[k] .. starts()[k + 1]), ascending by batch row, and entry x came from batch
// row entry_rows()[x] with weight entry_weights()[x]. Entries are generated in batch-row order and
// sorted by table row with CUB's stable radix sort, so no float atomics and no dependence on the
// launch layout.
//
// The entry count is only known on the device, so every batch sorts a host-known bound of
// rows * max_per_entity entries; the slots past the real entries hold a sentinel row that sorts
// last and whose group is dropped from the count.
class FeatureGroups {
 public:
  // max_per_entity: the most feature-table rows one entity lists.
  FeatureGroups(int64_t max_rows, uint64_t table_rows, uint32_t max_per_entity);
  void build(const FeatureView& v, const uint32_t* d_ids, int64_t rows, StreamHandle stream);

  // Upper bounds known on the host, for buffer sizes and launch grids.
  static int64_t max_groups_for(int64_t rows, uint64_t table_rows, uint32_t max_per_entity);
  int64_t max_groups() const { return max_groups_for(rows_, table_rows_, max_per_entity_); }
  int64_t max_entries() const { return max_entries_; }
  // Device bytes that a FeatureGroups of these sizes allocates, CUB's scratch estimated.
  static double bytes_for(int64_t max_rows, uint32_t max_per_entity);

  // Group k is feature row rows()[k]; its entries are order()[starts()[k] .. starts()[k + 1]),
  // indices into entry_rows() (the batch row) and entry_weights().
  const uint32_t* rows() const { return groups_->rows(); }
  const uint32_t* order() const { return groups_->order(); }
  const uint32_t* starts() const { return groups_->starts(); }
  const uint32_t* entry_rows() const { return entry_rows_.data(); }
  const float* entry_weights() const { return entry_weights_.data(); }
  const int* num_groups() const { return groups_->num_groups(); }

 private:
  int64_t max_rows_ = 0, rows_ = 0, max_entries_ = 0;
  uint64_t table_rows_ = 0;
  uint32_t max_per_entity_ = 0;
  DeviceBuffer<uint32_t> entry_counts_, entry_starts_;  // per batch row
  DeviceBuffer<uint32_t> keys_, entry_rows_;             // per entry: its feature row, its batch row
  DeviceBuffer<float> entry_weights_;
  DeviceBuffer<unsigned char> temp_;                     // the scan of entries per batch row
  // The entries grouped by feature row, as RowGroups groups batch rows by id; the slots past the
  // real entries hold the padding id table_rows.
  std::unique_ptr<RowGroups> groups_;
};

// sum[k, :] = sum over group k's entries, in batch-row order, of weight * [d_gmf row | d_mlp row],
// where batch row r's gradient is d_gmf[r * gmf_stride .. + f) and
// d_mlp[r * mlp_stride + mlp_offset .. + e): the CPU's summation order. d_sum needs
// groups.max_groups() * (f + e) floats.
void sum_feature_gradients(const FeatureGroups& groups, const float* d_gmf, int64_t gmf_stride,
                           const float* d_mlp, int64_t mlp_stride, int64_t mlp_offset, int64_t f,
                           int64_t e, float* d_sum, StreamHandle stream);

// With item metadata the id rows of items without positives stay where zero_untrained_rows put
// them: sum[k, 0 .. width) = 0 for the touched rows rows[k] (k < *num_rows, at most max_rows)
// whose trained[rows[k]] is 0, before the lazy update of the item id tables.
void drop_untrained_gradients(const uint32_t* d_rows, const int* d_num_rows, int64_t max_rows,
                              const unsigned char* d_trained, int64_t width, float* d_sum,
                              StreamHandle stream);

}  // namespace tastebud::cuda
