// Recipes (host/recipes.h) against answers computed by hand on eight events, and the recipe models
// answering batch queries.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "host/inference.h"
#include "host/recipes.h"
#include "host/scrub_model.h"
#include "host/training.h"
#include "tastebud/datasets/import.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

// One user's "view" events on `items` items, held here so that the log's spans stay valid.
struct OneUserEvents {
  std::vector<uint32_t> item;
  std::vector<int64_t> time;
  std::vector<uint32_t> user = std::vector<uint32_t>(item.size(), 0), type = std::vector<uint32_t>(item.size(), 0);

  EventLog log(uint32_t items) const {
    EventLog log;
    log.num_users = 1;
    log.num_items = items;
    log.user = user;
    log.item = item;
    log.timestamp = time;
    log.event_type = type;
    log.event_types = {"view"};
    return log;
  }
};


constexpr int64_t kDay = 86400;

// A view (type 0) and purchase (type 1) event log over the caller's columns (EventLog holds spans:
// they must outlive it).
EventLog view_purchase_log(uint32_t users, uint32_t items, std::span<const uint32_t> user,
                           std::span<const uint32_t> item, std::span<const int64_t> timestamp,
                           std::span<const uint32_t> type) {
  EventLog l;
  l.num_users = users;
  l.num_items = items;
  l.user = user;
  l.item = item;
  l.timestamp = timestamp;
  l.event_type = type;
  l.event_types = {"view", "purchase"};
  return l;
}

//   user  item  day  type
//   u0    i0    0    view
//   u0    i1    1    view
//   u0    i1    9    purchase
//   u1    i0    2    view
//   u1    i1    8    view
//   u1    i2    9    view
//   u2    i0    3    view
//   u2    i2    10   purchase        (i3 has no events)
struct Events {
  std::vector<uint32_t> user{0, 0, 0, 1, 1, 1, 2, 2};
  std::vector<uint32_t> item{0, 1, 1, 0, 1, 2, 0, 2};
  std::vector<int64_t> timestamp{0 * kDay, 1 * kDay, 9 * kDay, 2 * kDay, 8 * kDay, 9 * kDay, 3 * kDay, 10 * kDay};
  std::vector<uint32_t> type{0, 0, 1, 0, 0, 0, 0, 1};

  EventLog log() const { return view_purchase_log(3, 4, user, item, timestamp, type); }
};

TEST(Recipes, PopularityCountsWeightedByEventTypeAndRecency) {
  const Events e;
  RecipeOptions o;
  o.popularity_count = PopularityCount::kEvents;
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{3, 3, 2, 0}));
  o.event_weights = {{"view", 1}, {"purchase", 4}};
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{3, 6, 5, 0}));
  o.event_weights = {{"purchase", 1}};  // unlisted types count 0
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{0, 1, 1, 0}));
  // Half-life of 10 days: an event of day d weighs 2^-((10 - d) / 10).
  o.event_weights.clear();
  o.half_life_days = 10;
  const std::vector<float> decayed = popularity_scores(e.log(), o);
  auto w = [](double day) { return std::exp2(-(10 - day) / 10); };
  EXPECT_NEAR(decayed[0], w(0) + w(2) + w(3), 1e-6);
  EXPECT_NEAR(decayed[1], w(1) + w(9) + w(8), 1e-6);
  EXPECT_NEAR(decayed[2], w(9) + w(10), 1e-6);
  EXPECT_EQ(decayed[3], 0.0f);
  o.event_weights = {{"click", 1}};
  EXPECT_THROW(popularity_scores(e.log(), o), Error);
  // Per-event weights (the job's --event rules, resolved) replace the per-type map.
  EventLog weighted = e.log();
  weighted.weight = {1, 0, 0, 0, 0, 0, 0, 2};
  o.half_life_days = 0;
  EXPECT_EQ(popularity_scores(weighted, o), (std::vector<float>{1, 0, 2, 0}));
}

// The service's Popularity-Count: distinct users per item, whatever their events' weights or
// repeats (u0's view and purchase of i1 count once).
TEST(Recipes, PopularityCountsDistinctUsers) {
  const Events e;
  RecipeOptions o;
  EXPECT_EQ(o.popularity_count, PopularityCount::kUsers);  // the default
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{3, 2, 2, 0}));
  o.event_weights = {{"view", 1}, {"purchase", 4}};  // weights do not scale a user
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{3, 2, 2, 0}));
  o.event_weights = {{"purchase", 1}};  // only users with a used event count: u0 bought i1, u2 i2
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{0, 1, 1, 0}));
  EventLog weighted = e.log();
  weighted.weight = {1, 0, 0, 0, 0, 0, 0, 2};
  o.event_weights.clear();
  EXPECT_EQ(popularity_scores(weighted, o), (std::vector<float>{1, 0, 1, 0}));
  EXPECT_EQ(parse_popularity_count("events"), PopularityCount::kEvents);
  try {
    parse_popularity_count("sales");
    FAIL();
  } catch (const Error& x) {
    EXPECT_NE(std::string(x.what()).find("`popularity_count` 'sales': choose users"), std::string::npos) << x.what();
  }
}

// With a half-life, a user counts 0.5^(age of the user's newest used event on the item / half-life):
// u0's i1 counts from day 9 (its purchase), not day 1; events would add up both.
TEST(Recipes, PopularityCountsUsersDecayedByTheirNewestEvent) {
  const Events e;
  RecipeOptions o;
  o.half_life_days = 10;
  auto w = [](double day) { return std::exp2(-(10 - day) / 10); };
  const std::vector<float> users = popularity_scores(e.log(), o);
  EXPECT_NEAR(users[0], w(0) + w(2) + w(3), 1e-6);
  EXPECT_NEAR(users[1], w(9) + w(8), 1e-6);
  EXPECT_NEAR(users[2], w(9) + w(10), 1e-6);
  EXPECT_EQ(users[3], 0.0f);
  o.popularity_count = PopularityCount::kEvents;
  EXPECT_NEAR(popularity_scores(e.log(), o)[1], w(1) + w(9) + w(8), 1e-6);
}

// Only events in (newest - D, newest] count; an event exactly D days before the newest is out.
TEST(Recipes, PopularityWindowKeepsTheLatestDays) {
  const Events e;  // newest event: day 10
  RecipeOptions o;
  o.popularity_window_days = 1.5;  // days 9 and 10: u0's i1 purchase, u1's i2 view, u2's i2 purchase
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{0, 1, 2, 0}));
  o.popularity_window_days = 1;  // day 10 only: day 9 is exactly one day before
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{0, 0, 1, 0}));
  o.popularity_window_days = 1.5;
  o.popularity_count = PopularityCount::kEvents;
  o.event_weights = {{"view", 1}, {"purchase", 4}};
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{0, 4, 5, 0}));
  o.popularity_window_days = 0;  // all time
  EXPECT_EQ(popularity_scores(e.log(), o), (std::vector<float>{3, 6, 5, 0}));
}

TEST(Recipes, TrendingIsGrowthOfTheLatestWindowOverThePrevious) {
  const Events e;
  RecipeOptions o;
  o.trend_window_days = 5;
  o.trend_smoothing = 1;
  // Newest event: day 10. Latest window: days (5, 10]; previous: (0, 5].
  //   i0: latest 0, previous 2 (days 2, 3)  -> (0 - 2) / (2 + 1)
  //   i1: latest 2 (days 8, 9), previous 1 (day 1) -> (2 - 1) / (1 + 1)
  //   i2: latest 2 (days 9, 10), previous 0 -> 2 / 1
  //   i3: nothing -> 0
  const std::vector<float> s = trending_scores(e.log(), o);
  EXPECT_NEAR(s[0], -2.0 / 3, 1e-6);
  EXPECT_NEAR(s[1], 0.5, 1e-6);
  EXPECT_NEAR(s[2], 2.0, 1e-6);
  EXPECT_EQ(s[3], 0.0f);
  o.event_weights = {{"view", 1}, {"purchase", 3}};
  // i1 latest = 1 (view, day 8) + 3 (purchase, day 9); i2 latest = 1 + 3.
  EXPECT_NEAR(trending_scores(e.log(), o)[1], (4.0 - 1) / 2, 1e-6);
}

// The service's Trending-Now windows: 30 minutes is exactly 1800 s, and an event exactly one window
// before the newest belongs to the previous window, not the latest.
TEST(Recipes, TrendingWindowsOfTheServiceAndTheirBoundary) {
  EXPECT_DOUBLE_EQ(parse_trend_window("30m") * 86400, 1800);
  EXPECT_DOUBLE_EQ(parse_trend_window("1h") * 86400, 3600);
  EXPECT_DOUBLE_EQ(parse_trend_window("3h") * 86400, 3 * 3600);
  EXPECT_DOUBLE_EQ(parse_trend_window("1d"), 1);
  try {
    parse_trend_window("45m");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("30m, 1h, 3h and 1d"), std::string::npos) << e.what();
  }
  // Newest event at T. i0: T and T - 1799 (latest window), T - 1800 (previous). i1: T - 1800 and
  // T - 3599 (previous), T - 3600 (neither). i2: T - 1 (latest).
  const int64_t t = 1700000000;
  const OneUserEvents events{{0, 0, 0, 1, 1, 1, 2}, {t, t - 1799, t - 1800, t - 1800, t - 3599, t - 3600, t - 1}};
  const EventLog log = events.log(3);
  RecipeOptions o;
  o.trend_window_days = parse_trend_window("30m");
  o.trend_smoothing = 1;
  const std::vector<float> s = trending_scores(log, o);
  EXPECT_NEAR(s[0], (2.0 - 1) / (1 + 1), 1e-6);
  EXPECT_NEAR(s[1], (0.0 - 2) / (2 + 1), 1e-6);
  EXPECT_NEAR(s[2], 1.0, 1e-6);
  // Answered in batch with a filter: the best trending item among those it lets through.
  ModelData m;
  m.kind = ModelType::kTrending;
  m.user_ids = {"u0"};
  m.item_ids = {"i0", "i1", "i2"};
  m.recipe.kind = "trending";
  m.recipe.item_scores = s;
  m.recipe.popularity = {3, 3, 1};
  InferenceContext context;
  context.catalog.item_ids = m.item_ids;
  context.catalog.numerical.push_back({"PRICE", {50, 5, 5}});
  InferenceOptions options;
  options.filter = "EXCLUDE ItemID WHERE Items.PRICE > 10";
  options.keep_seen = true;
  const Recommender r(std::move(m), std::move(context), options);
  const nlohmann::json a = nlohmann::json::parse(r.answer(R"({"userId": "u0", "numResults": 1})"));
  EXPECT_EQ(a.at("output").at("recommendedItems"), nlohmann::json::parse(R"(["i2"])"));
}

// A dataset imported before timestamps were range-checked may hold INT64_MIN beside real times:
// ages are computed in double (the int64 difference overflowed, undefined behaviour that UBSan
// reported). The old event then simply has no weight left.
TEST(Recipes, ExtremeTimestampsDoNotOverflow) {
  const OneUserEvents events{{0, 1}, {INT64_MIN, 1700000000}};
  const EventLog log = events.log(2);
  RecipeOptions o;
  o.half_life_days = 30;
  const std::vector<float> p = popularity_scores(log, o);
  EXPECT_EQ(p[0], 0.0f);
  EXPECT_EQ(p[1], 1.0f);
  o.trend_window_days = 7;
  const std::vector<float> t = trending_scores(log, o);
  EXPECT_TRUE(std::isfinite(t[0]) && std::isfinite(t[1]));
}

TEST(Recipes, SimsCoOccurrenceWithDiscountAndMinimumCount) {
  const Events e;
  RecipeOptions o;
  o.min_co_count = 1;
  o.popularity_discount = 0.5;
  // Histories: u0 {i0, i1}, u1 {i0, i1, i2}, u2 {i0, i2}; users per item: i0 3, i1 2, i2 2.
  // co(i0, i1) = 2, co(i0, i2) = 2, co(i1, i2) = 1; score = co / sqrt(n_i n_j).
  ItemNeighbors nb = sims_neighbors(e.log(), o);
  ASSERT_EQ(nb.offsets, (std::vector<uint64_t>{0, 2, 4, 6, 6}));
  EXPECT_EQ(nb.items, (std::vector<uint32_t>{1, 2, 0, 2, 0, 1}));
  const float s01 = 2 / std::sqrt(6.0f), s12 = 1 / std::sqrt(4.0f);
  EXPECT_NEAR(nb.scores[0], s01, 1e-6);
  EXPECT_NEAR(nb.scores[1], s01, 1e-6);
  EXPECT_NEAR(nb.scores[2], s01, 1e-6);
  EXPECT_NEAR(nb.scores[3], s12, 1e-6);
  // At least two shared users: i1 and i2 are no longer related.
  o.min_co_count = 2;
  nb = sims_neighbors(e.log(), o);
  EXPECT_EQ(nb.offsets, (std::vector<uint64_t>{0, 2, 3, 4, 4}));
  EXPECT_EQ(nb.items, (std::vector<uint32_t>{1, 2, 0, 0}));
  // Without a discount the raw co-count ranks; one neighbor kept per item.
  o.min_co_count = 1;
  o.popularity_discount = 0;
  o.neighbors = 1;
  nb = sims_neighbors(e.log(), o);
  EXPECT_EQ(nb.items, (std::vector<uint32_t>{1, 0, 0}));
  EXPECT_EQ(nb.scores, (std::vector<float>{2, 2, 2}));
  // "Frequently bought together": purchases only, and no user bought two items.
  o.event_weights = {{"purchase", 1}};
  EXPECT_TRUE(sims_neighbors(e.log(), o).items.empty());
}

// Two users, two orders each; times in hours (a session ends after a gap over one hour):
//   user  item  hour   order
//   u0    i0    0      A
//   u0    i1    0.5    A
//   u0    i2    5      B
//   u0    i3    5.5    B
//   u1    i0    0      C
//   u1    i1    1      C     (exactly one hour after i0: the same session)
//   u1    i2    3      D
//   u1    i3    3.5    -     (no order: no pairs by order)
struct Orders {
  std::vector<uint32_t> user{0, 0, 0, 0, 1, 1, 1, 1};
  std::vector<uint32_t> item{0, 1, 2, 3, 0, 1, 2, 3};
  std::vector<int64_t> timestamp{0, 1800, 5 * 3600, 5 * 3600 + 1800, 0, 3600, 3 * 3600, 3 * 3600 + 1800};
  std::vector<uint32_t> type = std::vector<uint32_t>(8, 1);
  std::vector<uint64_t> order{0, 0, 1, 1, 2, 2, 3, kNoBasket};

  EventLog log() const { return view_purchase_log(2, 4, user, item, timestamp, type); }
};

std::vector<std::pair<uint32_t, float>> neighbors_of(const ItemNeighbors& nb, uint32_t i) {
  std::vector<std::pair<uint32_t, float>> out;
  for (uint64_t k = nb.offsets[i]; k < nb.offsets[i + 1]; ++k) out.emplace_back(nb.items[k], nb.scores[k]);
  return out;
}

TEST(Recipes, SimsCountsCoOccurrenceWithinOrders) {
  const Orders e;
  RecipeOptions o;
  o.min_co_count = 1;
  o.popularity_discount = 0;
  using List = std::vector<std::pair<uint32_t, float>>;
  // By user, every item of a user's history goes with every other: both users hold all four.
  const ItemNeighbors by_user = sims_neighbors(e.log(), o);
  EXPECT_EQ(neighbors_of(by_user, 0), (List{{1, 2}, {2, 2}, {3, 2}}));
  // By order: A {i0, i1}, B {i2, i3}, C {i0, i1}, D {i2}; u1's i3 has no order and forms no pair.
  EventLog log = e.log();
  log.basket = e.order;
  const ItemNeighbors by_order = sims_neighbors(log, o);
  EXPECT_EQ(neighbors_of(by_order, 0), (List{{1, 2}}));
  EXPECT_EQ(neighbors_of(by_order, 2), (List{{3, 1}}));
  EXPECT_EQ(neighbors_of(by_order, 3), (List{{2, 1}}));
  // n = orders holding the item: i2 is in B and D, i3 in B only: 1 / sqrt(2 * 1).
  o.popularity_discount = 0.5;
  EXPECT_NEAR(neighbors_of(sims_neighbors(log, o), 2).at(0).second, 1 / std::sqrt(2.0f), 1e-6);
  // min_co_count counts orders: only i0 and i1 share two.
  o.min_co_count = 2;
  EXPECT_EQ(sims_neighbors(log, o).items, (std::vector<uint32_t>{1, 0}));
}

TEST(Recipes, SimsCountsCoOccurrenceWithinSessions) {
  const Orders e;
  // u0: {i0, i1} then 4.5 hours later {i2, i3}; u1: {i0, i1} (a gap of exactly one hour stays),
  // then 2 hours later {i2, i3}.
  EXPECT_EQ(session_baskets(e.log(), 1), (std::vector<uint64_t>{0, 0, 1, 1, 2, 2, 3, 3}));
  // A gap limit of half an hour splits u1's first two events; one of 5 hours joins u0's.
  EXPECT_EQ(session_baskets(e.log(), 0.5), (std::vector<uint64_t>{0, 0, 1, 1, 2, 3, 4, 4}));
  EXPECT_EQ(session_baskets(e.log(), 5), (std::vector<uint64_t>{0, 0, 0, 0, 1, 1, 1, 1}));
  RecipeOptions o;
  o.min_co_count = 1;
  o.popularity_discount = 0;
  EventLog log = e.log();
  log.basket = session_baskets(log, 1);
  const ItemNeighbors nb = sims_neighbors(log, o);
  using List = std::vector<std::pair<uint32_t, float>>;
  EXPECT_EQ(neighbors_of(nb, 0), (List{{1, 2}}));
  EXPECT_EQ(neighbors_of(nb, 3), (List{{2, 2}}));
  EXPECT_EQ(parse_co_occurrence("session"), CoOccurrence::kSession);
  EXPECT_THROW(parse_co_occurrence("basket"), Error);
}

// "More like X": i2 has no interactions; its neighbours come from its genres alone.
//   i0 {Action, Comedy, Film}, i1 {Action, Film}, i2 {Comedy, Film}; u0 and u1 each took i0 and i1.
// idf: Action, Comedy ln(3/2); Film, held by every item, 0. Unit vectors: i0 (1, 1)/sqrt 2, i1
// (1, 0), i2 (0, 1): cos(i0, i1) = cos(i0, i2) = 1/sqrt 2, cos(i1, i2) = 0.
TEST(Recipes, SimsMetadataSimilarityGivesItemsWithoutInteractionsNeighbours) {
  const std::vector<uint32_t> user{0, 0, 1, 1}, item{0, 1, 0, 1}, type(4, 0);
  const std::vector<int64_t> time{1, 2, 1, 2};
  const EventLog log = view_purchase_log(2, 3, user, item, time, type);
  enum : uint32_t { kAction, kComedy, kFilm };
  ItemTokens genres;
  genres.offsets = {0, 3, 5, 7};
  genres.tokens = {kAction, kComedy, kFilm, kFilm, kAction, kComedy, kFilm};
  RecipeOptions o;
  o.min_co_count = 1;
  // Without metadata similarity: co(i0, i1) = 2, 2 / sqrt(2 * 2) = 1; i2 has no neighbours.
  ItemNeighbors nb = sims_neighbors(log, o, genres);
  EXPECT_EQ(nb.offsets, (std::vector<uint64_t>{0, 1, 2, 2}));
  EXPECT_EQ(nb.scores, (std::vector<float>{1, 1}));
  o.metadata_similarity = 0.3;
  nb = sims_neighbors(log, o, genres);
  using List = std::vector<std::pair<uint32_t, float>>;
  const float c = static_cast<float>(1 / std::sqrt(2.0));
  ASSERT_EQ(nb.offsets, (std::vector<uint64_t>{0, 2, 3, 4}));
  EXPECT_EQ(nb.items, (std::vector<uint32_t>{1, 2, 0, 0}));
  EXPECT_NEAR(nb.scores[0], 0.7 * 1 + 0.3 * c, 1e-6);  // i0 -> i1: co-occurrence and genres
  EXPECT_NEAR(nb.scores[1], 0.3 * c, 1e-6);            // i0 -> i2: Comedy
  EXPECT_NEAR(nb.scores[2], 0.7 * 1 + 0.3 * c, 1e-6);  // i1 -> i0; i1 and i2 share nothing that tells
  EXPECT_NEAR(nb.scores[3], 0.3 * c, 1e-6);            // i2 -> i0, from Comedy alone
  // Metadata alone: the co-occurrence part drops out.
  o.metadata_similarity = 1;
  nb = sims_neighbors(log, o, genres);
  EXPECT_EQ(neighbors_of(nb, 0), (List{{1, c}, {2, c}}));
  // Without metadata, a > 0 scales each item's list by its best score.
  o.metadata_similarity = 0.5;
  EXPECT_EQ(sims_neighbors(log, o).scores, (std::vector<float>{0.5f, 0.5f}));
}

TEST(Recipes, RecipeFileRoundTrip) {
  RecipeData d;
  d.kind = "sims";
  d.popularity = {3, 1, 2};
  d.neighbors.offsets = {0, 1, 1, 2};
  d.neighbors.items = {2, 0};
  d.neighbors.scores = {0.5f, 0.25f};
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("tastebud-recipe-" + std::to_string(::getpid()) + ".bin");
  write_recipe(d, path);
  const RecipeData back = read_recipe(path, 3);
  EXPECT_EQ(back.kind, "sims");
  EXPECT_EQ(back.popularity, d.popularity);
  EXPECT_TRUE(back.item_scores.empty());
  EXPECT_EQ(back.neighbors.offsets, d.neighbors.offsets);
  EXPECT_EQ(back.neighbors.items, d.neighbors.items);
  EXPECT_EQ(back.neighbors.scores, d.neighbors.scores);
  std::filesystem::remove(path);
}

ModelData recipe_model(const std::string& kind) {
  const Events e;
  RecipeOptions o;
  o.min_co_count = 1;
  o.popularity_count = PopularityCount::kEvents;
  ModelData m;
  m.kind = parse_model_type(kind);
  m.user_ids = {"u0", "u1", "u2"};
  m.item_ids = {"i0", "i1", "i2", "i3"};
  m.seen.offsets = {0, 2, 5, 7};
  m.seen.items = {0, 1, 0, 1, 2, 0, 2};
  m.recipe.kind = kind;
  m.recipe.popularity = popularity_scores(e.log(), o);
  if (kind == "popularity") m.recipe.item_scores = m.recipe.popularity;
  if (kind == "sims") m.recipe.neighbors = sims_neighbors(e.log(), o);
  return m;
}

std::vector<std::string> items_of(const Recommender& r, const std::string& line) {
  const nlohmann::json a = nlohmann::json::parse(r.answer(line));
  EXPECT_TRUE(a.at("error").is_null()) << a.dump();
  return a.at("output").at("recommendedItems").get<std::vector<std::string>>();
}

Recommender make(ModelData m) { return Recommender(std::move(m), InferenceContext{}, InferenceOptions{}); }

TEST(Recipes, PopularityModelAnswersTheSameListLessWhatWasSeen) {
  const Recommender r = make(recipe_model("popularity"));
  // Counts 3, 3, 2, 0: ties by index.
  EXPECT_EQ(items_of(r, R"({"userId": "nobody", "numResults": 3})"), (std::vector<std::string>{"i0", "i1", "i2"}));
  EXPECT_EQ(items_of(r, R"({"userId": "u2"})"), (std::vector<std::string>{"i1", "i3"}));
  EXPECT_EQ(items_of(r, R"({"itemId": "i0", "numResults": 2})"), (std::vector<std::string>{"i1", "i2"}));
  EXPECT_FALSE(r.personalized());
}

TEST(Recipes, SimsModelAnswersRelatedItemsAndHistories) {
  const Recommender r = make(recipe_model("sims"));
  EXPECT_EQ(items_of(r, R"({"itemId": "i1", "numResults": 2})"), (std::vector<std::string>{"i0", "i2"}));
  // i3 has no related items: popular items fill the list, with a reason and score 0.
  const nlohmann::json a = nlohmann::json::parse(r.answer(R"({"itemId": "i3", "numResults": 2})"));
  EXPECT_EQ(a.at("output").at("recommendedItems"), nlohmann::json::parse(R"(["i0", "i1"])"));
  EXPECT_EQ(a.at("output").at("scores"), nlohmann::json::parse("[0.0, 0.0]"));
  EXPECT_TRUE(a.at("output").contains("reason"));
  // u0 saw i0 and i1: i2 is related to both (s02 + s12).
  EXPECT_EQ(items_of(r, R"({"userId": "u0", "numResults": 1})"), (std::vector<std::string>{"i2"}));
  EXPECT_TRUE(r.personalized());
  // Segment: affinity for i1 = summed similarity of i1 to each user's history; u0 and u1 saw i1.
  const nlohmann::json s = nlohmann::json::parse(r.segment(R"({"itemId": "i1"})", 5));
  EXPECT_EQ(s.at("output").at("recommendedUsers"), nlohmann::json::parse(R"(["u2"])"));
}


// Trained from an imported dataset: baskets by the interactions' ORDER_ID, metadata from the items'
// GENRES (i4 never bought: its neighbours come from its genre), evaluation on the same baskets, the
// options recorded in config.json; an order field the dataset lacks is refused, naming the fields.
TEST(Recipes, SimsByOrderWithMetadataFromAnImportedDataset) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("tastebud-sims-orders-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  {
    // u0 bought i0 and i1 together, then i2 and i3; u1 the same pairs in two orders; u2 i0 and i1.
    std::ofstream csv(root / "interactions.csv");
    csv << "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,ORDER_ID\n"
        << "u0,i0,1600000000,purchase,A\nu0,i1,1600000000,purchase,A\n"
        << "u0,i2,1600090000,purchase,B\nu0,i3,1600090000,purchase,B\n"
        << "u1,i0,1600000100,purchase,C\nu1,i1,1600000100,purchase,C\n"
        << "u1,i2,1600095000,purchase,D\nu1,i3,1600095000,purchase,D\n"
        << "u2,i0,1600200000,purchase,E\nu2,i1,1600200000,purchase,E\n";
    std::ofstream items(root / "items.csv");
    items << "ITEM_ID,GENRES\ni0,candles\ni1,candles|frames\ni2,cards\ni3,cards|frames\ni4,candles\n";
  }
  datasets::ImportOptions import;
  import.interactions = root / "interactions.csv";
  import.items = root / "items.csv";
  import.out = root / "dataset";
  datasets::import_dataset(import);
  TrainJob job;
  job.data = root / "dataset";
  job.out = root / "model";
  job.model = "sims";
  job.co_occurrence = "order";
  job.min_co_count = 2;
  job.metadata_similarity = 0.5;
  job.eval = "loo";
  job.validation_users = 0;
  job.threads = 1;
  job.progress = false;
  std::ostringstream log;
  const TrainResult result = run_training(job, log);
  ASSERT_EQ(result.history.size(), 1u) << log.str();
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(root / "model" / "config.json"));
  EXPECT_EQ(config.at("recipe").at("co_occurrence"), "order");
  EXPECT_EQ(config.at("recipe").at("order_field"), "ORDER_ID");
  EXPECT_EQ(config.at("recipe").at("metadata_similarity"), 0.5);
  EXPECT_EQ(config.at("recipe").at("popularity_count"), "users");
  const Recommender r = make(load_model_dir(root / "model"));
  // By user, i0 would go with i2 and i3 too (two users hold all four); by order only with i1
  // (3 orders), then by genre with i4 (candles: idf ln(5/3), frames ln(5/2)).
  EXPECT_EQ(items_of(r, R"({"itemId": "i0", "numResults": 2})"), (std::vector<std::string>{"i1", "i4"}));
  // i2 goes with i3 only (by user, with i0 and i1 too); the list is filled with popular items.
  const nlohmann::json two = nlohmann::json::parse(r.answer(R"({"itemId": "i2", "numResults": 2})"));
  EXPECT_EQ(two.at("output").at("recommendedItems")[0], "i3");
  EXPECT_EQ(two.at("output").at("scores")[1].get<double>(), 0.0);
  EXPECT_TRUE(two.at("output").contains("reason"));
  // i4, never bought, gets neighbours from its genre: i0 (candles only) before i1 (candles, frames).
  const nlohmann::json a = nlohmann::json::parse(r.answer(R"({"itemId": "i4", "numResults": 2})"));
  EXPECT_EQ(a.at("output").at("recommendedItems"), nlohmann::json::parse(R"(["i0", "i1"])"));
  EXPECT_NEAR(a.at("output").at("scores")[0].get<double>(), 0.5, 1e-6);  // cos 1, weighted 0.5
  EXPECT_FALSE(a.at("output").contains("reason"));
  job.order_field = "INVOICE";
  job.out = root / "model2";
  try {
    run_training(job, log);
    FAIL();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("`order_field` INVOICE"), std::string::npos) << what;
    EXPECT_NE(what.find("(their fields: ORDER_ID)"), std::string::npos) << what;
  }
  fs::remove_all(root);
}

// ---- transitions (issue 21) ----------------------------------------------------------------

// Sequences, in time order (the log is not):
//   u0: i0 (t1), i1 (t2), i2 (t2, after i1 in the log)      i0 i1 i2
//   u1: i0 (t1), i2 (t2), i3 (t3, a purchase)               i0 i2 i3
//   u2: i1 (t1), i1 (t2), i0 (t3)                           i1 i0 (the repeat merged)
//   u3: i4 (t1)
struct Sequences {
  std::vector<uint32_t> user{1, 0, 0, 1, 2, 0, 1, 2, 2, 3};
  std::vector<uint32_t> item{2, 0, 1, 0, 1, 2, 3, 0, 1, 4};
  std::vector<int64_t> timestamp{2, 1, 2, 1, 1, 2, 3, 3, 2, 1};
  std::vector<uint32_t> type{0, 0, 0, 0, 0, 0, 1, 0, 0, 0};

  EventLog log() const { return view_purchase_log(4, 5, user, item, timestamp, type); }
};

RecipeOptions transition_options() {
  RecipeOptions o;
  o.transition_window = 2;
  o.transition_decay = 0.5;
  o.recent_items = 2;
  o.recent_decay = 0.5;
  return o;
}

TEST(Recipes, SequencesAreEachUsersEventsInTimeOrderWithRepeatsMerged) {
  const Sequences e;
  const ItemNeighbors seq = user_sequences(e.log(), transition_options());
  EXPECT_EQ(seq.offsets, (std::vector<uint64_t>{0, 3, 6, 8, 9}));
  EXPECT_EQ(seq.items, (std::vector<uint32_t>{0, 1, 2, 0, 2, 3, 1, 0, 4}));
  // Without the purchase, u1 is i0 i2.
  RecipeOptions o = transition_options();
  o.event_weights = {{"view", 1}};
  EXPECT_EQ(user_sequences(e.log(), o).items, (std::vector<uint32_t>{0, 1, 2, 0, 2, 1, 0, 4}));
}

TEST(Recipes, TransitionsAreSharesOfWhatFollowedWithinTheWindowDecayedByDistance) {
  const Sequences e;
  RecipeOptions o = transition_options();
  // Window 2, decay 0.5: after i0: i1 1 (u0), i2 0.5 (u0) + 1 (u1), i3 0.5 (u1): of 3 in all.
  // After i1: i2 1 (u0), i0 1 (u2). After i2: i3 1. Nothing follows i3 or i4.
  ItemNeighbors nb = transition_neighbors(e.log(), o);
  ASSERT_EQ(nb.offsets, (std::vector<uint64_t>{0, 3, 5, 6, 6, 6}));
  EXPECT_EQ(nb.items, (std::vector<uint32_t>{2, 1, 3, 0, 2, 3}));
  const std::vector<float> want{1.5f / 3, 1.0f / 3, 0.5f / 3, 0.5f, 0.5f, 1.0f};
  for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(nb.scores[k], want[k], 1e-6) << k;
  // Window 1: only the next event; i0 -> i1 and i2 alike, ties by index.
  o.transition_window = 1;
  nb = transition_neighbors(e.log(), o);
  EXPECT_EQ(nb.items, (std::vector<uint32_t>{1, 2, 0, 2, 3}));
  EXPECT_NEAR(nb.scores[0], 0.5f, 1e-6);
  // No decay: i0 -> i1 1, i2 2, i3 1.
  o.transition_window = 2;
  o.transition_decay = 1;
  nb = transition_neighbors(e.log(), o);
  EXPECT_NEAR(nb.scores[0], 0.5f, 1e-6);
  EXPECT_NEAR(nb.scores[2], 0.25f, 1e-6);
  // Event weights weigh the following event: the purchase counts 2, so i3 is 2 * 0.5 of 3.5 after i0.
  o.transition_decay = 0.5;
  o.event_weights = {{"view", 1}, {"purchase", 2}};
  nb = transition_neighbors(e.log(), o);
  EXPECT_EQ(nb.items[2], 3u);
  EXPECT_NEAR(nb.scores[2], 1.0f / 3.5f, 1e-6);
  // One kept per item.
  o.event_weights.clear();
  o.neighbors = 1;
  EXPECT_EQ(transition_neighbors(e.log(), o).items, (std::vector<uint32_t>{2, 0, 3}));
}

TEST(Recipes, TransitionsScoreFromTheUsersLatestItemsWeightedByRecency) {
  const Sequences e;
  const RecipeOptions o = transition_options();
  const ItemNeighbors latest = latest_items(e.log(), o);
  // Two latest distinct items each, newest first, weights 1 and 0.5.
  EXPECT_EQ(latest.offsets, (std::vector<uint64_t>{0, 2, 4, 6, 7}));
  EXPECT_EQ(latest.items, (std::vector<uint32_t>{2, 1, 3, 2, 0, 1, 4}));
  EXPECT_EQ(latest.scores, (std::vector<float>{1, 0.5f, 1, 0.5f, 1, 0.5f, 1}));
  const ItemNeighbors nb = transition_neighbors(e.log(), o);
  std::vector<float> s;
  // u2: i0 (1) then i1 (0.5): i2 = 0.5 + 0.5 * 0.5, i1 = 1/3, i3 = 1/6, i0 = 0.5 * 0.5; i4 unreached.
  transition_scores(nb, latest, 2, s);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_NEAR(s[0], 0.25f, 1e-6);
  EXPECT_NEAR(s[1], 1.0f / 3, 1e-6);
  EXPECT_NEAR(s[2], 0.75f, 1e-6);
  EXPECT_NEAR(s[3], 1.0f / 6, 1e-6);
  EXPECT_TRUE(std::isnan(s[4]));
  // u3's only item led nowhere.
  transition_scores(nb, latest, 3, s);
  for (float x : s) EXPECT_TRUE(std::isnan(x));
}

ModelData transitions_model() {
  const Sequences e;
  RecipeOptions o = transition_options();
  o.popularity_count = PopularityCount::kEvents;
  ModelData m;
  m.kind = ModelType::kTransitions;
  m.user_ids = {"u0", "u1", "u2", "u3"};
  m.item_ids = {"i0", "i1", "i2", "i3", "i4"};
  m.seen.offsets = {0, 3, 6, 8, 9};
  m.seen.items = {0, 1, 2, 0, 2, 3, 0, 1, 4};
  m.recipe.kind = "transitions";
  m.recipe.popularity = popularity_scores(e.log(), o);  // 3, 3, 2, 1, 1
  m.recipe.neighbors = transition_neighbors(e.log(), o);
  m.recipe.latest = latest_items(e.log(), o);
  return m;
}

TEST(Recipes, TransitionsModelAnswersWhatComesNext) {
  const Recommender r = make(transitions_model());
  // u2's latest items lead to i2 (0.75) and i3 (1/6); i0 and i1 were seen.
  EXPECT_EQ(items_of(r, R"({"userId": "u2", "numResults": 2})"), (std::vector<std::string>{"i2", "i3"}));
  const nlohmann::json a = nlohmann::json::parse(r.answer(R"({"userId": "u2", "numResults": 3})"));
  EXPECT_EQ(a.at("output").at("recommendedItems"), nlohmann::json::parse(R"(["i2", "i3", "i4"])"));
  EXPECT_NEAR(a.at("output").at("scores")[0].get<double>(), 0.75, 1e-6);
  EXPECT_EQ(a.at("output").at("scores")[2].get<double>(), 0.0);  // popular fill, with a reason
  EXPECT_TRUE(a.at("output").contains("reason"));
  // Ranking: u0's latest items lead to i3 (1), i0 and i2 (0.25 each); the rest score 0 and go
  // by popularity (i1 3 before i4 1); unknown ids last.
  const nlohmann::json ranked =
      nlohmann::json::parse(r.answer(R"({"userId": "u0", "itemList": ["i4", "i1", "i3", "nope", "i2"]})"));
  EXPECT_EQ(ranked.at("output").at("recommendedItems"), nlohmann::json::parse(R"(["i3", "i2", "i1", "i4", "nope"])"));
  EXPECT_TRUE(ranked.at("output").at("scores")[4].is_null());
  // Related items: what followed i0; nothing followed i3, so popular items fill with score 0.
  EXPECT_EQ(items_of(r, R"({"itemId": "i0", "numResults": 3})"), (std::vector<std::string>{"i2", "i1", "i3"}));
  const nlohmann::json none = nlohmann::json::parse(r.answer(R"({"itemId": "i3", "numResults": 2})"));
  EXPECT_EQ(none.at("output").at("recommendedItems"), nlohmann::json::parse(R"(["i0", "i1"])"));
  EXPECT_TRUE(none.at("output").contains("reason"));
  // Unknown users get the popular items.
  EXPECT_EQ(items_of(r, R"({"userId": "nobody", "numResults": 2})"), (std::vector<std::string>{"i0", "i1"}));
}

// A line's "recentItems" go first in the history: a session of one recent item i0 is answered
// with what followed i0; a user's recent item is not recommended back.
TEST(Recipes, TransitionsAnswerFromTheRecentItemsOfALine) {
  const Recommender r = make(transitions_model());
  EXPECT_EQ(items_of(r, R"({"userId": "session", "recentItems": ["i0"], "numResults": 3})"),
            items_of(r, R"({"itemId": "i0", "numResults": 3})"));
  // u2's latest items lead to i2 first; had u2 just taken i2, the rest of the list moves up.
  EXPECT_EQ(items_of(r, R"({"userId": "u2", "recentItems": ["i2"], "numResults": 1})"), (std::vector<std::string>{"i3"}));
  const nlohmann::json bad = nlohmann::json::parse(r.answer(R"({"userId": "u2", "recentItems": "i2"})"));
  EXPECT_NE(bad.at("error").get<std::string>().find("recentItems"), std::string::npos);
}

// Trained by the training job from an imported dataset, written to the model directory, loaded
// back and answered; delete-users drops the deleted user's latest items with the user.
TEST(Recipes, TransitionsModelDirectoryRoundTrip) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("tastebud-transitions-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  {
    std::ofstream csv(root / "interactions.csv");
    csv << "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\n";
    // In sequence order, so that ids get indices in their own order and the dataset breaks u0's
    // tie (i1, i2) as the log does: by item index.
    const Sequences e;
    std::vector<size_t> rows(e.user.size());
    for (size_t k = 0; k < rows.size(); ++k) rows[k] = k;
    std::stable_sort(rows.begin(), rows.end(), [&](size_t a, size_t b) {
      return e.user[a] != e.user[b] ? e.user[a] < e.user[b] : e.timestamp[a] < e.timestamp[b];
    });
    for (size_t k : rows)
      csv << "u" << e.user[k] << ",i" << e.item[k] << "," << 1600000000 + e.timestamp[k] << ","
          << (e.type[k] ? "purchase" : "view") << "\n";
  }
  datasets::ImportOptions import;
  import.interactions = root / "interactions.csv";
  import.out = root / "dataset";
  datasets::import_dataset(import);
  TrainJob job;
  job.data = root / "dataset";
  job.out = root / "model";
  job.model = "transitions";
  job.transition_window = 2;
  job.transition_decay = 0.5;
  job.recent_items = 2;
  job.recent_decay = 0.5;
  job.threads = 1;
  job.progress = false;
  std::ostringstream log;
  const TrainResult result = run_training(job, log);
  ASSERT_EQ(result.history.size(), 1u) << log.str();
  EXPECT_TRUE(result.history[0].metrics.contains("hr@10"));
  EXPECT_TRUE(result.history[0].metrics.contains("val.hr@10"));
  EXPECT_NE(log.str().find("item-to-next-item pairs kept: 6"), std::string::npos) << log.str();
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(root / "model" / "config.json"));
  EXPECT_EQ(config.at("recipe").at("transition_window"), 2);

  ModelData loaded = load_model_dir(root / "model");
  const ModelData built = transitions_model();
  EXPECT_EQ(loaded.kind, ModelType::kTransitions);
  // The dataset's indices are the ids' first appearance; compare by id.
  auto lists_by_id = [](const ModelData& m, const ItemNeighbors& lists, const std::vector<std::string>& owners,
                        const std::string& owner) {
    std::vector<std::pair<std::string, float>> out;
    const size_t o = std::find(owners.begin(), owners.end(), owner) - owners.begin();
    for (uint64_t k = lists.offsets[o]; k < lists.offsets[o + 1]; ++k) out.emplace_back(m.item_ids[lists.items[k]], lists.scores[k]);
    return out;
  };
  for (const std::string& item : built.item_ids) {
    EXPECT_EQ(lists_by_id(loaded, loaded.recipe.neighbors, loaded.item_ids, item),
              lists_by_id(built, built.recipe.neighbors, built.item_ids, item)) << item;
  }
  for (const std::string& user : built.user_ids) {
    EXPECT_EQ(lists_by_id(loaded, loaded.recipe.latest, loaded.user_ids, user),
              lists_by_id(built, built.recipe.latest, built.user_ids, user)) << user;
  }
  {
    const Recommender r = make(std::move(loaded));
    EXPECT_EQ(items_of(r, R"({"userId": "u2", "numResults": 2})"), (std::vector<std::string>{"i2", "i3"}));
  }
  scrub_users_from_model(root / "model", {"u1"});
  const ModelData scrubbed = load_model_dir(root / "model");
  ASSERT_EQ(scrubbed.user_ids.size(), 3u);
  EXPECT_EQ(scrubbed.recipe.latest.offsets.size(), 4u);
  const Recommender r = make(scrubbed);
  EXPECT_EQ(items_of(r, R"({"userId": "u2", "numResults": 2})"), (std::vector<std::string>{"i2", "i3"}));
  fs::remove_all(root);
}

TEST(Recipes, RecipeFileRoundTripWithLatestItems) {
  RecipeData d;
  d.kind = "transitions";
  d.popularity = {3, 1, 2};
  d.neighbors.offsets = {0, 1, 1, 2};
  d.neighbors.items = {2, 0};
  d.neighbors.scores = {1.0f, 1.0f};
  d.latest.offsets = {0, 2, 2};
  d.latest.items = {1, 0};
  d.latest.scores = {1.0f, 0.5f};
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("tastebud-recipe-latest-" + std::to_string(::getpid()) + ".bin");
  write_recipe(d, path);
  const RecipeData back = read_recipe(path, 3);
  EXPECT_EQ(back.latest.offsets, d.latest.offsets);
  EXPECT_EQ(back.latest.items, d.latest.items);
  EXPECT_EQ(back.latest.scores, d.latest.scores);
  d.latest.items = {1, 3};  // an item out of range
  write_recipe(d, path);
  EXPECT_THROW(read_recipe(path, 3), Error);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tastebud::host
