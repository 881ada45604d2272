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

}  // namespace tastebud::testing_data
