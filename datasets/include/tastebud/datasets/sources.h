// Sources of Personalize-layout CSV files other than a user's own export: the built-in synthetic
// shop and the public MovieLens layouts. Both write the three CSV files that `import` reads. Also
// a synthetic dataset in ml-100k's own layout, which the MovieLens converter reads.
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
  // Signals for features the default shop does not exercise; 0 leaves the output unchanged.
  // impressions: each interaction row gets an IMPRESSION column listing this many distinct items
  // shown with it (popular items, items of a random cluster and a few of the user's own), never
  // the row's item. At most kMaxGeneratorImpressions.
  uint32_t impressions = 0;
  // device_effect: every item leans to one device (a per-category lean plus a per-item draw) and
  // an item that matches the event's DEVICE_TYPE is exp(device_effect) times as likely to be
  // picked as one that does not, so the device of an event tells which items it goes to.
  double device_effect = 0.0;
};
constexpr uint32_t kMaxGeneratorImpressions = 100;

// Writes interactions.csv, users.csv and items.csv of a synthetic shop into out_dir (created if
// needed; each file written to a temporary name and renamed).
CsvFiles generate_shop(const GeneratorOptions& options, const std::filesystem::path& out_dir);

// A synthetic ratings set in the exact ml-100k layout, for benchmarks that need MovieLens's shape
// and metadata (the real files are not redistributable everywhere). Defaults are ml-100k's sizes.
struct MovieLens100kOptions {
  uint32_t users = 943;
  uint32_t items = 1682;
  uint64_t ratings = 100000;
  uint32_t min_ratings_per_user = 20;
  uint64_t seed = 1;
};

struct MovieLens100kFiles {
  std::filesystem::path ratings;      // u.data: user \t item \t rating \t timestamp
  std::filesystem::path items;        // u.item: id|title|release date|video release date|URL|19 flags
  std::filesystem::path users;        // u.user: id|age|gender|occupation|zip code
  std::filesystem::path genres;       // u.genre
  std::filesystem::path occupations;  // u.occupation
};

// Writes u.data, u.item, u.user, u.genre and u.occupation into out_dir (created if needed; each
// file written to a temporary name and renamed), so that convert_movielens reads it as ml-100k.
// Taste depends partly on the metadata: a user's genre affinities shift with age, gender and
// occupation, plus a personal part and a latent part that only ids can learn. Every (user, item)
// pair is scored once, on one thread: meant for ml-100k-sized sets, not millions of users.
MovieLens100kFiles generate_movielens_100k(const MovieLens100kOptions& options,
                                           const std::filesystem::path& out_dir);

// Converts a MovieLens directory (100K: u.data/u.user/u.item; 1M: ratings.dat/users.dat/movies.dat;
// 20M/latest: ratings.csv/movies.csv), detected from the files present, into Personalize-layout
// CSVs in out_dir: EVENT_TYPE "rating", EVENT_VALUE the rating, genres as the items' GENRES
// field, demographics as user metadata. Throws tastebud::Error naming the file and line on bad input.
CsvFiles convert_movielens(const std::filesystem::path& movielens_dir,
                           const std::filesystem::path& out_dir);

}  // namespace tastebud::datasets
