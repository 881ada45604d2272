// Sources of Personalize-layout CSV files other than a user's own export: the built-in synthetic
// shop and the public MovieLens layouts. Both write the three CSV files that `import` reads.
#pragma once

#include <cstdint>
#include <filesystem>

namespace tastebud::datasets {

struct CsvFiles {
  std::filesystem::path interactions;  // always written
  std::filesystem::path users;         // empty path when the source has no user metadata
  std::filesystem::path items;         // empty path when the source has no item metadata
};

struct GeneratorOptions {
  uint32_t users = 10000;
  uint32_t items = 2000;
  uint64_t interactions = 500000;
  uint32_t clusters = 16;        // latent taste clusters
  double cold_item_share = 0.0;  // share of items that get a row in items.csv and no interactions
  uint64_t seed = 1;
  uint32_t threads = 0;          // 0: all cores
};

// Writes interactions.csv, users.csv and items.csv of a synthetic shop into out_dir (created if
// needed; each file written to a temporary name and renamed).
CsvFiles generate_shop(const GeneratorOptions& options, const std::filesystem::path& out_dir);

// Converts a MovieLens directory (100K: u.data/u.user/u.item; 1M: ratings.dat/users.dat/movies.dat;
// 20M/latest: ratings.csv/movies.csv), detected from the files present, into Personalize-layout
// CSVs in out_dir: EVENT_TYPE "rating", EVENT_VALUE the rating, genres as the items' GENRES
// field, demographics as user metadata. Throws tastebud::Error naming the file and line on bad input.
CsvFiles convert_movielens(const std::filesystem::path& movielens_dir,
                           const std::filesystem::path& out_dir);

}  // namespace tastebud::datasets
