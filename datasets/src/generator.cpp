// The built-in synthetic shop. Users and items belong to latent taste clusters; a user's events
// come mostly from their own clusters, so a model that reads user history beats the popularity
// baseline by a wide margin, while the long tail, the funnel and the drifting "new launch" items
// give the popularity, trending and event-weighting recipes something real to find.
//
// Every random draw is random_words(seed, kGenerator, <draw kind>, <entity index>), so each user,
// item and event chain is a pure function of the seed and its own index: the files are identical
// byte for byte whatever the thread count.
//
// Two optional signals, off by default, draw from their own stream (kGeneratorSignals), so the
// default shop is unchanged by their code: IMPRESSION lists (--impressions), what a production
// recommender showed with each event, and a device effect (--device-effect), which makes an
// event's DEVICE_TYPE shift which items it goes to.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <numeric>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "source_output.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/error.h"
#include "tastebud/philox.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;
using detail::append_cents;
using detail::append_csv_field;
using detail::append_uint;

// The observed window: 180 days from 2026-06-01T00:00:00Z, cut into 12 periods of 15 days in which
// a new batch of items launches and trends.
constexpr int64_t kWindowStart = 1780272000;
constexpr uint32_t kWindowSeconds = 180u * 86400u;
constexpr uint32_t kPeriods = 12;
constexpr uint32_t kPeriodSeconds = kWindowSeconds / kPeriods;
// A chain's cart and purchase follow its view by at most about 1.5 hours; views stop this long
// before the end so that every event stays inside the window.
constexpr uint32_t kFunnelSlack = 2 * 3600;

// Draw kinds: the `epoch` argument of random_words, one per kind of entity or purpose, so that
// no two purposes ever share a counter.
enum DrawKind : uint32_t {
  kItemDraw = 1,
  kItemRoleDraw = 2,
  kItemGenreDraw = 3,
  kItemTextDraw = 4,
  kColdOrderDraw = 5,
  kUserDraw = 6,
  kUserWindowDraw = 7,
  kUserDemographicsDraw = 8,
  kChainDraw = 9,
  kChainFunnelDraw = 10,
};

// Purposes within RandomStream::kGeneratorSignals: the top 8 bits of the `epoch` argument, the low
// 24 bits an attempt number where one entity needs more than four words.
enum SignalPurpose : uint32_t {
  kItemDeviceSignal = 1,     // index: item
  kClusterDeviceSignal = 2,  // index: cluster
  kDevicePickSignal = 3,     // index: (user << 32) | chain; attempt: candidate item
  kShownRowSignal = 4,       // index: (user << 32) | row sequence
  kShownSlotSignal = 5,      // index: (user << 32) | row sequence; attempt: candidate item
};

Philox4 signal_words(uint64_t seed, SignalPurpose purpose, uint32_t attempt, uint64_t index) {
  return random_words(seed, RandomStream::kGeneratorSignals, (uint32_t{purpose} << 24) | attempt,
                      index);
}

// Behaviour of a user: shares of events from the primary cluster, the secondary cluster and any
// cluster at random (the rest). With 16 clusters about 89% of a user's events are in their
// clusters.
constexpr float kPrimaryShare = 0.75f;
constexpr float kSecondaryShare = 0.13f;
// Share of events that go to items launched in the current or the previous period.
constexpr float kTrendingShare = 0.25f;
// Share of a cluster's items that launch inside the window (clusters of at least 8 items).
constexpr float kLaunchShare = 0.15f;
constexpr uint32_t kMinClusterForLaunches = 8;
// Funnel: a view goes on to the cart more often when the item fits the user's taste.
constexpr float kCartGivenViewInTaste = 0.30f;
constexpr float kCartGivenViewOffTaste = 0.10f;
constexpr float kPurchaseGivenCart = 0.40f;
constexpr float kPreferredDeviceShare = 0.85f;

// Device effect: a category leans to one device, and each of its items takes that lean with this
// probability (otherwise a device at random), so every category has items for every device.
constexpr float kItemTakesCategoryLean = 0.6f;
// Candidates drawn for one event before the last one is taken as it is.
constexpr uint32_t kDevicePickAttempts = 16;

// Impressions: where a shown item comes from. Popular items of the whole shop (45%), items of one
// other cluster picked at random for the row (50%, an "explore" carousel, never the user's primary
// or secondary cluster), and the rest (5%) from the user's own clusters. The user's own items are
// a small share of what is shown (about 11% with 16 clusters, popular ones included) and, being
// the ones the user acts on, a smaller share still of what is shown and ignored (7-9%, below the
// 12.5% of items at random), so an ignored impression says more than a random item does about
// what the user does not want: mostly popular items of other tastes.
constexpr float kShownPopularShare = 0.45f;
constexpr float kShownExploreShare = 0.50f;
constexpr float kShownPrimaryOfOwn = 0.7f;
// Candidate draws per shown item before the list is filled up with the shop's most popular items.
constexpr uint32_t kShownAttemptsPerItem = 8;

constexpr std::string_view kEventTypes[] = {"view", "cart", "purchase"};
constexpr std::string_view kDevices[] = {"mobile", "desktop", "tablet"};
constexpr std::string_view kMemberships[] = {"basic", "silver", "gold", "platinum"};

struct Theme {
  std::string_view category;
  uint32_t base_price_cents;
  std::string_view genres[3];
  std::string_view words[12];
};

// Clusters take their theme from this table (cluster % 16); clusters 16 and up become numbered
// variants of a theme with a mixed vocabulary, so every cluster stays distinguishable by metadata.
// clang-format off
constexpr Theme kThemes[] = {
    {"electronics", 8000, {"audio", "mobile", "computing"},
     {"wireless", "bluetooth", "charger", "battery", "screen", "headphones", "speaker", "usb",
      "smart", "portable", "hd", "cable"}},
    {"books", 1500, {"fiction", "nonfiction", "comics"},
     {"novel", "hardcover", "paperback", "author", "chapter", "mystery", "biography", "edition",
      "illustrated", "bestseller", "story", "poetry"}},
    {"fashion", 4000, {"womens", "mens", "accessories"},
     {"cotton", "denim", "jacket", "sleeve", "slim", "fit", "leather", "dress", "linen", "casual",
      "knit", "collar"}},
    {"home", 3000, {"kitchen", "decor", "bedding"},
     {"ceramic", "mug", "towel", "pillow", "blanket", "lamp", "storage", "shelf", "candle", "vase",
      "rug", "cookware"}},
    {"garden", 2500, {"plants", "tools", "outdoor-living"},
     {"seeds", "planter", "soil", "hose", "shovel", "pruning", "compost", "perennial", "trellis",
      "watering", "bulbs", "fertilizer"}},
    {"sports", 3500, {"fitness", "cycling", "team-sports"},
     {"running", "yoga", "dumbbell", "cycling", "workout", "training", "mat", "racket",
      "breathable", "sweat", "grip", "jersey"}},
    {"toys", 2500, {"puzzles", "plush", "building"},
     {"puzzle", "blocks", "plush", "kids", "board", "game", "doll", "bricks", "educational",
      "colorful", "ages", "playset"}},
    {"beauty", 2000, {"skincare", "makeup", "fragrance"},
     {"serum", "moisturizer", "lipstick", "perfume", "vegan", "skin", "hydrating", "matte",
      "brush", "cleanser", "spf", "nail"}},
    {"grocery", 800, {"snacks", "beverages", "pantry"},
     {"organic", "coffee", "tea", "snack", "chocolate", "gluten-free", "spice", "pasta", "olive",
      "oil", "honey", "cereal"}},
    {"music", 4500, {"instruments", "vinyl", "audio-gear"},
     {"vinyl", "guitar", "strings", "album", "amplifier", "drum", "remastered", "keyboard",
      "pedal", "acoustic", "studio", "record"}},
    {"automotive", 5000, {"car-care", "parts", "car-electronics"},
     {"tire", "wiper", "motor", "dashcam", "brake", "seat", "car", "jumper", "polish",
      "headlight", "mount", "engine"}},
    {"pets", 2000, {"dogs", "cats", "aquatics"},
     {"dog", "cat", "leash", "kibble", "chew", "litter", "harness", "aquarium", "treats", "bed",
      "grooming", "scratching"}},
    {"office", 1800, {"stationery", "furniture", "printing"},
     {"notebook", "pen", "stapler", "desk", "ergonomic", "folder", "printer", "paper", "planner",
      "marker", "chair", "binder"}},
    {"health", 2200, {"vitamins", "wellness", "first-aid"},
     {"vitamin", "supplement", "protein", "probiotic", "thermometer", "bandage", "massage",
      "sleep", "omega", "immune", "posture", "brace"}},
    {"jewelry", 9000, {"necklaces", "rings", "watches"},
     {"silver", "gold", "necklace", "ring", "earrings", "bracelet", "pendant", "gemstone",
      "sterling", "charm", "chain", "diamond"}},
    {"outdoors", 6000, {"camping", "hiking", "fishing"},
     {"tent", "hiking", "backpack", "camping", "lantern", "waterproof", "trail", "sleeping",
      "stove", "compass", "fishing", "kayak"}},
};
constexpr uint32_t kThemeCount = sizeof(kThemes) / sizeof(kThemes[0]);

// Words of any cluster. Some carry quotes so that DESCRIPTION exercises RFC 4180 escaping.
constexpr std::string_view kGenericWords[] = {
    "premium", "durable", "lightweight", "classic", "new", "best", "value", "gift", "set", "pack",
    "everyday", "compact", "soft", "modern", "\"limited\"", "original", "2-pack", "deluxe",
    "eco-friendly", "handmade", "\"bestselling\"", "travel", "large", "small", "12\"", "vintage"};
// clang-format on
constexpr uint32_t kGenericWordCount = sizeof(kGenericWords) / sizeof(kGenericWords[0]);

// A standard normal draw from two 32-bit words (Box-Muller on 24-bit uniforms).
double gaussian(uint32_t a, uint32_t b) {
  const double u1 = ((a >> 8) + 1.0) * (1.0 / 16777216.0);  // (0, 1]
  const double u2 = uniform_unit(b);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// The low byte of a word, as a draw independent of uniform_unit's 24 high bits.
uint32_t low_byte(uint32_t word) { return word & 0xFFu; }

struct ClusterItems {
  std::vector<uint32_t> catalog;             // always-on items, most popular first
  std::vector<uint32_t> launches[kPeriods];  // items launching in period p, most popular first
  double log_catalog_plus_one = 0.0;
  double log_launches_plus_one[kPeriods] = {};
};

struct Item {
  uint32_t cluster;
  uint32_t price_cents;
  uint32_t popularity_key;
  uint8_t launch_period;  // 0: in the catalog before the window
  bool cold;
  uint8_t device_lean;  // the device the item suits (`device_effect`), an index into kDevices
};

struct User {
  uint32_t primary;
  uint32_t secondary;
  uint32_t window_begin;  // seconds after kWindowStart
  uint32_t window_length;
  uint8_t device;
};

struct Shop {
  GeneratorOptions options;
  std::vector<Item> items;
  std::vector<User> users;
  std::vector<ClusterItems> clusters;
  ClusterItems everything;  // for clusters without items of their own
  std::vector<uint64_t> user_rows;
  // `device_effect`: the chance that an event keeps an item that does not suit its device.
  double off_device_keep = 1.0;
};

std::string cluster_category(uint32_t cluster) {
  std::string name(kThemes[cluster % kThemeCount].category);
  if (cluster >= kThemeCount) {
    name += '-';
    append_uint(name, cluster / kThemeCount + 1);
  }
  return name;
}

uint32_t cluster_price_cents(uint32_t cluster) {
  return kThemes[cluster % kThemeCount].base_price_cents * (4 + cluster / kThemeCount) / 4;
}

// How well-off the cluster's buyers are, in [0, 1]; drives membership level.
double cluster_wealth(uint32_t cluster) {
  return std::min(1.0, cluster_price_cents(cluster) / 9000.0);
}

// A rank in [0, n) with P(rank) roughly proportional to 1 / (rank + 1): Zipf with exponent 1 by
// inverting the continuous CDF, one exp per draw instead of a table search.
uint32_t zipf_rank(uint32_t word, size_t n, double log_n_plus_one) {
  const double x = std::exp(uniform_unit(word) * log_n_plus_one) - 1.0;
  return std::min(static_cast<uint32_t>(x), static_cast<uint32_t>(n - 1));
}

void finish_lists(ClusterItems& lists, const std::vector<Item>& items) {
  const auto by_popularity = [&items](uint32_t a, uint32_t b) {
    return items[a].popularity_key != items[b].popularity_key
               ? items[a].popularity_key < items[b].popularity_key
               : a < b;
  };
  std::sort(lists.catalog.begin(), lists.catalog.end(), by_popularity);
  lists.log_catalog_plus_one = std::log(lists.catalog.size() + 1.0);
  for (uint32_t p = 0; p < kPeriods; ++p) {
    std::sort(lists.launches[p].begin(), lists.launches[p].end(), by_popularity);
    lists.log_launches_plus_one[p] = std::log(lists.launches[p].size() + 1.0);
  }
}

void validate(const GeneratorOptions& options) {
  if (options.clusters == 0 || options.clusters > 65536) {
    throw Error("generate: `clusters` must be between 1 and 65536, got " +
                std::to_string(options.clusters));
  }
  if (!(options.cold_item_share >= 0.0 && options.cold_item_share <= 1.0)) {
    throw Error("generate: `cold_items` must be a share between 0 and 1, got " +
                std::to_string(options.cold_item_share));
  }
  if (options.interactions > 0 && options.users == 0) {
    throw Error("generate: interactions need at least one user (`users`)");
  }
  if (options.impressions > kMaxGeneratorImpressions) {
    throw Error("generate: `impressions` must be at most " +
                std::to_string(kMaxGeneratorImpressions) + ", got " +
                std::to_string(options.impressions));
  }
  if (!(options.device_effect >= 0.0 && options.device_effect <= 20.0)) {
    throw Error("generate: `device_effect` must be between 0 and 20, got " +
                std::to_string(options.device_effect));
  }
}

// Each item's cluster, price and popularity, and with `device_effect` the device it suits.
void draw_items(Shop& shop) {
  const GeneratorOptions& options = shop.options;
  const uint64_t seed = options.seed;
  const uint32_t clusters = options.clusters;

  shop.items.resize(options.items);
  for (uint32_t i = 0; i < options.items; ++i) {
    const Philox4 w = random_words(seed, RandomStream::kGenerator, kItemDraw, i);
    Item& item = shop.items[i];
    item.cluster = uniform_below(w.v[0], clusters);
    const double price =
        cluster_price_cents(item.cluster) * std::exp(0.5 * gaussian(w.v[1], w.v[2]));
    item.price_cents = static_cast<uint32_t>(std::clamp(std::round(price), 99.0, 5e8));
    item.popularity_key = w.v[3];
    item.launch_period = 0;
    item.cold = false;
    item.device_lean = 0;
  }
  if (options.device_effect > 0.0) {
    // Mobile-first, desktop-first and tablet-first categories in the proportions of the users'
    // devices (55%, 35%, 10%).
    std::vector<uint8_t> cluster_lean(clusters);
    for (uint32_t c = 0; c < clusters; ++c) {
      const float x = uniform_unit(signal_words(seed, kClusterDeviceSignal, 0, c).v[0]);
      cluster_lean[c] = x < 0.55f ? 0 : x < 0.9f ? 1 : 2;
    }
    for (uint32_t i = 0; i < options.items; ++i) {
      const Philox4 w = signal_words(seed, kItemDeviceSignal, 0, i);
      Item& item = shop.items[i];
      item.device_lean = uniform_unit(w.v[0]) < kItemTakesCategoryLean
                             ? cluster_lean[item.cluster]
                             : static_cast<uint8_t>(uniform_below(w.v[1], 3));
    }
    shop.off_device_keep = std::exp(-options.device_effect);
  }
}

void mark_cold_items(Shop& shop) {
  const GeneratorOptions& options = shop.options;
  const uint64_t seed = options.seed;
  // Exactly floor(share * items) cold items, chosen by a random order of the items.
  const auto cold_count =
      static_cast<uint32_t>(std::floor(options.cold_item_share * options.items + 1e-9));
  if (cold_count > 0) {
    std::vector<std::pair<uint32_t, uint32_t>> order(options.items);
    for (uint32_t i = 0; i < options.items; ++i) {
      order[i] = {random_words(seed, RandomStream::kGenerator, kColdOrderDraw, i).v[0], i};
    }
    std::sort(order.begin(), order.end());
    for (uint32_t k = 0; k < cold_count; ++k) shop.items[order[k].second].cold = true;
  }
  if (options.interactions > 0 && cold_count >= options.items) {
    throw Error("generate: interactions need at least one item that is not cold (`items` " +
                std::to_string(options.items) + ", `cold_items` " +
                std::to_string(options.cold_item_share) + ")");
  }
}

// Which warm items launch in a later period and which are on sale all along, as each cluster's
// and the whole shop's lists by popularity.
void list_items(Shop& shop) {
  const GeneratorOptions& options = shop.options;
  const uint64_t seed = options.seed;
  const uint32_t clusters = options.clusters;
  std::vector<uint32_t> warm_per_cluster(clusters, 0);
  for (const Item& item : shop.items) {
    if (!item.cold) ++warm_per_cluster[item.cluster];
  }
  std::vector<uint32_t> catalog_per_cluster(clusters, 0);
  for (uint32_t i = 0; i < options.items; ++i) {
    Item& item = shop.items[i];
    if (item.cold) continue;
    const Philox4 w = random_words(seed, RandomStream::kGenerator, kItemRoleDraw, i);
    if (warm_per_cluster[item.cluster] >= kMinClusterForLaunches &&
        uniform_unit(w.v[0]) < kLaunchShare) {
      item.launch_period = static_cast<uint8_t>(1 + uniform_below(w.v[1], kPeriods - 1));
    } else {
      ++catalog_per_cluster[item.cluster];
    }
  }
  shop.clusters.resize(clusters);
  for (uint32_t i = 0; i < options.items; ++i) {
    Item& item = shop.items[i];
    if (item.cold) continue;
    // A cluster needs an always-on catalog to fall back on when no launch is trending.
    if (catalog_per_cluster[item.cluster] == 0) item.launch_period = 0;
    if (item.launch_period > 0) {
      shop.clusters[item.cluster].launches[item.launch_period].push_back(i);
      shop.everything.launches[item.launch_period].push_back(i);
    } else {
      shop.clusters[item.cluster].catalog.push_back(i);
      shop.everything.catalog.push_back(i);
    }
  }
  for (ClusterItems& lists : shop.clusters) finish_lists(lists, shop.items);
  finish_lists(shop.everything, shop.items);
  if (options.impressions > 0 && options.interactions > 0 &&
      shop.everything.catalog.size() <= options.impressions) {
    throw Error("generate: `impressions` " + std::to_string(options.impressions) +
                " needs more than that many items on sale for the whole window; the shop has " +
                std::to_string(shop.everything.catalog.size()) + " (add `items`)");
  }
}

// Each user's clusters, device and window; returns their activity weights.
std::vector<uint64_t> draw_users(Shop& shop) {
  const GeneratorOptions& options = shop.options;
  const uint64_t seed = options.seed;
  const uint32_t clusters = options.clusters;
  shop.users.resize(options.users);
  std::vector<uint64_t> activity(options.users);
  for (uint32_t u = 0; u < options.users; ++u) {
    const Philox4 w = random_words(seed, RandomStream::kGenerator, kUserDraw, u);
    const Philox4 window = random_words(seed, RandomStream::kGenerator, kUserWindowDraw, u);
    User& user = shop.users[u];
    user.primary = uniform_below(w.v[0], clusters);
    user.secondary = clusters > 1
                         ? (user.primary + 1 + uniform_below(w.v[1], clusters - 1)) % clusters
                         : user.primary;
    const float device = uniform_unit(w.v[2]);
    user.device = device < 0.55f ? 0 : device < 0.9f ? 1 : 2;
    // Log-normal activity: a few heavy users, many light ones.
    activity[u] = 1 + static_cast<uint64_t>(100.0 * std::exp(gaussian(w.v[3], window.v[0])));
    // Users join over the first 60% of the window; most stay to the end and 30% leave early.
    // The shop grows, so the event rate moves over time and recent windows are well populated.
    user.window_begin = static_cast<uint32_t>(uniform_unit(window.v[1]) * (kWindowSeconds * 3 / 5));
    uint32_t window_end = kWindowSeconds - kFunnelSlack;
    if (uniform_unit(window.v[2]) < 0.3f) {
      window_end -= static_cast<uint32_t>(low_byte(window.v[2]) / 256.0 * 0.7 *
                                          (window_end - user.window_begin));
    }
    user.window_length = window_end - user.window_begin;
  }
  return activity;
}

void split_rows(Shop& shop, const std::vector<uint64_t>& activity) {
  const GeneratorOptions& options = shop.options;
  // Rows per user: the integer split of `interactions` in proportion to activity, exact in total.
  shop.user_rows.assign(options.users, 0);
  const uint64_t total_activity = std::accumulate(activity.begin(), activity.end(), uint64_t{0});
  uint64_t cumulative = 0, previous_boundary = 0;
  for (uint32_t u = 0; u < options.users; ++u) {
    cumulative += activity[u];
    const auto boundary = static_cast<uint64_t>(
        static_cast<unsigned __int128>(options.interactions) * cumulative / total_activity);
    shop.user_rows[u] = boundary - previous_boundary;
    if (shop.user_rows[u] >= (uint64_t{1} << 32)) {
      throw Error("generate: more than 2^32 interactions for one user; add users");
    }
    previous_boundary = boundary;
  }
}

Shop build_shop(const GeneratorOptions& options) {
  Shop shop;
  shop.options = options;
  draw_items(shop);
  mark_cold_items(shop);
  list_items(shop);
  split_rows(shop, draw_users(shop));
  return shop;
}

void write_items(const Shop& shop, const fs::path& path) {
  detail::AtomicOutputFile file(path);
  std::string out = "ITEM_ID,CATEGORY_L1,GENRES,PRICE,DESCRIPTION,CREATION_TIMESTAMP\n";
  std::string description;
  const uint64_t seed = shop.options.seed;
  for (uint32_t i = 0; i < shop.items.size(); ++i) {
    const Item& item = shop.items[i];
    const Theme& theme = kThemes[item.cluster % kThemeCount];
    // Variants (clusters >= 16) borrow a second theme's words, so they differ from their base.
    const Theme& second_theme =
        kThemes[(item.cluster % kThemeCount + 5 * (item.cluster / kThemeCount)) % kThemeCount];

    out += 'i';
    append_uint(out, i);
    out += ',';
    out += cluster_category(item.cluster);
    out += ',';

    // 1 to 3 distinct genres, mostly the theme's own.
    const Philox4 g = random_words(seed, RandomStream::kGenerator, kItemGenreDraw, i);
    const uint32_t genre_count = 1 + uniform_below(g.v[3], 3);
    std::string_view genres[3];
    uint32_t kept = 0;
    for (uint32_t k = 0; k < genre_count; ++k) {
      const std::string_view genre =
          uniform_unit(g.v[k]) < 0.85f
              ? theme.genres[low_byte(g.v[k]) % 3]
              : kThemes[low_byte(g.v[k]) % kThemeCount].genres[(g.v[k] >> 8) % 3];
      if (std::find(genres, genres + kept, genre) == genres + kept) genres[kept++] = genre;
    }
    for (uint32_t k = 0; k < kept; ++k) {
      if (k > 0) out += '|';
      out += genres[k];
    }
    out += ',';
    append_cents(out, item.price_cents);
    out += ',';

    // 6 to 14 words, 70% from the cluster's theme, commas here and there.
    const Philox4 r = random_words(seed, RandomStream::kGenerator, kItemRoleDraw, i);
    const uint32_t word_count = 6 + uniform_below(r.v[3], 9);
    description.clear();
    Philox4 w{};
    for (uint32_t k = 0; k < word_count; ++k) {
      if (k % 4 == 0) {
        w = random_words(seed, RandomStream::kGenerator, kItemTextDraw,
                         (uint64_t{i} << 2) | (k / 4));
      }
      const uint32_t word = w.v[k % 4];
      std::string_view text;
      if (uniform_unit(word) < 0.7f) {
        const bool borrow = item.cluster >= kThemeCount && (word & 0x100u) != 0;
        text = (borrow ? second_theme : theme).words[low_byte(word) % 12];
      } else {
        text = kGenericWords[low_byte(word) % kGenericWordCount];
      }
      if (k > 0) description += ' ';
      description += text;
      if (((word >> 9) & 0x7u) == 0) description += ',';
    }
    if (!description.empty() && description.back() == ',') description.pop_back();
    if (!description.empty() && description[0] >= 'a' && description[0] <= 'z') {
      description[0] = static_cast<char>(description[0] - 'a' + 'A');
    }
    append_csv_field(out, description);
    out += ',';

    // Catalog items predate the window, launches appear at the start of their period and cold
    // items are the newest arrivals: listed in the last 30 days, not yet seen by anyone.
    int64_t created;
    if (item.cold) {
      created = kWindowStart + kWindowSeconds - 1 - uniform_below(r.v[2], 30 * 86400);
    } else if (item.launch_period > 0) {
      created = kWindowStart + int64_t{item.launch_period} * kPeriodSeconds -
                uniform_below(r.v[2], 86400);
    } else {
      created = kWindowStart - 1 - uniform_below(r.v[2], 2 * 365 * 86400);
    }
    detail::append_int(out, created);
    out += '\n';
    if (out.size() > (1u << 20)) {
      file.write(out);
      out.clear();
    }
  }
  file.write(out);
  file.commit();
}

void write_users(const Shop& shop, const fs::path& path) {
  detail::AtomicOutputFile file(path);
  std::string out = "USER_ID,AGE,GENDER,MEMBERSHIP\n";
  for (uint32_t u = 0; u < shop.users.size(); ++u) {
    const User& user = shop.users[u];
    const uint32_t c = user.primary;
    const Philox4 w =
        random_words(shop.options.seed, RandomStream::kGenerator, kUserDemographicsDraw, u);
    const double mean_age = 22.0 + (c * 11u) % 35u;
    const auto age = static_cast<int64_t>(
        std::clamp(std::round(mean_age + 9.0 * gaussian(w.v[0], w.v[1])), 16.0, 85.0));
    const double female_share = 0.25 + 0.5 * ((c * 5u) % 16u) / 15.0;
    const double level = (uniform_unit(w.v[3]) + 0.6 * cluster_wealth(c)) / 1.6 * 4.0;
    out += 'u';
    append_uint(out, u);
    out += ',';
    detail::append_int(out, age);
    out += uniform_unit(w.v[2]) < female_share ? ",F," : ",M,";
    out += kMemberships[std::min(3, static_cast<int>(level))];
    out += '\n';
    if (out.size() > (1u << 20)) {
      file.write(out);
      out.clear();
    }
  }
  file.write(out);
  file.commit();
}

struct Event {
  uint32_t time;  // seconds after kWindowStart
  uint32_t sequence;
  uint32_t item;
  uint8_t type;
  uint8_t device;
};

// One item of `lists` on sale at `time`: a trending launch of this or the previous period, or a
// catalog item, both with a Zipf long tail.
uint32_t pick_from(const ClusterItems* lists, uint32_t time, uint32_t trend_word,
                   uint32_t rank_word) {
  if (uniform_unit(trend_word) < kTrendingShare) {
    const uint32_t period = time / kPeriodSeconds;
    const uint32_t launch = low_byte(trend_word) < 180 || period == 0 ? period : period - 1;
    const auto& launched = lists->launches[launch];
    if (!launched.empty()) {
      return launched[zipf_rank(rank_word, launched.size(), lists->log_launches_plus_one[launch])];
    }
  }
  return lists->catalog[zipf_rank(rank_word, lists->catalog.size(), lists->log_catalog_plus_one)];
}

// One item for an event at `time` in `cluster`.
uint32_t pick_item(const Shop& shop, uint32_t cluster, uint32_t time, uint32_t trend_word,
                   uint32_t rank_word) {
  const ClusterItems* lists = &shop.clusters[cluster];
  if (lists->catalog.empty()) lists = &shop.everything;
  return pick_from(lists, time, trend_word, rank_word);
}

// --device-effect: rejection sampling over the cluster's item distribution, keeping an item that
// does not suit the event's device with probability exp(-effect), so a suitable item is
// exp(effect) times as likely as without the effect, relative to an unsuitable one. `first` is the
// item the shop picks without the effect.
uint32_t pick_item_for_device(const Shop& shop, uint32_t cluster, uint32_t time, uint8_t device,
                              uint64_t chain_index, uint32_t first) {
  uint32_t item = first;
  for (uint32_t attempt = 0;; ++attempt) {
    const Philox4 w = signal_words(shop.options.seed, kDevicePickSignal, attempt, chain_index);
    if (attempt > 0) item = pick_item(shop, cluster, time, w.v[1], w.v[2]);
    if (shop.items[item].device_lean == device || attempt + 1 == kDevicePickAttempts ||
        uniform_unit(w.v[0]) < shop.off_device_keep) {
      return item;
    }
  }
}

// The IMPRESSION list of one row: `count` distinct items on sale at the row's time, never the
// row's item, as a recommender would have shown them (see kShownPopularShare). The items go to
// `shown` in the order they were drawn.
void draw_impressions(const Shop& shop, uint32_t u, uint32_t sequence, uint32_t time,
                      uint32_t acted_on, std::vector<uint32_t>& shown) {
  const uint64_t seed = shop.options.seed;
  const uint32_t count = shop.options.impressions;
  const User& user = shop.users[u];
  const uint64_t index = (uint64_t{u} << 32) | sequence;
  const uint32_t clusters = shop.options.clusters;
  const uint32_t row_word = signal_words(seed, kShownRowSignal, 0, index).v[0];
  uint32_t explore = uniform_below(row_word, clusters);
  if (clusters > 2) {
    // A cluster other than the user's two, by skipping them in cluster order.
    const uint32_t low = std::min(user.primary, user.secondary);
    const uint32_t high = std::max(user.primary, user.secondary);
    explore = uniform_below(row_word, clusters - 2);
    if (explore >= low) ++explore;
    if (explore >= high) ++explore;
  }
  const auto cluster_lists = [&shop](uint32_t cluster) {
    const ClusterItems* lists = &shop.clusters[cluster];
    return lists->catalog.empty() ? &shop.everything : lists;
  };
  const auto keep = [&](uint32_t item) {
    if (item != acted_on && std::find(shown.begin(), shown.end(), item) == shown.end()) {
      shown.push_back(item);
    }
  };
  shown.clear();
  for (uint32_t attempt = 0; shown.size() < count && attempt < kShownAttemptsPerItem * count;
       ++attempt) {
    const Philox4 w = signal_words(seed, kShownSlotSignal, attempt, index);
    const float source = uniform_unit(w.v[0]);
    const ClusterItems* lists =
        source < kShownPopularShare                        ? &shop.everything
        : source < kShownPopularShare + kShownExploreShare ? cluster_lists(explore)
        : uniform_unit(w.v[3]) < kShownPrimaryOfOwn        ? cluster_lists(user.primary)
                                                           : cluster_lists(user.secondary);
    keep(pick_from(lists, time, w.v[1], w.v[2]));
  }
  // Small clusters run out of distinct items: the shop's most popular catalog items fill the rest
  // (build_shop made sure there are enough).
  for (size_t k = 0; shown.size() < count && k < shop.everything.catalog.size(); ++k) {
    keep(shop.everything.catalog[k]);
  }
}

// Appends the rows of users [first, end) to `out`, each user's events in time order.
void generate_rows(const Shop& shop, uint32_t first, uint32_t end, std::vector<Event>& events,
                   std::string& out) {
  std::vector<uint32_t> shown;
  std::string shown_text;
  const uint64_t seed = shop.options.seed;
  const uint32_t clusters = shop.options.clusters;
  for (uint32_t u = first; u < end; ++u) {
    const User& user = shop.users[u];
    const uint64_t rows = shop.user_rows[u];
    events.clear();
    for (uint32_t chain = 0; events.size() < rows; ++chain) {
      const uint64_t index = (uint64_t{u} << 32) | chain;
      const Philox4 a = random_words(seed, RandomStream::kGenerator, kChainDraw, index);
      const Philox4 b = random_words(seed, RandomStream::kGenerator, kChainFunnelDraw, index);
      const uint32_t time = user.window_begin + uniform_below(a.v[0], user.window_length + 1);
      const float taste = uniform_unit(a.v[1]);
      const uint32_t cluster = taste < kPrimaryShare ? user.primary
                               : taste < kPrimaryShare + kSecondaryShare
                                   ? user.secondary
                                   : uniform_below(b.v[3], clusters);
      const uint8_t device = uniform_unit(b.v[0]) < kPreferredDeviceShare
                                 ? user.device
                                 : static_cast<uint8_t>(low_byte(b.v[0]) % 3);
      uint32_t item = pick_item(shop, cluster, time, a.v[2], a.v[3]);
      if (shop.options.device_effect > 0.0) {
        item = pick_item_for_device(shop, cluster, time, device, index, item);
      }
      const uint32_t item_cluster = shop.items[item].cluster;
      const bool in_taste = item_cluster == user.primary || item_cluster == user.secondary;

      const auto sequence = static_cast<uint32_t>(events.size());
      events.push_back({time, sequence, item, 0, device});
      const float cart_share = in_taste ? kCartGivenViewInTaste : kCartGivenViewOffTaste;
      if (events.size() < rows && uniform_unit(b.v[1]) < cart_share) {
        const uint32_t cart_time = time + 30 + low_byte(b.v[1]) * 7;
        events.push_back({cart_time, sequence + 1, item, 1, device});
        if (events.size() < rows && uniform_unit(b.v[2]) < kPurchaseGivenCart) {
          events.push_back({cart_time + 60 + low_byte(b.v[2]) * 14, sequence + 2, item, 2, device});
        }
      }
    }
    std::sort(events.begin(), events.end(), [](const Event& x, const Event& y) {
      return x.time != y.time ? x.time < y.time : x.sequence < y.sequence;
    });
    for (const Event& event : events) {
      out += 'u';
      append_uint(out, u);
      out += ",i";
      append_uint(out, event.item);
      out += ',';
      append_uint(out, static_cast<uint64_t>(kWindowStart) + event.time);
      out += ',';
      out += kEventTypes[event.type];
      out += ',';
      if (event.type == 2) append_cents(out, shop.items[event.item].price_cents);
      out += ',';
      out += kDevices[event.device];
      if (shop.options.impressions > 0) {
        draw_impressions(shop, u, event.sequence, event.time, event.item, shown);
        shown_text.clear();
        for (size_t k = 0; k < shown.size(); ++k) {
          if (k > 0) shown_text += '|';
          shown_text += 'i';
          append_uint(shown_text, shown[k]);
        }
        out += ',';
        append_csv_field(out, shown_text);
      }
      out += '\n';
    }
  }
}

// Users are cut into blocks of about `rows_per_block` rows; workers fill blocks in any order and
// the calling thread writes them in order, so I/O overlaps generation and memory stays bounded.
void write_interactions(const Shop& shop, const fs::path& path, uint32_t threads) {
  detail::AtomicOutputFile file(path);
  file.write(shop.options.impressions > 0
                 ? "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE,DEVICE_TYPE,IMPRESSION\n"
                 : "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE,DEVICE_TYPE\n");

  // The block size depends only on the options, never on the thread count.
  const uint64_t rows_per_block =
      std::clamp<uint64_t>(shop.options.interactions / 64, 4096, 1u << 18);
  struct Block {
    uint32_t first_user;
    uint32_t end_user;
    std::string text;
    bool ready = false;
  };
  std::vector<Block> blocks;
  {
    uint32_t first = 0;
    uint64_t rows = 0;
    for (uint32_t u = 0; u < shop.users.size(); ++u) {
      rows += shop.user_rows[u];
      if (rows >= rows_per_block) {
        blocks.push_back({first, u + 1, {}, false});
        first = u + 1;
        rows = 0;
      }
    }
    if (rows > 0) blocks.push_back({first, static_cast<uint32_t>(shop.users.size()), {}, false});
  }

  const size_t max_in_flight = 2 * size_t{threads} + 2;
  std::mutex mutex;
  std::condition_variable changed;
  size_t next_block = 0, written = 0;
  bool failed = false;
  std::exception_ptr failure;

  const auto worker = [&] {
    std::vector<Event> events;
    for (;;) {
      size_t index;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return failed || next_block < written + max_in_flight; });
        if (failed || next_block >= blocks.size()) return;
        index = next_block++;
      }
      try {
        std::string text;
        text.reserve(rows_per_block * (48 + 7 * size_t{shop.options.impressions}));
        generate_rows(shop, blocks[index].first_user, blocks[index].end_user, events, text);
        std::lock_guard lock(mutex);
        blocks[index].text = std::move(text);
        blocks[index].ready = true;
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!failed) failure = std::current_exception();
        failed = true;
      }
      changed.notify_all();
    }
  };

  std::vector<std::thread> workers;
  for (uint32_t t = 0; t < threads; ++t) workers.emplace_back(worker);
  try {
    for (size_t b = 0; b < blocks.size(); ++b) {
      std::string text;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return failed || blocks[b].ready; });
        if (failed) break;
        text = std::move(blocks[b].text);
      }
      file.write(text);
      {
        std::lock_guard lock(mutex);
        ++written;
      }
      changed.notify_all();
    }
  } catch (...) {
    std::lock_guard lock(mutex);
    if (!failed) failure = std::current_exception();
    failed = true;
  }
  changed.notify_all();
  for (std::thread& t : workers) t.join();
  if (failure) std::rethrow_exception(failure);
  file.commit();
}

}  // namespace

CsvFiles generate_shop(const GeneratorOptions& options, const fs::path& out_dir) {
  validate(options);
  std::error_code error;
  fs::create_directories(out_dir, error);
  if (error) throw Error("generate: cannot create " + out_dir.string() + ": " + error.message());

  uint32_t threads = options.threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());

  const Shop shop = build_shop(options);
  CsvFiles files{out_dir / "interactions.csv", out_dir / "users.csv", out_dir / "items.csv"};
  write_items(shop, files.items);
  write_users(shop, files.users);
  write_interactions(shop, files.interactions, threads);
  return files;
}

}  // namespace tastebud::datasets
