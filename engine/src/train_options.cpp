#include "tastebud/engine/train_options.h"

#include <unistd.h>

#include <cmath>

#include <fmt/format.h>

#include "tastebud/error.h"

namespace tastebud {

void validate_train_options(const TrainOptions& o) {
  TB_CHECK(o.batch_size >= 1 && o.batch_size <= kMaxBatchSize,
           fmt::format("batch_size must be from 1 to {}, not {}", kMaxBatchSize, o.batch_size));
  // Samples per positive are 1 + negatives in 32-bit arithmetic on both backends: bounded so
  // they never wrap (4294967295 negatives once meant 0 samples and an untrained model).
  TB_CHECK(o.negatives <= kMaxNegatives,
           fmt::format("negatives must be from 0 to {} per positive, not {}", kMaxNegatives, o.negatives));
  TB_CHECK(o.threads <= kMaxThreads, fmt::format("threads must be from 0 (all cores) to {}, not {}", kMaxThreads, o.threads));
  TB_CHECK(std::isfinite(o.optimizer.lr) && o.optimizer.lr > 0,
           fmt::format("the learning rate (lr) must be a finite number above 0, not {}", o.optimizer.lr));
  TB_CHECK(std::isfinite(o.optimizer.l2) && o.optimizer.l2 >= 0,
           fmt::format("l2 must be a finite number of at least 0, not {}", o.optimizer.l2));
  TB_CHECK(std::isfinite(o.sampler_alpha) && o.sampler_alpha >= 0 && o.sampler_alpha <= 10,
           fmt::format("sampler_alpha must be a finite number from 0 to 10, not {}", o.sampler_alpha));
  TB_CHECK(std::isfinite(o.impression_share) && o.impression_share >= 0 && o.impression_share <= 1,
           fmt::format("impression_share must be from 0 to 1, not {}", o.impression_share));
}

namespace {

// Per batch row: the gathered embeddings, every layer's activation and gradient, and the
// embedding gradients, in floats; the CPU backend also keeps row ids and sample indices.
double batch_bytes(const ModelConfig& c, const TrainOptions& o) {
  double row = 4.0 * c.feature_width() + 16;
  if (c.has_mlp())
    for (uint32_t w : c.layers) row += 2.0 * w;
  return double(o.batch_size) * row * sizeof(float);
}

}  // namespace

double parameter_floats(const ModelConfig& c) {
  auto table_rows = [](const FeatureSpec& s) {
    double rows = 0;
    for (uint32_t r : s.categorical_rows) rows += r;
    return rows + (s.textual.empty() ? 0 : s.text_buckets) + s.numerical.size();
  };
  // Id and metadata rows are GMF + MLP wide; context rows feed the MLP half only.
  const double rows = double(c.num_users) + c.num_items + table_rows(c.user_features) + table_rows(c.item_features);
  double n = rows * c.feature_width() + table_rows(c.context) * c.mlp_embedding();
  if (c.has_mlp())
    for (size_t l = 0; l + 1 < c.layers.size(); ++l) n += double(c.layers[l]) * c.layers[l + 1];
  return n + c.head_inputs() + 1;
}

uint64_t estimate_training_bytes(const ModelConfig& c, uint64_t positives, const TrainOptions& o) {
  // Parameters, their two optimizer states, the host copy a checkpoint takes and its encoding.
  const double model = parameter_floats(c) * sizeof(float) * 5;
  // Per positive: user, item, weight, and per user/item offsets and counts.
  const double data = double(positives) * 12 + (double(c.num_users) + c.num_items) * 16;
  const double total = model + data + batch_bytes(c, o);
  return total >= 1.8e19 ? UINT64_MAX : static_cast<uint64_t>(total);
}

void check_training_memory(uint64_t needed, uint64_t available, const ModelConfig& c, const TrainOptions& o) {
  if (available == 0 || needed <= available) return;
  // What to lower: the batch when a batch of one would fit, else the model's width.
  TrainOptions one = o;
  one.batch_size = 1;
  const bool batch_helps = double(needed) - batch_bytes(c, o) + batch_bytes(c, one) <= double(available);
  const std::string lower = batch_helps
                                ? fmt::format("batch_size (now {})", o.batch_size)
                                : fmt::format("the factors or the layer widths (now {} factors and an MLP embedding "
                                              "of {}, for {} users and {} items)",
                                              c.has_gmf() ? c.factors : 0, c.mlp_embedding(), c.num_users, c.num_items);
  throw Error(fmt::format("training needs about {:.1f} GiB of memory but this machine has {:.1f} GiB; lower {}",
                          needed / 1073741824.0, available / 1073741824.0, lower));
}

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

}  // namespace tastebud
