// Small training sets the backend suites share.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tastebud/engine/trainer.h"

namespace tastebud::testing_data {

// Users like a band of items (a quarter of the catalog each): something to learn, of odd sizes,
// with weights 1, 1.25 and 1.5.
inline TrainingSet banded_training_set(uint32_t users, uint32_t items) {
  TrainingSet t;
  t.num_users = users;
  t.num_items = items;
  for (uint32_t u = 0; u < users; ++u) {
    std::vector<uint32_t> mine;
    const uint32_t band = (u % 4) * (items / 4);
    for (uint32_t k = 0; k < 3 + u % 7; ++k) mine.push_back(band + (k * 5 + u) % (items / 4));
    std::sort(mine.begin(), mine.end());
    mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
    for (uint32_t i : mine) {
      t.user.push_back(u);
      t.item.push_back(i);
      t.weight.push_back(1.0f + 0.25f * static_cast<float>(i % 3));
    }
  }
  t.finalize();
  return t;
}

// Two contextual fields of every positive, as host/features.cpp encodes them: a "device" (3
// values; every fifth positive has none) and a "day" (7 values, rows 3 to 9), weight 1 each; every
// eleventh positive has no context at all.
inline void add_context(TrainingSet& data, ModelConfig& config) {
  config.context = {};
  config.context.categorical = {"DEVICE", "DAY"};
  config.context.categorical_rows = {3, 7};
  FeatureInputs& in = data.context;
  in = {};
  in.entities = static_cast<uint32_t>(data.size());
  in.offsets = {0};
  for (uint64_t p = 0; p < data.size(); ++p) {
    if (p % 11 != 0) {
      if (p % 5 != 4) {
        in.rows.push_back(static_cast<uint32_t>((data.user[p] + p) % 3));
        in.weights.push_back(1.0f);
      }
      in.rows.push_back(3 + static_cast<uint32_t>((p * 3 + data.item[p]) % 7));
      in.weights.push_back(1.0f);
    }
    in.offsets.push_back(in.rows.size());
  }
}

// Update mode over data: every third user's and every fourth item's rows train; the other rows
// and the dense layers stay frozen.
inline void freeze_all_but_some_rows(TrainOptions& options, const TrainingSet& data) {
  options.trainable_users.assign(data.num_users, 0);
  options.trainable_items.assign(data.num_items, 0);
  for (uint32_t u = 0; u < data.num_users; u += 3) options.trainable_users[u] = 1;
  for (uint32_t i = 0; i < data.num_items; i += 4) options.trainable_items[i] = 1;
  options.freeze_dense = true;
}

// Every float of a state's parameters and both optimizer states, in tensor order.
inline std::vector<float> flatten(const TrainState& s) {
  std::vector<float> all;
  for (const Tensor* t : s.params.tensors()) all.insert(all.end(), t->values.begin(), t->values.end());
  for (const auto* states : {&s.state0, &s.state1}) {
    for (const Tensor& t : *states) all.insert(all.end(), t.values.begin(), t.values.end());
  }
  return all;
}

}  // namespace tastebud::testing_data
