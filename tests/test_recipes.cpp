// Recipes (host/recipes.h) against answers computed by hand on eight events, and the recipe models
// answering batch queries.
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "host/inference.h"
#include "host/recipes.h"

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

  EventLog log() const {
    EventLog l;
    l.num_users = 3;
    l.num_items = 4;
    l.user = user;
    l.item = item;
    l.timestamp = timestamp;
    l.event_type = type;
    l.event_types = {"view", "purchase"};
    return l;
  }
};

TEST(Recipes, PopularityCountsWeightedByEventTypeAndRecency) {
  const Events e;
  RecipeOptions o;
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
  m.kind = "trending";
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
  ModelData m;
  m.kind = kind;
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

}  // namespace
}  // namespace tastebud::host
