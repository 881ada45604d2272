// The service's domain recommenders (host/use_cases.h, issue 24), on a shop built by hand so that
// each use case has one answer a person can check: who bought what in which order, who viewed what.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/catalog_view.h"
#include "host/inference.h"
#include "host/model_data.h"
#include "host/scrub_model.h"
#include "host/use_cases.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/import.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kT0 = 1700000000;
constexpr int64_t kDay = 86400;
constexpr int kUsers = 40;

// The hand-made shop; the newest event is on day 100 (event types spelled as an export might:
// "View" and "PURCHASE", matched to the service's roles ignoring case).
//  - Filler: each user views 30 and buys 30 of items f0..f99 (one order each), days 40..99, so
//    every role has well over the service's 1,000 events.
//  - Orders: users 0..19 buy a and b in one order (day 95); users 20..29 buy a (day 95) and c
//    (day 50) in two orders. By order, b goes with a; c never shares an order with it.
//  - Best sellers: d is bought 200 times by user 0 alone; old is bought by all 40 users on day 10,
//    outside the latest 30 days; a is bought by 30 users on day 95.
//  - Views: users 0..24 view v1 (day 90) and v2 (day 91); user 0 buys v2 (day 92).
//  - Trending: users 30..39 view hot on day 99, in the latest week; nobody before.
//  - Metadata (the second dataset's items.csv): m1, viewed by users 26..29 on day 80, and n1,
//    which nobody touched, are both Noir|Heist; every other item is Filler.
std::string shop_csv() {
  std::ostringstream csv;
  csv << "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,ORDER_ID\n";
  auto row = [&](int u, const std::string& item, int64_t t, const char* type, const std::string& order) {
    csv << fmt::format("u{},{},{},{},{}\n", u, item, t, type, order);
  };
  for (int u = 0; u < kUsers; ++u) {
    for (int k = 0; k < 30; ++k) {
      const int64_t t = kT0 + (40 + (u + 2 * k) % 59) * kDay + k;
      row(u, fmt::format("f{}", (u * 7 + k) % 100), t, "View", "");
      row(u, fmt::format("f{}", (u * 11 + 3 * k) % 100), t + 60, "PURCHASE", fmt::format("o{}_{}", u, k));
    }
    row(u, "old", kT0 + 10 * kDay, "PURCHASE", fmt::format("old{}", u));
    if (u < 20) {
      row(u, "a", kT0 + 95 * kDay, "PURCHASE", fmt::format("x{}", u));
      row(u, "b", kT0 + 95 * kDay, "PURCHASE", fmt::format("x{}", u));
    } else if (u < 30) {
      row(u, "a", kT0 + 95 * kDay, "PURCHASE", fmt::format("y{}", u));
      row(u, "c", kT0 + 50 * kDay, "PURCHASE", fmt::format("z{}", u));
    }
    if (u < 25) {
      row(u, "v1", kT0 + 90 * kDay, "View", "");
      row(u, "v2", kT0 + 91 * kDay, "View", "");
    }
  }
  for (int u = 30; u < kUsers; ++u) row(u, "hot", kT0 + 99 * kDay, "View", "");
  for (int u = 26; u < 30; ++u) row(u, "m1", kT0 + 80 * kDay, "View", "");
  for (int k = 0; k < 200; ++k) row(0, "d", kT0 + 60 * kDay + k * 60, "PURCHASE", fmt::format("d{}", k));
  row(0, "v2", kT0 + 92 * kDay, "PURCHASE", "p0");
  row(1, "f0", kT0 + 100 * kDay, "View", "");
  return csv.str();
}

std::string items_csv() {
  std::string csv = "ITEM_ID,GENRES\nm1,Noir|Heist\nn1,Noir|Heist\n";
  for (const char* item : {"a", "b", "c", "d", "old", "v1", "v2", "hot"}) csv += fmt::format("{},Filler\n", item);
  for (int k = 0; k < 100; ++k) csv += fmt::format("f{},Filler|Extra{}\n", k, k % 7);
  return csv;
}

class UseCases : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / fmt::format("tastebud_test_use_cases_{}", getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
    std::ofstream(root_ / "interactions.csv") << shop_csv();
    datasets::ImportOptions o;
    o.interactions = root_ / "interactions.csv";
    o.out = root_ / "dataset";
    datasets::import_dataset(o);
    std::ofstream(root_ / "items.csv") << items_csv();
    o.items = root_ / "items.csv";
    o.out = root_ / "dataset-items";
    datasets::import_dataset(o);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static fs::path data() { return root_ / "dataset"; }

  // Trains the use case into root/<name> (options the test names set as given by the user).
  static fs::path train(const std::string& name, std::function<void(TrainJob&)> edit = {},
                        const std::vector<std::string>& given_options = {}) {
    TrainJob job;
    job.data = data();
    job.out = root_ / name;
    job.use_case = name;
    job.threads = 1;
    job.progress = false;
    job.epochs = 3;
    if (edit) edit(job);
    std::ostringstream log;
    train_use_case(job, [&](const std::string& o) {
      return std::find(given_options.begin(), given_options.end(), o) != given_options.end();
    }, log);
    return job.out;
  }

  static json ask(const fs::path& model_dir, const std::string& line) {
    ModelData model = load_model_dir(model_dir);
    InferenceContext context = load_context(model, data());
    InferenceOptions options;
    options.num_results = 5;
    options.threads = 1;
    Recommender r(std::move(model), std::move(context), options);
    return json::parse(r.answer(line));
  }

  static std::vector<std::string> items_of(const json& answer) {
    EXPECT_TRUE(answer["error"].is_null()) << answer.dump();
    return answer["output"]["recommendedItems"].get<std::vector<std::string>>();
  }

  // The first n items, sorted (items that tie on score).
  static std::vector<std::string> sorted_head(const std::vector<std::string>& items, size_t n) {
    std::vector<std::string> head(items.begin(), items.begin() + static_cast<int64_t>(std::min(n, items.size())));
    std::sort(head.begin(), head.end());
    return head;
  }

  // Whether the model leaves `item` out of `user`'s answers (excluded.bin).
  static bool left_out(const fs::path& dir, const std::string& user, const std::string& item) {
    const ModelData m = load_model_dir(dir);
    EXPECT_TRUE(m.excluded);
    const auto u = std::find(m.user_ids.begin(), m.user_ids.end(), user) - m.user_ids.begin();
    const auto i = static_cast<uint32_t>(std::find(m.item_ids.begin(), m.item_ids.end(), item) - m.item_ids.begin());
    const SeenItems& e = *m.excluded;
    return std::binary_search(e.items.begin() + static_cast<int64_t>(e.offsets[u]),
                              e.items.begin() + static_cast<int64_t>(e.offsets[u + 1]), i);
  }

  static bool holds(const std::vector<std::string>& items, const std::string& item) {
    return std::find(items.begin(), items.end(), item) != items.end();
  }

  static inline fs::path root_;
};

TEST_F(UseCases, EventRolesMatchTheServiceNamesIgnoringCaseOrAsMapped) {
  const datasets::Dataset dataset = datasets::Dataset::open(data());
  const EventRoles plain(dataset, {});
  const EventRole purchase[] = {EventRole::kPurchase}, view[] = {EventRole::kView}, watch[] = {EventRole::kWatch};
  EXPECT_EQ(plain.types(purchase), std::vector<std::string>{"PURCHASE"});
  EXPECT_EQ(plain.types(view), std::vector<std::string>{"View"});
  EXPECT_TRUE(plain.types(watch).empty());
  const EventRoles mapped(dataset, {"watch=view", "purchase=View,purchase"});
  EXPECT_EQ(mapped.types(watch), std::vector<std::string>{"View"});
  EXPECT_EQ(mapped.types(purchase), (std::vector<std::string>{"View", "PURCHASE"}));
  EXPECT_THROW(EventRoles(dataset, {"rent=View"}), Error);
  EXPECT_THROW(EventRoles(dataset, {"purchase=transaction"}), Error);
  EXPECT_THROW(EventRoles(dataset, {"purchase"}), Error);
}

TEST_F(UseCases, TheServiceDataNeedsDecideWhatTrains) {
  const datasets::Dataset dataset = datasets::Dataset::open(data());
  const EventRoles roles(dataset, {});
  EXPECT_FALSE(unsupported_because(find_use_case("best-sellers"), dataset, roles));
  EXPECT_FALSE(unsupported_because(find_use_case("customers-who-viewed-x-also-viewed"), dataset, roles));
  const std::optional<std::string> watch = unsupported_because(find_use_case("most-popular"), dataset, roles);
  ASSERT_TRUE(watch);
  EXPECT_NE(watch->find("Watch events"), std::string::npos) << *watch;
  const EventRoles as_watch(dataset, {"watch=View"});
  EXPECT_FALSE(unsupported_because(find_use_case("most-popular"), dataset, as_watch));
  const std::optional<std::string> metadata = unsupported_because(find_use_case("more-like-x"), dataset, as_watch);
  ASSERT_TRUE(metadata);
  EXPECT_NE(metadata->find("item metadata"), std::string::npos) << *metadata;
  EXPECT_THROW(find_use_case("best-seller"), Error);
}

TEST_F(UseCases, BestSellersCountDistinctUsersInTheLatest30DaysAndLeaveOutPurchases) {
  const fs::path dir = train("best-sellers");
  const json config = json::parse(std::ifstream(dir / "config.json"));
  EXPECT_EQ(config["use_case"], "best-sellers");
  EXPECT_EQ(config["model"], "popularity");
  // user 35 bought none of a, d, old: a (30 users lately) first; d (1 user, 200 purchases) and
  // old (40 users, 90 days ago) behind the filler items.
  const std::vector<std::string> top = items_of(ask(dir, R"({"userId": "u35"})"));
  ASSERT_FALSE(top.empty());
  EXPECT_EQ(top[0], "a");
  EXPECT_FALSE(holds(top, "d"));
  EXPECT_FALSE(holds(top, "old"));
  // user 3 bought a: left out; user 3 only viewed v1 and v2, which purchases do not rank here.
  EXPECT_FALSE(holds(items_of(ask(dir, R"({"userId": "u3"})")), "a"));
  // Best sellers answer userId queries (the service requires one).
  EXPECT_FALSE(ask(dir, R"({"itemId": "a"})")["error"].is_null());
}

// The service's automatic exclusions read each user's latest 100 events of a type. User 0's
// purchases, newest first: about 22 after day 60 (fillers, a, b, v2), then d's 200 on day 60, so
// the latest 100 end among d's and the purchase of old on day 10 is not among them; user 1 bought
// 33 things, all of them counted.
TEST_F(UseCases, ExclusionsReadEachTypesLatest100EventsAsTheService) {
  const fs::path dir = train("best-sellers", [](TrainJob& job) { job.out = root_ / "latest-100"; });
  EXPECT_TRUE(left_out(dir, "u0", "a"));
  EXPECT_TRUE(left_out(dir, "u0", "d"));
  EXPECT_FALSE(left_out(dir, "u0", "old"));
  EXPECT_TRUE(left_out(dir, "u1", "old"));
  const fs::path all = train("best-sellers", [](TrainJob& job) {
    job.out = root_ / "latest-all";
    job.exclude_latest = 0;
  }, {"exclude_latest"});
  EXPECT_TRUE(left_out(all, "u0", "old"));
}

TEST_F(UseCases, FrequentlyBoughtTogetherGoesByOrder) {
  const fs::path dir = train("frequently-bought-together");
  const std::vector<std::string> with_a = items_of(ask(dir, R"({"itemId": "a"})"));
  ASSERT_FALSE(with_a.empty());
  EXPECT_EQ(with_a[0], "b");
  // c was bought by the same users as a, never in the same order: no pair by order.
  const json answer = ask(dir, R"({"itemId": "a"})");
  const auto& scores = answer["output"]["scores"];
  for (size_t k = 0; k < with_a.size(); ++k)
    if (with_a[k] == "c") {
      EXPECT_EQ(scores[k].get<double>(), 0.0) << "c is only a popular filler here";
    }
  EXPECT_FALSE(ask(dir, R"({"userId": "u1"})")["error"].is_null());
}

TEST_F(UseCases, CustomersWhoViewedLeaveOutOnlyTheUsersPurchases) {
  const fs::path dir = train("customers-who-viewed-x-also-viewed");
  // Viewers of v1 viewed v2. User 1 viewed both and bought neither: v2 is its first answer.
  EXPECT_EQ(items_of(ask(dir, R"({"userId": "u1", "itemId": "v1"})")).at(0), "v2");
  // User 0 bought v2: left out.
  EXPECT_FALSE(holds(items_of(ask(dir, R"({"userId": "u0", "itemId": "v1"})")), "v2"));
  // The service asks for both ids.
  EXPECT_FALSE(ask(dir, R"({"itemId": "v1"})")["error"].is_null());
  EXPECT_FALSE(ask(dir, R"({"userId": "u1"})")["error"].is_null());
  // excluded.bin holds user 0's purchases, not its views.
  const ModelData model = load_model_dir(dir);
  ASSERT_TRUE(model.excluded);
  const auto u0 = std::find(model.user_ids.begin(), model.user_ids.end(), "u0") - model.user_ids.begin();
  const auto index = [&](const std::string& id) {
    return static_cast<uint32_t>(std::find(model.item_ids.begin(), model.item_ids.end(), id) - model.item_ids.begin());
  };
  const SeenItems& out = *model.excluded;
  const std::vector<uint32_t> left_out(out.items.begin() + static_cast<int64_t>(out.offsets[u0]),
                                       out.items.begin() + static_cast<int64_t>(out.offsets[u0 + 1]));
  EXPECT_TRUE(std::binary_search(left_out.begin(), left_out.end(), index("v2")));
  EXPECT_TRUE(std::binary_search(left_out.begin(), left_out.end(), index("d")));
  EXPECT_FALSE(std::binary_search(left_out.begin(), left_out.end(), index("v1")));
  // delete-users scrubs excluded.bin with the rest: u0 leaves it, u1's list stays as it was.
  const auto lists_of = [](const ModelData& m, const std::string& user) {
    const auto u = std::find(m.user_ids.begin(), m.user_ids.end(), user) - m.user_ids.begin();
    const SeenItems& e = *m.excluded;
    return std::vector<uint32_t>(e.items.begin() + static_cast<int64_t>(e.offsets[u]),
                                 e.items.begin() + static_cast<int64_t>(e.offsets[u + 1]));
  };
  const std::vector<uint32_t> u1_before = lists_of(model, "u1");
  scrub_users_from_model(dir, {"u0"});
  const ModelData scrubbed = load_model_dir(dir);
  ASSERT_TRUE(scrubbed.excluded);
  EXPECT_EQ(scrubbed.excluded->offsets.size(), scrubbed.user_ids.size() + 1);
  EXPECT_EQ(std::count(scrubbed.user_ids.begin(), scrubbed.user_ids.end(), "u0"), 0);
  EXPECT_EQ(lists_of(scrubbed, "u1"), u1_before);
}

TEST_F(UseCases, RecommendedForYouKeepsTheBestCandidateAndExplores) {
  const fs::path dir = train("recommended-for-you", [](TrainJob& job) { job.candidates = {"popularity", "transitions"}; });
  const json config = json::parse(std::ifstream(dir / "config.json"));
  ASSERT_EQ(config["candidates"].size(), 2u);
  const double popularity = config["candidates"][0]["metric"], transitions = config["candidates"][1]["metric"];
  EXPECT_EQ(config["model"], popularity >= transitions ? "popularity" : "transitions");
  // Purchases are left out, views are not; answers carry reasons (the default exploration).
  const json answer = ask(dir, R"({"userId": "u0"})");
  EXPECT_TRUE(answer["output"].contains("reasons")) << answer.dump();
  EXPECT_FALSE(holds(items_of(answer), "a"));
  // --model names the one model to train.
  const fs::path one = train("recommended-for-you", [](TrainJob& job) { job.model = "popularity"; }, {"model"});
  EXPECT_EQ(json::parse(std::ifstream(one / "config.json"))["model"], "popularity");
}

// Video on demand on the same shop, its views mapped to the Watch role.
TEST_F(UseCases, VideoOnDemandUseCasesAnswerFromTheWatchRole) {
  const auto watch = [](TrainJob& job) { job.event_map = {"watch=View"}; };
  // because-you-watched-x: those who watched v1 watched v2; a user's watched titles are left out.
  const fs::path because = train("because-you-watched-x", watch);
  EXPECT_EQ(items_of(ask(because, R"({"itemId": "v1"})")).at(0), "v2");
  EXPECT_FALSE(holds(items_of(ask(because, R"({"userId": "u1", "itemId": "v1"})")), "v2"));
  EXPECT_FALSE(ask(because, R"({"userId": "u1"})")["error"].is_null());
  // most-popular: the most distinct watchers of all time, v1 and v2 (25 each), for a user who
  // watched neither; left out for one who did.
  const fs::path popular = train("most-popular", watch);
  std::vector<std::string> top = items_of(ask(popular, R"({"userId": "u30"})"));
  ASSERT_GE(top.size(), 2u);
  EXPECT_EQ(sorted_head(top, 2), (std::vector<std::string>{"v1", "v2"}));
  top = items_of(ask(popular, R"({"userId": "u3"})"));
  EXPECT_FALSE(holds(top, "v1") || holds(top, "v2"));
  // trending-now: hot, ten watchers in the latest week and none before, tops the list of a user
  // who has not watched it.
  const fs::path trending = train("trending-now", watch);
  EXPECT_EQ(items_of(ask(trending, R"({"userId": "u1"})")).at(0), "hot");
  EXPECT_FALSE(holds(items_of(ask(trending, R"({"userId": "u31"})")), "hot"));
}

TEST_F(UseCases, MoreLikeXGivesAnUnwatchedTitleNeighboursByMetadata) {
  TrainJob job;
  job.data = root_ / "dataset-items";
  job.out = root_ / "more-like-x";
  job.use_case = "more-like-x";
  job.event_map = {"watch=View"};
  job.threads = 1;
  job.progress = false;
  std::ostringstream log;
  train_use_case(job, [](const std::string&) { return false; }, log);
  // n1 has no watcher: its one neighbour is m1, the other Noir|Heist title.
  ModelData model = load_model_dir(job.out);
  InferenceContext context = load_context(model, job.data);
  InferenceOptions options;
  options.num_results = 3;
  const Recommender r(std::move(model), std::move(context), options);
  const json answer = json::parse(r.answer(R"({"itemId": "n1"})"));
  const std::vector<std::string> like = items_of(answer);
  ASSERT_FALSE(like.empty()) << answer.dump();
  EXPECT_EQ(like[0], "m1");
  EXPECT_GT(answer["output"]["scores"][0].get<double>(), 0.0);
}

TEST_F(UseCases, MostViewedCountsDistinctViewersLately) {
  // hot: ten viewers on day 99; v1, v2: 25 on days 90-91, also within 30 days: they lead.
  const fs::path dir = train("most-viewed");
  const std::vector<std::string> top = items_of(ask(dir, R"({"userId": "u35"})"));
  ASSERT_GE(top.size(), 3u);
  EXPECT_EQ(sorted_head(top, 2), (std::vector<std::string>{"v1", "v2"}));  // 25 each, a tie
  EXPECT_EQ(top[2], "hot");
  // u0 bought v2: left out; its views are not.
  const std::vector<std::string> u0 = items_of(ask(dir, R"({"userId": "u0"})"));
  EXPECT_FALSE(holds(u0, "v2"));
  EXPECT_TRUE(holds(u0, "v1"));
}

TEST_F(UseCases, FixedSettingsAndBadNamesAreRefused) {
  EXPECT_THROW(train("best-sellers", [](TrainJob& job) { job.model = "sims"; }, {"model"}), Error);
  EXPECT_THROW(train("best-sellers", [](TrainJob& job) { job.events = {"View"}; }, {"event"}), Error);
  EXPECT_THROW(train("most-viewed-items"), Error);
  // No Watch events: the use case says so and writes nothing.
  EXPECT_THROW(train("most-popular", [](TrainJob& job) { job.out = root_ / "no-watch-events"; }), Error);
  EXPECT_FALSE(fs::exists(root_ / "no-watch-events"));
}

TEST_F(UseCases, RecommendersTrainWhatTheDataSupportsAndSkipTheRest) {
  RecommendersJob job;
  job.data = data();
  job.out = root_ / "vod";
  job.domain = "video-on-demand";
  job.event_map = {"watch=View"};
  job.threads = 1;
  job.progress = false;
  job.candidates = {"popularity"};
  std::ostringstream log;
  train_recommenders(job, log);
  const json listing = json::parse(std::ifstream(job.out / "recommenders.json"));
  std::map<std::string, std::string> status;
  for (const json& u : listing["use_cases"]) status[u["use_case"]] = u["status"];
  EXPECT_EQ(status["top-picks-for-you"], "trained");
  EXPECT_EQ(status["because-you-watched-x"], "trained");
  EXPECT_EQ(status["most-popular"], "trained");
  EXPECT_EQ(status["trending-now"], "trained");
  EXPECT_EQ(status["more-like-x"], "skipped");  // no item metadata
  EXPECT_NE(log.str().find("skipped more-like-x"), std::string::npos) << log.str();
  EXPECT_TRUE(fs::exists(job.out / "most-popular" / "recipe.bin"));
  EXPECT_FALSE(fs::exists(job.out / "more-like-x"));
  EXPECT_THROW(parse_domain("retail"), Error);
}

}  // namespace
}  // namespace tastebud::host
