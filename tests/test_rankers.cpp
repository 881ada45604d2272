// One contract for everything that answers (host/ranker.h), checked against every model type the
// way implicit's recommender_base_test mixin checks every model: each type is trained for real on
// one small shop, loaded from its directory, and asked the same questions. A new model type joins
// by adding its name to kEveryModel.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/inference.h"
#include "host/model_type.h"
#include "host/ranker.h"
#include "host/training.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/sources.h"
#include "small_shop.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kEveryModel[] = {"neumf", "gmf", "mlp", "mf", "popularity", "trending", "sims", "transitions", "sasrec"};

class EveryRanker : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / fmt::format("tastebud_test_rankers_{}", ::getpid());
    fs::remove_all(root_);
    testing_shop::import_small_shop(root_, 120, 4000, 11);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // The model of this type, trained once per type for the suite.
  static const ModelData& model(const std::string& type) {
    static std::map<std::string, ModelData> trained;
    if (!trained.contains(type)) {
      TrainJob job;
      job.data = root_ / "dataset";
      job.out = root_ / type;
      job.model = type;
      job.epochs = 1;
      job.factors = 8;
      job.layers = {16, 8};
      job.batch_size = 256;
      job.metadata = "none";
      job.threads = 1;
      job.progress = false;
      std::ostringstream log;
      run_training(job, log);
      trained.emplace(type, load_model_dir(job.out));
    }
    return trained.at(type);
  }

  static Recommender recommender(const std::string& type) {
    return Recommender(model(type), InferenceContext{}, InferenceOptions{});
  }

  static json ask(const Recommender& r, const std::string& line) {
    const json answer = json::parse(r.answer(line));
    EXPECT_TRUE(answer.at("error").is_null()) << line << " -> " << answer.dump();
    return answer.at("output");
  }

  static fs::path root_;
};
fs::path EveryRanker::root_;

std::vector<std::string> strings(const json& j) { return j.get<std::vector<std::string>>(); }

TEST_P(EveryRanker, TheModelDirectoryLoadsAsItsOwnType) {
  const ModelData& m = model(GetParam());
  EXPECT_EQ(to_string(m.kind), GetParam());
  EXPECT_EQ(parse_model_type(GetParam()), m.kind);
  EXPECT_EQ(m.params.has_value(), neural_kind(m.kind).has_value());
  EXPECT_EQ(m.sequence.has_value(), m.kind == ModelType::kSASRec);
}

TEST_P(EveryRanker, AKnownUsersTopKIsDistinctUnseenAndBestFirst) {
  const ModelData& m = model(GetParam());
  const Recommender r = recommender(GetParam());
  for (uint32_t u = 0; u < 10; ++u) {
    const json out = ask(r, fmt::format(R"({{"userId": "{}", "numResults": 7}})", m.user_ids[u]));
    const std::vector<std::string> items = strings(out.at("recommendedItems"));
    const std::vector<float> scores = out.at("scores").get<std::vector<float>>();
    ASSERT_EQ(items.size(), 7u) << out.dump();
    EXPECT_EQ(std::set<std::string>(items.begin(), items.end()).size(), items.size());
    EXPECT_TRUE(std::is_sorted(scores.rbegin(), scores.rend())) << out.dump();
    for (uint64_t k = m.seen.offsets[u]; k < m.seen.offsets[u + 1]; ++k)
      EXPECT_EQ(std::count(items.begin(), items.end(), m.item_ids[m.seen.items[k]]), 0) << out.dump();
  }
}

TEST_P(EveryRanker, RankingAListKeepsItsItemsAndPutsUnknownIdsLast) {
  const ModelData& m = model(GetParam());
  const Recommender r = recommender(GetParam());
  const std::vector<std::string> list{m.item_ids[3], "never-seen", m.item_ids[0], m.item_ids[5], m.item_ids[9]};
  const json out = ask(r, json{{"userId", m.user_ids[1]}, {"itemList", list}}.dump());
  const std::vector<std::string> ranked = strings(out.at("recommendedItems"));
  EXPECT_EQ(std::multiset<std::string>(ranked.begin(), ranked.end()), std::multiset<std::string>(list.begin(), list.end()));
  EXPECT_EQ(ranked.back(), "never-seen");
  EXPECT_TRUE(out.at("scores").back().is_null());
  std::vector<float> scores;
  for (size_t k = 0; k + 1 < ranked.size(); ++k) scores.push_back(out.at("scores")[k].get<float>());
  EXPECT_TRUE(std::is_sorted(scores.rbegin(), scores.rend())) << out.dump();
}

// rank() is the user's scores as an answer shows them, for the listed items (0 where unrelated).
TEST_P(EveryRanker, RankAgreesWithTheUsersScoresOverTheCatalog) {
  const ModelData& m = model(GetParam());
  const std::unique_ptr<Ranker> ranker = make_ranker(m);
  const std::vector<uint32_t> items{0, 4, 7, 11, 2};
  for (uint32_t u = 0; u < 5; ++u) {
    std::vector<float> all, ranked(items.size());
    ranker->user_scores(u, {}, all);
    ASSERT_EQ(all.size(), m.item_ids.size());
    ranker->rank(u, items, {}, ranked);
    for (size_t k = 0; k < items.size(); ++k) {
      const float x = all[items[k]];
      EXPECT_NEAR(ranked[k], std::isnan(x) ? 0.0f : ranker->shown(x), 1e-5f) << "user " << u << " item " << items[k];
    }
  }
}

TEST_P(EveryRanker, RelatedItemsNeverHoldTheItemItself) {
  const ModelData& m = model(GetParam());
  const Recommender r = recommender(GetParam());
  for (uint32_t i = 0; i < 10; ++i) {
    const json out = ask(r, fmt::format(R"({{"itemId": "{}", "numResults": 5}})", m.item_ids[i]));
    const std::vector<std::string> items = strings(out.at("recommendedItems"));
    EXPECT_EQ(items.size(), 5u) << out.dump();
    EXPECT_EQ(std::count(items.begin(), items.end(), m.item_ids[i]), 0) << out.dump();
  }
}

TEST_P(EveryRanker, AnUnknownUserGetsThePopularItemsWithAReason) {
  const Recommender r = recommender(GetParam());
  const std::unique_ptr<Ranker> ranker = make_ranker(model(GetParam()));
  const json out = ask(r, R"({"userId": "nobody", "numResults": 5})");
  EXPECT_EQ(out.at("reason"), "unknown user: the most popular items");
  const std::vector<std::string> items = strings(out.at("recommendedItems"));
  ASSERT_EQ(items.size(), 5u);
  const ModelData& m = model(GetParam());
  for (size_t k = 0; k + 1 < items.size(); ++k) {
    const size_t a = std::find(m.item_ids.begin(), m.item_ids.end(), items[k]) - m.item_ids.begin();
    const size_t b = std::find(m.item_ids.begin(), m.item_ids.end(), items[k + 1]) - m.item_ids.begin();
    EXPECT_GE(ranker->popularity()[a], ranker->popularity()[b]);
    EXPECT_FLOAT_EQ(out.at("scores")[k].get<float>(), ranker->fallback_scores()[a]);
    EXPECT_GE(out.at("scores")[k].get<float>(), out.at("scores")[k + 1].get<float>()) << "shown best first";
  }
}

// "recentItems" (events since training): a session the model never saw gets an answer from them,
// not the popular list, and a known user's recent items count as seen.
TEST_P(EveryRanker, RecentItemsAnswerASessionAndCountAsSeen) {
  const ModelData& m = model(GetParam());
  const Recommender r = recommender(GetParam());
  const json session = ask(r, json{{"userId", "new-session"}, {"recentItems", {m.item_ids[0], m.item_ids[1], "unknown"}},
                                   {"numResults", 5}}.dump());
  const std::vector<std::string> items = strings(session.at("recommendedItems"));
  EXPECT_EQ(items.size(), 5u) << session.dump();
  EXPECT_EQ(std::count(items.begin(), items.end(), m.item_ids[0]) + std::count(items.begin(), items.end(), m.item_ids[1]), 0);
  EXPECT_EQ(session.at("reason"), "user unknown to the model: scored from the recent items");
  const std::string top = strings(ask(r, json{{"userId", m.user_ids[2]}, {"numResults", 3}}.dump()).at("recommendedItems"))[0];
  const json known = ask(r, json{{"userId", m.user_ids[2]}, {"recentItems", {top}}, {"numResults", 10}}.dump());
  const std::vector<std::string> after = strings(known.at("recommendedItems"));
  EXPECT_EQ(std::count(after.begin(), after.end(), top), 0) << known.dump();
  // Recent items the model does not know leave the unknown user unknown.
  EXPECT_EQ(ask(r, R"({"userId": "s2", "recentItems": ["zzz"]})").at("reason"), "unknown user: the most popular items");
}

// batch-segment answers exactly for the rankers that know a user's affinity, and never names a
// user who already has the item.
TEST_P(EveryRanker, SegmentsComeFromTheRankersThatKnowAffinity) {
  const ModelData& m = model(GetParam());
  const Recommender r = recommender(GetParam());
  const std::unique_ptr<Ranker> ranker = make_ranker(m);
  EXPECT_EQ(r.personalized(), ranker->answers_segments());
  if (!ranker->answers_segments()) {
    std::vector<float> affinity;
    EXPECT_THROW(ranker->user_affinity(std::vector<uint32_t>{0}, affinity), Error);
    return;
  }
  const json out = json::parse(r.segment(fmt::format(R"({{"itemId": "{}"}})", m.item_ids[0]), 10));
  ASSERT_TRUE(out.at("error").is_null()) << out.dump();
  const std::vector<std::string> users = strings(out.at("output").at("recommendedUsers"));
  EXPECT_EQ(users.size(), 10u);
  for (const std::string& id : users) {
    const size_t u = std::find(m.user_ids.begin(), m.user_ids.end(), id) - m.user_ids.begin();
    const auto seen = std::span(m.seen.items).subspan(m.seen.offsets[u], m.seen.offsets[u + 1] - m.seen.offsets[u]);
    EXPECT_FALSE(std::binary_search(seen.begin(), seen.end(), 0u)) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EveryRanker, ::testing::ValuesIn(kEveryModel),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

TEST(ModelType, EveryNameParsesToItselfAndAnUnknownOneNamesTheParameter) {
  for (const char* name : kEveryModel) EXPECT_EQ(to_string(parse_model_type(name)), name);
  try {
    parse_model_type("sasrec2");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("`model` 'sasrec2'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tastebud::host
