// Metadata features on the CPU: adding an entity's feature rows and numeric projection to its id
// embedding, and the deterministic reduction of the feature-row gradients. Templates over the
// scalar, so the gradient checks run this exact code in double precision.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tastebud/feature_view.h"

namespace tastebud::cpu {

using FeatureView = tastebud::FeatureView;  // tastebud/feature_view.h

// gmf[0 .. f) and mlp[0 .. e) += the entity's feature sum: each row's (and projection row's) first f
// columns feed the GMF part and the next e the MLP part, split like the id tables.
template <class T>
void add_features(const FeatureView& v, uint32_t entity, const T* table, const T* projection,
                  int64_t f, int64_t e, T* gmf, T* mlp) {
  add_feature_columns<T>(v, entity, table, projection, f + e, 0, f, gmf, e, mlp);
}

// d_projection[n, :] += x_n * [d_gmf | d_mlp] for one batch row of the entity.
template <class T>
void accumulate_numeric_gradient(const FeatureView& v, uint32_t entity, const T* d_gmf,
                                 const T* d_mlp, int64_t f, int64_t e, T* d_projection) {
  const int64_t w = f + e;
  for (int64_t n = 0; n < v.numeric; ++n) {
    const T x = static_cast<T>(v.values[static_cast<int64_t>(entity) * v.numeric + n]);
    T* row = d_projection + n * w;
    for (int64_t k = 0; k < f; ++k) row[k] += x * d_gmf[k];
    for (int64_t k = 0; k < e; ++k) row[f + k] += x * d_mlp[k];
  }
}

// The feature-table rows a batch touched, grouped like RowGroups: rows[k] is the k-th distinct row
// in ascending order; its (batch row, weight) entries are entries[starts[k] .. starts[k + 1]),
// ascending by batch row. Summing in this order is independent of the thread count.
struct FeatureGroups {
  struct Entry {
    uint32_t row;
    uint32_t batch_row;
    float weight;
  };
  std::vector<Entry> entries;
  std::vector<uint32_t> rows;
  std::vector<uint32_t> starts;

  // ids[r]: the entity of batch row r. An entity lists each row at most once (see the encoding).
  void build(const FeatureView& v, std::span<const uint32_t> ids);
  size_t size() const { return rows.size(); }

 private:
  std::vector<Entry> scratch_;
};

// sum[k, :] = sum over group k's entries of weight * [d_gmf row | d_mlp row], where batch row r's
// gradient is d_gmf[r * gmf_stride .. + f) and d_mlp[r * mlp_stride + mlp_offset .. + e).
template <class T>
void sum_feature_gradients(const FeatureGroups& g, const T* d_gmf, int64_t gmf_stride,
                           const T* d_mlp, int64_t mlp_stride, int64_t mlp_offset, int64_t f,
                           int64_t e, T* sum) {
  const int64_t w = f + e;
#pragma omp parallel for schedule(static) if (g.entries.size() * w > (1 << 15))
  for (int64_t k = 0; k < static_cast<int64_t>(g.size()); ++k) {
    T* out = sum + k * w;
    for (int64_t j = 0; j < w; ++j) out[j] = T(0);
    for (uint32_t p = g.starts[k]; p < g.starts[k + 1]; ++p) {
      const auto& entry = g.entries[p];
      const T weight = static_cast<T>(entry.weight);
      const T* dg = d_gmf + static_cast<int64_t>(entry.batch_row) * gmf_stride;
      const T* dm = d_mlp + static_cast<int64_t>(entry.batch_row) * mlp_stride + mlp_offset;
      for (int64_t j = 0; j < f; ++j) out[j] += weight * dg[j];
      for (int64_t j = 0; j < e; ++j) out[f + j] += weight * dm[j];
    }
  }
}

}  // namespace tastebud::cpu
