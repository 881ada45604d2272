#include "host/dataset_shape.h"

#include <algorithm>
#include <bit>
#include <ctime>

#include <fmt/format.h>

namespace tastebud::host {

Histogram log2_histogram(const std::vector<uint64_t>& counts) {
  uint64_t top = 0;
  for (uint64_t c : counts) top = std::max(top, c);
  const size_t buckets = 1 + (top == 0 ? 0 : std::bit_width(top));
  Histogram h;
  h.counts.assign(buckets, 0);
  for (uint64_t c : counts) ++h.counts[c == 0 ? 0 : std::bit_width(c)];
  for (size_t b = 0; b < buckets; ++b) {
    if (b == 0) h.labels.push_back("0");
    else if (b == 1) h.labels.push_back("1");
    else h.labels.push_back(fmt::format("{}-{}", uint64_t{1} << (b - 1), (uint64_t{1} << b) - 1));
  }
  // A leading empty "0" bucket says nothing.
  if (h.counts.size() > 1 && h.counts[0] == 0) {
    h.counts.erase(h.counts.begin());
    h.labels.erase(h.labels.begin());
  }
  return h;
}

Histogram time_histogram(std::span<const int64_t> timestamps, uint32_t periods) {
  Histogram h;
  if (timestamps.empty() || periods == 0) return h;
  const auto [lo, hi] = std::minmax_element(timestamps.begin(), timestamps.end());
  const double span = static_cast<double>(*hi - *lo) + 1;
  h.counts.assign(periods, 0);
  for (int64_t t : timestamps) {
    const auto p = static_cast<size_t>(static_cast<double>(t - *lo) / span * periods);
    ++h.counts[std::min<size_t>(p, periods - 1)];
  }
  for (uint32_t p = 0; p < periods; ++p) {
    const std::time_t start = static_cast<std::time_t>(*lo + span * p / periods);
    std::tm day{};
    gmtime_r(&start, &day);
    h.labels.push_back(fmt::format("{:04d}-{:02d}-{:02d}", day.tm_year + 1900, day.tm_mon + 1, day.tm_mday));
  }
  return h;
}

DatasetShape dataset_shape(const datasets::Dataset& dataset) {
  const datasets::Interactions& x = dataset.interactions;
  DatasetShape shape;
  shape.interactions = x.size();
  shape.users = dataset.num_users();
  shape.items = dataset.num_items();
  std::vector<uint64_t> per_user(dataset.num_users(), 0), per_item(dataset.num_items(), 0);
  for (size_t r = 0; r < x.size(); ++r) {
    ++per_user[x.user[r]];
    ++per_item[x.item[r]];
  }
  shape.per_user = log2_histogram(per_user);
  shape.per_item = log2_histogram(per_item);
  shape.over_time = time_histogram(x.timestamp, 40);
  std::vector<double> per_type(std::max<size_t>(dataset.event_types.size(), 1), 0);
  for (size_t r = 0; r < x.size(); ++r) per_type[x.event_type.empty() ? 0 : x.event_type[r]] += 1;
  for (size_t t = 0; t < per_type.size(); ++t) {
    const std::string name = t < dataset.event_types.size() ? std::string(dataset.event_types[t]) : "";
    shape.event_types.labels.push_back(name.empty() ? "(none)" : name);
    shape.event_types.counts.push_back(per_type[t]);
  }
  return shape;
}

}  // namespace tastebud::host
