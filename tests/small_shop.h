// A small generated shop (items with metadata, no Users file) imported into ROOT/dataset, its CSVs
// in ROOT/shop: the data the ranker and server suites train their models on.
#pragma once

#include <cstdint>
#include <filesystem>

#include "tastebud/datasets/import.h"
#include "tastebud/datasets/sources.h"

namespace tastebud::testing_shop {

inline void import_small_shop(const std::filesystem::path& root, uint32_t users, uint32_t interactions, uint64_t seed) {
  datasets::GeneratorOptions g;
  g.users = users;
  g.items = 60;
  g.interactions = interactions;
  g.clusters = 4;
  g.seed = seed;
  const datasets::CsvFiles csv = datasets::generate_shop(g, root / "shop");
  datasets::ImportOptions o;
  o.interactions = csv.interactions;
  o.items = csv.items;
  o.out = root / "dataset";
  datasets::import_dataset(o);
}

}  // namespace tastebud::testing_shop
