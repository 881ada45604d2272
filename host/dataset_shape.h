// The shape of a dataset as `tastebud report` draws it: how many interactions users and items
// have (log2 buckets: 1, 2-3, 4-7, ...), events over time, and events per type.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tastebud/datasets/dataset.h"

namespace tastebud::host {

struct Histogram {
  std::vector<std::string> labels;
  std::vector<double> counts;
};

struct DatasetShape {
  uint64_t interactions = 0;
  uint32_t users = 0, items = 0;
  Histogram per_user, per_item;  // how many users (items) have that many interactions
  Histogram over_time;           // interactions per period, first to last timestamp
  Histogram event_types;         // interactions per EVENT_TYPE
};

// Counts in buckets [2^k, 2^(k+1)), with a first bucket for 0.
Histogram log2_histogram(const std::vector<uint64_t>& counts);

// Interactions per period over [first, last] timestamps (Unix seconds), in `periods` equal
// spans labelled by their first day.
Histogram time_histogram(std::span<const int64_t> timestamps, uint32_t periods);

DatasetShape dataset_shape(const datasets::Dataset& dataset);

}  // namespace tastebud::host
