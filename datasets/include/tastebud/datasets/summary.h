// What `tastebud info` prints: counts, the schemas, and warnings where a dataset is too small to
// learn from.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tastebud/datasets/dataset.h"

namespace tastebud::datasets {

// Below these a model has too little to learn from (the managed service refuses to train below
// them; tastebud only warns).
inline constexpr uint64_t kMinInteractionsToLearn = 1000;
inline constexpr uint32_t kMinUsersWithTwoInteractions = 25;

struct DatasetSummary {
  uint64_t interactions = 0;
  uint32_t users = 0, items = 0, event_types = 0;
  uint32_t cold_items = 0;                 // items without interactions
  uint32_t users_below_two = 0;            // users with fewer than 2 interactions (0 included)
  uint32_t users_with_two_or_more = 0;
  uint32_t users_with_metadata = 0, items_with_metadata = 0;
  int64_t first_timestamp = 0, last_timestamp = 0;
  std::vector<std::pair<std::string, uint64_t>> events_per_type;
  std::vector<std::string> warnings;
};

DatasetSummary summarize(const Dataset& dataset);
std::string format_summary(const Dataset& dataset);

}  // namespace tastebud::datasets
