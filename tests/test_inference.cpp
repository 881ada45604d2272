// Batch inference (host/inference.h) on tiny hand-built models whose scores are known: top-K,
// ranking with unknown ids last, related items, fallbacks, filters before top-K, every bad line,
// segments, the job's file handling.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <iterator>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <sstream>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "host/inference.h"
#include "host/export_onnx.h"
#include "host/job_config.h"
#include "host/slate.h"
#include "host/recipes.h"
#include "host/score_batcher.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/engine/gpu_scorer.h"
#include "tastebud/engine/scorer.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Tensor tensor(std::vector<uint64_t> shape, std::vector<float> values) { return Tensor{"", std::move(shape), std::move(values)}; }

float sig(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// GMF with one factor, head weight 1, bias 0: the logit of (u, i) is user[u] * item[i].
//   items   i0 0.5   i1 -1   i2 2   i3 0   i4 1.5
//   users   u0 1     u1 -1
ModelData gmf_model() {
  ModelData m;
  m.kind = ModelType::kGMF;
  m.user_ids = {"u0", "u1"};
  m.item_ids = {"i0", "i1", "i2", "i3", "i4"};
  ModelParams p;
  p.config.kind = ModelKind::kGMF;
  p.config.num_users = 2;
  p.config.num_items = 5;
  p.config.factors = 1;
  p.user_gmf = tensor({2, 1}, {1, -1});
  p.item_gmf = tensor({5, 1}, {0.5f, -1, 2, 0, 1.5f});
  p.head_weight = tensor({1}, {1});
  p.head_bias = tensor({1}, {0});
  m.params = p;
  // u0 has seen i2 and i4, u1 has seen i4: popularity i4 2, i2 1, the rest 0.
  m.seen.offsets = {0, 2, 3};
  m.seen.items = {2, 4, 4};
  return m;
}

Recommender make(ModelData m, InferenceOptions options = {}, ItemCatalog catalog = {}) {
  InferenceContext context;
  context.catalog = std::move(catalog);
  return Recommender(std::move(m), std::move(context), std::move(options));
}

json ask(const Recommender& r, const std::string& line) { return json::parse(r.answer(line)); }

std::vector<std::string> items_of(const json& answer) {
  return answer.at("output").at("recommendedItems").get<std::vector<std::string>>();
}

TEST(Inference, KnownTopKWithSeenItemsRemoved) {
  const Recommender r = make(gmf_model());
  // u0 ranks i2 > i4 > i0 > i3 > i1 and has seen i2 and i4.
  const json a = ask(r, R"({"userId": "u0", "numResults": 3})");
  EXPECT_TRUE(a.at("error").is_null());
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i0", "i3", "i1"}));
  const auto scores = a.at("output").at("scores").get<std::vector<float>>();
  EXPECT_FLOAT_EQ(scores[0], sig(0.5f));
  EXPECT_FLOAT_EQ(scores[1], sig(0.0f));
  EXPECT_FLOAT_EQ(scores[2], sig(-1.0f));
  EXPECT_EQ(a.at("input"), json::parse(R"({"userId": "u0", "numResults": 3})"));
  EXPECT_FALSE(a.at("output").contains("reason"));
  // u1 ranks the other way round; the default number of results is the job's.
  InferenceOptions two;
  two.num_results = 2;
  EXPECT_EQ(items_of(ask(make(gmf_model(), two), R"({"userId": "u1"})")), (std::vector<std::string>{"i1", "i3"}));
  InferenceOptions keep;
  keep.keep_seen = true;
  EXPECT_EQ(items_of(ask(make(gmf_model(), keep), R"({"userId": "u0", "numResults": 2})")),
            (std::vector<std::string>{"i2", "i4"}));
}

TEST(Inference, RankingPutsUnknownIdsLastWithoutAScore) {
  const Recommender r = make(gmf_model());
  const json a = ask(r, R"({"userId": "u1", "itemList": ["i2", "x9", "i1", "i0"]})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i1", "i0", "i2", "x9"}));
  const json& scores = a.at("output").at("scores");
  ASSERT_EQ(scores.size(), 4u);
  EXPECT_FLOAT_EQ(scores[0].get<float>(), sig(1.0f));
  EXPECT_FLOAT_EQ(scores[1].get<float>(), sig(-0.5f));
  EXPECT_FLOAT_EQ(scores[2].get<float>(), sig(-2.0f));
  EXPECT_TRUE(scores[3].is_null());
  // Seen items stay in a ranking: the caller asked about them.
  EXPECT_EQ(items_of(ask(r, R"({"userId": "u0", "itemList": ["i0", "i4", "i2"]})")),
            (std::vector<std::string>{"i2", "i4", "i0"}));
}

TEST(Inference, KnownRankingThroughAnMlp) {
  // MLP with layers {2, 1}: h = relu(user + item), logit = h. User 0 embeds to 0.
  ModelData m;
  m.kind = ModelType::kMLP;
  m.user_ids = {"u0"};
  m.item_ids = {"a", "b", "c"};
  ModelParams p;
  p.config.kind = ModelKind::kMLP;
  p.config.num_users = 1;
  p.config.num_items = 3;
  p.config.layers = {2, 1};
  p.user_mlp = tensor({1, 1}, {0});
  p.item_mlp = tensor({3, 1}, {3, -2, 1});
  p.weights = {tensor({2, 1}, {1, 1})};
  p.biases = {tensor({1}, {0})};
  p.head_weight = tensor({1}, {1});
  p.head_bias = tensor({1}, {0});
  m.params = p;
  const json a = ask(make(std::move(m)), R"({"userId": "u0", "itemList": ["b", "c", "a"]})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"a", "c", "b"}));
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[0].get<float>(), sig(3));
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[2].get<float>(), sig(0));  // relu(-2) = 0
}

TEST(Inference, RelatedItemsByCosineOfItemEmbeddings) {
  ModelData m = gmf_model();
  m.params->config.factors = 2;
  m.params->user_gmf = tensor({2, 2}, {1, 0, 0, 1});
  m.params->item_gmf = tensor({5, 2}, {1, 0, 0, 1, 1, 1, -1, 0, 0, 0});
  m.params->head_weight = tensor({2}, {1, 1});
  const json a = ask(make(std::move(m)), R"({"itemId": "i0", "numResults": 4})");
  // cos(i0, .) = i1 0, i2 0.707, i3 -1, i4 (zero vector) 0; ties by index.
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i2", "i1", "i4", "i3"}));
  EXPECT_NEAR(a.at("output").at("scores")[0].get<float>(), std::sqrt(0.5f), 1e-6);
}

ItemCatalog gmf_catalog();

// Recommenders of one model under other filters share it: the model is in memory once (serve and
// the Python package build one per filter).
TEST(Inference, RecommendersOfOneModelShareIt) {
  const auto model = std::make_shared<const ModelData>(gmf_model());
  InferenceOptions filtered;
  filtered.filter = "EXCLUDE ItemID WHERE Items.PRICE > 10";
  const Recommender plain(model, InferenceContext{}, InferenceOptions{});
  InferenceContext context;
  context.catalog = gmf_catalog();
  const Recommender cheap(model, context, filtered);
  EXPECT_EQ(&plain.model(), model.get());
  EXPECT_EQ(&cheap.model(), model.get());
  EXPECT_EQ(plain.shared_model(), cheap.shared_model());
  EXPECT_EQ(items_of(ask(cheap, R"({"userId": "u0", "numResults": 2, "filterValues": {}})")), (std::vector<std::string>{"i0", "i3"}));
}


// {"userId", "itemId"}: the service's "customers who viewed X also viewed": X's related items less
// what the user has seen, on the plain and the shaped path alike.
TEST(Inference, AUserAndAnItemTogetherAskForRelatedItemsTheUserHasNotSeen) {
  ModelData m = gmf_model();
  m.params->config.factors = 2;
  m.params->user_gmf = tensor({2, 2}, {1, 0, 0, 1});
  m.params->item_gmf = tensor({5, 2}, {1, 0, 0, 1, 1, 1, -1, 0, 0, 0});
  m.params->head_weight = tensor({2}, {1, 1});
  InferenceOptions shaped_options;
  shaped_options.job.metadata_columns = {"GENRE"};
  const Recommender plain = make(m), shaped = make(m, shaped_options, gmf_catalog());
  for (const Recommender* r : {&plain, &shaped}) {
    // Related to i0 alone: i2, i1, i4, i3. u0 has seen i2 and i4, u1 has seen i4.
    EXPECT_EQ(items_of(ask(*r, R"({"itemId": "i0", "numResults": 4})")), (std::vector<std::string>{"i2", "i1", "i4", "i3"}));
    EXPECT_EQ(items_of(ask(*r, R"({"userId": "u0", "itemId": "i0", "numResults": 4})")), (std::vector<std::string>{"i1", "i3"}));
    EXPECT_EQ(items_of(ask(*r, R"({"userId": "u1", "itemId": "i0", "numResults": 4})")),
              (std::vector<std::string>{"i2", "i1", "i3"}));
    // A user the model does not know changes nothing; an item it does not know: popular items the
    // user has not seen (popularity i4, i2, then the rest by index).
    EXPECT_EQ(items_of(ask(*r, R"({"userId": "stranger", "itemId": "i0", "numResults": 4})")),
              (std::vector<std::string>{"i2", "i1", "i4", "i3"}));
    const json unknown = ask(*r, R"({"userId": "u0", "itemId": "new", "numResults": 2})");
    EXPECT_EQ(items_of(unknown), (std::vector<std::string>{"i0", "i1"}));
    EXPECT_NE(unknown.at("output").at("reason").get<std::string>().find("unknown item"), std::string::npos);
  }
  // Filters see both: CurrentItem and CurrentUser.
  InferenceOptions filtered;
  filtered.filter = "EXCLUDE ItemID WHERE Items.GENRE IN CurrentItem.GENRE";
  const json f = ask(make(m, filtered, gmf_catalog()), R"({"userId": "u1", "itemId": "i0", "numResults": 4})");
  ASSERT_TRUE(f.at("error").is_null()) << f.dump();
  EXPECT_EQ(items_of(f), (std::vector<std::string>{"i1", "i3"}));  // no comedy like i0
}

TEST(Inference, UnknownUsersAndItemsGetPopularItemsWithAReason) {
  const Recommender r = make(gmf_model());
  Recommender::LineOutcome outcome;
  const json a = json::parse(r.answer(R"({"userId": "stranger", "numResults": 2})", &outcome));
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i4", "i2"}));
  // On the model's own scale, a probability: the share of its 2 training users who took the item.
  EXPECT_EQ(a.at("output").at("scores"), json::parse("[1.0, 0.5]"));
  EXPECT_NE(a.at("output").at("reason").get<std::string>().find("unknown user"), std::string::npos);
  EXPECT_TRUE(outcome.fallback);
  const json b = ask(r, R"({"itemId": "new-item", "numResults": 2})");
  EXPECT_EQ(items_of(b), (std::vector<std::string>{"i4", "i2"}));
  EXPECT_NE(b.at("output").at("reason").get<std::string>().find("unknown item"), std::string::npos);
  EXPECT_EQ(b.at("output").at("scores"), json::parse("[1.0, 0.5]"));
  const json c = ask(r, R"({"userId": "stranger", "itemList": ["i0", "i2"]})");
  EXPECT_EQ(items_of(c), (std::vector<std::string>{"i2", "i0"}));
  EXPECT_EQ(c.at("output").at("scores"), json::parse("[0.5, 0.0]"));
  EXPECT_TRUE(c.at("output").contains("reason"));
  // The shaped path (a job configuration) answers on the same scale.
  InferenceOptions shaped;
  shaped.job.metadata_columns = {"GENRE"};
  const json d = ask(make(gmf_model(), shaped, gmf_catalog()), R"({"userId": "stranger", "numResults": 2})");
  EXPECT_EQ(items_of(d), (std::vector<std::string>{"i4", "i2"}));
  EXPECT_EQ(d.at("output").at("scores"), json::parse("[1.0, 0.5]"));
}

TEST(Inference, ContextSentToAModelWithoutContextIsNamedInAWarning) {
  const Recommender r = make(gmf_model());
  const json plain = ask(r, R"({"userId": "u0", "numResults": 2})");
  const json with = ask(r, R"({"userId": "u0", "numResults": 2, "context": {"DEVICE_TYPE": "mobile"}})");
  EXPECT_FALSE(plain.at("output").contains("warning"));
  EXPECT_EQ(with.at("output").at("warning"), "context ignored: the model was trained without contextual fields");
  EXPECT_EQ(with.at("output").at("recommendedItems"), plain.at("output").at("recommendedItems"));
  // Rankings and related items too; an empty context carries nothing to ignore.
  EXPECT_TRUE(ask(r, R"({"userId": "u0", "itemList": ["i0"], "context": {"D": "x"}})").at("output").contains("warning"));
  EXPECT_TRUE(ask(r, R"({"itemId": "i0", "context": {"D": "x"}})").at("output").contains("warning"));
  EXPECT_FALSE(ask(r, R"({"userId": "u0", "context": {}})").at("output").contains("warning"));
}

ItemCatalog gmf_catalog() {
  ItemCatalog c;
  c.item_ids = {"i0", "i1", "i2", "i3", "i4"};
  c.numerical.push_back({"PRICE", {1, 2, 30, 4, 50}});
  ItemCategoricalColumn genre{"GENRE", {"Comedy", "Drama"}, {0, 1, 2, 3, 4, 5}, {0, 1, 0, 1, 0}};
  c.categorical.push_back(genre);
  return c;
}

TEST(Inference, FiltersApplyBeforeTopK) {
  InferenceOptions options;
  options.filter = "EXCLUDE ItemID WHERE Items.PRICE > 10";
  options.keep_seen = true;
  const Recommender r = make(gmf_model(), options, gmf_catalog());
  // Without the filter u0's top 2 would be i2, i4 (both over 10): the next best fill the list.
  EXPECT_EQ(items_of(ask(r, R"({"userId": "u0", "numResults": 2})")), (std::vector<std::string>{"i0", "i3"}));
  InferenceOptions with_param;
  with_param.filter = "INCLUDE ItemID WHERE Items.GENRE IN ($G)";
  const Recommender p = make(gmf_model(), with_param, gmf_catalog());
  EXPECT_EQ(items_of(ask(p, R"({"userId": "u1", "filterValues": {"G": "\"Drama\""}})")),
            (std::vector<std::string>{"i1", "i3"}));
  EXPECT_EQ(items_of(ask(p, R"({"userId": "stranger", "numResults": 1, "filterValues": {"G": "\"Drama\""}})")),
            (std::vector<std::string>{"i1"}));
  // Related to i0 (cosine 1 with i2 and i4, a tie broken by index) among the comedies.
  EXPECT_EQ(items_of(ask(p, R"({"itemId": "i0", "filterValues": {"G": "\"Comedy\""}})")),
            (std::vector<std::string>{"i2", "i4"}));
  // A malformed filter fails before any line is read.
  InferenceOptions bad;
  bad.filter = "INCLUDE ItemID WHERE Items.COLOUR IN (\"red\")";
  EXPECT_THROW(make(gmf_model(), bad, gmf_catalog()), FilterError);
}

TEST(Inference, EveryBadLineGetsAnErrorAndTheJobGoesOn) {
  InferenceOptions options;
  options.filter = "INCLUDE ItemID WHERE Items.GENRE IN ($G)";
  const Recommender r = make(gmf_model(), options, gmf_catalog());
  const std::vector<std::string> bad{
      "not json",
      "{\"userId\": \"u0\"",
      "[\"u0\"]",
      "42",
      "{}",
      R"({"userName": "u0"})",
      R"({"userId": 7})",
      R"({"userId": "u0", "itemId": "i0", "itemList": ["i1"]})",
      R"({"itemId": "i0", "itemList": ["i1"]})",
      R"({"userId": "u0", "itemList": "i1"})",
      R"({"userId": "u0", "itemList": ["i1", 2]})",
      R"({"userId": "u0", "numResults": 0, "filterValues": {"G": "\"Drama\""}})",
      R"({"userId": "u0", "numResults": 501, "filterValues": {"G": "\"Drama\""}})",
      R"({"userId": "u0", "numResults": "5", "filterValues": {"G": "\"Drama\""}})",
      R"({"userId": "u0", "numResults": 2.5, "filterValues": {"G": "\"Drama\""}})",
      R"({"userId": "u0", "filterValues": ["Drama"]})",
      R"({"userId": "u0", "filterValues": {"G": 3}})",
      R"({"userId": "u0"})",                                 // INCLUDE needs $G
      R"({"userId": "u0", "filterValues": {"G": "Drama"}})",  // unquoted value
  };
  for (const std::string& line : bad) {
    Recommender::LineOutcome outcome;
    const json a = json::parse(r.answer(line, &outcome));
    EXPECT_TRUE(outcome.error) << line;
    EXPECT_TRUE(a.at("output").is_null()) << line;
    EXPECT_TRUE(a.at("error").is_string() && !a.at("error").get<std::string>().empty()) << line;
    EXPECT_TRUE(a.contains("input")) << line;
  }
  // A line that is not JSON comes back as its text.
  EXPECT_EQ(ask(r, "not json").at("input"), "not json");
  // The unquoted value names its position.
  EXPECT_NE(ask(r, R"({"userId": "u0", "filterValues": {"G": "Drama"}})").at("error").get<std::string>().find("position 1"),
            std::string::npos);
}

TEST(Inference, TwoStageIsExactWhenTheGmfBranchIsTheWholeModel) {
  InferenceOptions options;
  options.candidates = 3;
  options.keep_seen = true;
  const Recommender r = make(gmf_model(), options);
  EXPECT_EQ(items_of(ask(r, R"({"userId": "u0", "numResults": 2})")), (std::vector<std::string>{"i2", "i4"}));
  EXPECT_EQ(items_of(ask(r, R"({"userId": "u1", "numResults": 3})")), (std::vector<std::string>{"i1", "i3", "i0"}));
}

TEST(Inference, TwoStageOnALargeCatalogKeepsTheExactAnswerOfAGmfModel) {
  // 20000 items with many tied scores: the candidate selection samples a bound before selecting,
  // and must still return exactly the best candidates, ties to the lower index.
  ModelData m = gmf_model();
  const uint32_t n = 20000;
  m.item_ids.clear();
  std::vector<float> factors;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (uint32_t i = 0; i < n; ++i) {
    m.item_ids.push_back(std::to_string(i));
    m.item_ids.back().insert(0, 1, 'i');
    factors.push_back(std::round(normal(rng) * 20.0f) / 20.0f);
  }
  m.params->config.num_items = n;
  m.params->item_gmf = tensor({n, 1}, factors);
  m.seen = {};
  InferenceOptions exact;
  exact.num_results = 25;
  InferenceOptions two_stage = exact;
  two_stage.candidates = 100;
  const Recommender a = make(m, exact), b = make(m, two_stage);
  for (const char* user : {"u0", "u1"}) {
    const std::string line = std::string("{\"userId\": \"") + user + "\"}";
    EXPECT_EQ(items_of(ask(a, line)), items_of(ask(b, line))) << user;
  }
}

// Lines that once ended the whole job (issue 15): a number no double holds made nlohmann throw
// out_of_range, which escaped the OpenMP loop (terminate), and 100,000 nested brackets overflowed
// the stack while the line was echoed. Each is now that line's error, in batch-infer and
// batch-segment alike.
std::vector<std::string> hostile_lines() {
  return {"[1e999]", R"({"userId": "u0", "numResults": 1e999})", R"({"itemId": "i4", "numResults": 1e999})",
          std::string(100000, '[') + std::string(100000, ']'),
          "{\"userId\": " + std::string(100000, '{') + std::string(100000, '}') + "}",
          R"({"userId": "u0", "numResults": 18446744073709551615})", R"({"userId": "\ud800"})"};
}

TEST(Inference, NumbersTooLargeAndDeepNestingAreTheLinesError) {
  const Recommender r = make(gmf_model(), {}, gmf_catalog());
  for (const std::string& line : hostile_lines()) {
    for (int segment = 0; segment < 2; ++segment) {
      Recommender::LineOutcome outcome;
      const json a = json::parse(segment ? r.segment(line, 5, &outcome) : r.answer(line, &outcome));
      EXPECT_TRUE(outcome.error) << line.substr(0, 60);
      EXPECT_TRUE(a.at("output").is_null()) << line.substr(0, 60);
      EXPECT_TRUE(a.at("error").is_string()) << line.substr(0, 60);
    }
  }
  EXPECT_NE(ask(r, std::string(100000, '[') + std::string(100000, ']')).at("error").get<std::string>().find("nested deeper than 64"),
            std::string::npos);
  EXPECT_NE(ask(r, "[1e999]").at("error").get<std::string>().find("not valid JSON"), std::string::npos);
  // Shallow nesting is still a query.
  EXPECT_TRUE(ask(r, R"({"userId": "u0", "filterValues": {}})").at("error").is_null());
}

TEST(Inference, JobsGoOnPastHostileLines) {
  const fs::path dir = fs::temp_directory_path() / ("tastebud-test-hostile-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream in(dir / "queries.jsonl");
    for (const std::string& line : hostile_lines()) in << line << "\n" << R"({"userId": "u0"})" << "\n";
    std::ofstream segments(dir / "segments.jsonl");
    for (const std::string& line : hostile_lines()) segments << line << "\n" << R"({"itemId": "i0"})" << "\n";
  }
  const Recommender r = make(gmf_model(), {}, gmf_catalog());
  const size_t n = hostile_lines().size();
  BatchStats stats = run_batch_infer(r, dir / "queries.jsonl", dir / "out.jsonl", 2);
  EXPECT_EQ(stats.lines, 2 * n);
  EXPECT_EQ(stats.errors, n);
  stats = run_batch_segment(r, dir / "segments.jsonl", dir / "segments.out.jsonl", 2, 2);
  EXPECT_EQ(stats.lines, 2 * n);
  EXPECT_EQ(stats.errors, n);
  fs::remove_all(dir);
}

TEST(Inference, SegmentsRankUsersByAffinity) {
  ModelData m = gmf_model();
  m.user_ids = {"u0", "u1", "u2"};
  m.params->config.num_users = 3;
  m.params->user_gmf = tensor({3, 1}, {1, -1, 3});
  m.seen.offsets = {0, 2, 3, 3};
  InferenceOptions options;
  const Recommender r = make(m, options, gmf_catalog());
  // Affinity for i4 (factor 1.5): u2 4.5 > u0 1.5 > u1 -1.5; u0 and u1 have seen i4.
  json a = json::parse(r.segment(R"({"itemId": "i4"})", 10));
  EXPECT_EQ(a.at("output").at("recommendedUsers"), json::parse(R"(["u2"])"));
  a = json::parse(r.segment(R"({"itemId": "i0", "numResults": 2})", 10));
  EXPECT_EQ(a.at("output").at("recommendedUsers"), json::parse(R"(["u2", "u0"])"));
  // Drama items are i1 (-1) and i3 (0): u1 likes them best.
  a = json::parse(r.segment(R"({"itemAttributes": "ITEMS.GENRE = \"Drama\""})", 1));
  EXPECT_EQ(a.at("output").at("recommendedUsers"), json::parse(R"(["u1"])"));
  for (const std::string& bad : {std::string("nope"), std::string(R"({"userId": "u0"})"), std::string(R"({"itemId": "zz"})"),
                                 std::string(R"({"itemAttributes": "ITEMS.GENRE = "})"),
                                 std::string(R"({"itemAttributes": "ITEMS.GENRE = \"Horror\""})")}) {
    Recommender::LineOutcome outcome;
    a = json::parse(r.segment(bad, 5, &outcome));
    EXPECT_TRUE(outcome.error) << bad;
    EXPECT_TRUE(a.at("output").is_null()) << bad;
  }
}

// --device cuda: the GPU answers the plain user queries of a chunk in batches; every line must read
// as the CPU's (near-equal logits may swap places, so those compare by score). Without a GPU the
// Recommender refuses to build, and the job's --device auto falls back to the CPU.
TEST(Inference, GpuAnswersMatchTheCpuLineForLine) {
  ModelData m;
  m.kind = ModelType::kNeuMF;
  const uint32_t users = 40, items = 300;
  for (uint32_t u = 0; u < users; ++u) m.user_ids.push_back(fmt::format("u{}", u));
  ItemCatalog catalog;
  std::vector<double> price;
  for (uint32_t i = 0; i < items; ++i) {
    m.item_ids.push_back(fmt::format("i{}", i));
    price.push_back(i % 50);
  }
  catalog.item_ids = m.item_ids;
  catalog.numerical.push_back({"PRICE", price});
  ModelConfig c;
  c.num_users = users;
  c.num_items = items;
  ModelParams p = ModelParams::initialize(c, 3);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (Tensor* t : p.tensors()) for (float& v : t->values) v = normal(rng);
  m.params = p;
  m.seen.offsets.push_back(0);
  for (uint32_t u = 0; u < users; ++u) {
    for (uint32_t i = u; i < items; i += 37) m.seen.items.push_back(i);
    m.seen.offsets.push_back(m.seen.items.size());
  }
  InferenceOptions options;
  options.filter = "EXCLUDE ItemID WHERE Items.PRICE > $MAX";
  const std::vector<std::string> lines{
      R"({"userId": "u0"})", R"({"userId": "u1", "numResults": 7})",
      R"({"userId": "u2", "filterValues": {"MAX": "10"}})", R"({"userId": "u3", "filterValues": {"MAX": "10"}, "numResults": 200})",
      R"({"userId": "u4", "itemList": ["i1", "i2", "nope"]})", R"({"itemId": "i9"})", R"({"userId": "stranger"})",
      "not json", R"({"userId": "u39", "numResults": 500})"};
  options.device = "cpu";
  const Recommender cpu(m, InferenceContext{catalog, {}, {}}, options);
  std::vector<std::string> want(lines.size()), got(lines.size());
  std::vector<Recommender::LineOutcome> a(lines.size()), b(lines.size());
  cpu.answer_chunk(lines, want, a, 2);
  for (size_t k = 0; k < lines.size(); ++k) ASSERT_EQ(want[k], cpu.answer(lines[k])) << lines[k];
  std::string reason;
  if (!gpu_scorer_available(&reason)) {
    options.device = "cuda";
    EXPECT_THROW(Recommender(m, InferenceContext{catalog, {}, {}}, options), Error);
    GTEST_SKIP() << "no usable GPU: " << reason;
  }
  options.device = "cuda";
  const Recommender gpu(m, InferenceContext{catalog, {}, {}}, options);
  gpu.answer_chunk(lines, got, b, 2);
  for (size_t k = 0; k < lines.size(); ++k) {
    const json w = json::parse(want[k]), g = json::parse(got[k]);
    ASSERT_EQ(w.at("error").is_null(), g.at("error").is_null()) << lines[k];
    if (!w.at("error").is_null()) continue;
    const auto& wi = w.at("output").at("recommendedItems");
    const auto& gi = g.at("output").at("recommendedItems");
    const auto& ws = w.at("output").at("scores");
    const auto& gs = g.at("output").at("scores");
    ASSERT_EQ(wi.size(), gi.size()) << lines[k];
    for (size_t r = 0; r < wi.size(); ++r) {
      if (ws[r].is_null()) continue;
      EXPECT_NEAR(gs[r].get<double>(), ws[r].get<double>(), 1e-5) << lines[k] << " rank " << r;
      if (wi[r] != gi[r]) {  // only a near-tie may swap places
        EXPECT_NEAR(ws[r].get<double>(), gs[r].get<double>(), 1e-6) << lines[k] << " rank " << r;
      }
    }
  }
}

// ---- The model directory on load (issue 15: damaged files once crashed or were served) ----

template <class T>
void put(std::string& bytes, T value) {
  bytes.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// gmf_model() as a model directory, written by the same functions training uses.
fs::path write_gmf_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("tastebud-test-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const ModelData m = gmf_model();
  write_bytes(dir / "user_ids.json", json(m.user_ids).dump());
  write_bytes(dir / "item_ids.json", json(m.item_ids).dump());
  write_bytes(dir / "config.json", json{{"model", "gmf"}, {"checksums", file_checksums(dir)}}.dump());
  write_seen(m.seen, dir / "seen.bin");
  // The hand-built parameters hold only what the scorer reads; a file holds every tensor.
  ModelParams params = ModelParams::initialize(m.params->config, 1);
  params.user_gmf.values = m.params->user_gmf.values;
  params.item_gmf.values = m.params->item_gmf.values;
  params.head_weight.values = m.params->head_weight.values;
  params.head_bias.values = m.params->head_bias.values;
  save_model(params, dir / "model.bin");
  return dir;
}

// The message of the Error load_model_dir throws, or "" when it loads.
std::string load_error(const fs::path& dir) {
  try {
    load_model_dir(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelDir, EveryFlippedBitOfAModelFileIsACorruptError) {
  const fs::path dir = write_gmf_dir("bitflips");
  ASSERT_EQ(load_error(dir), "");
  EXPECT_EQ(load_model_dir(dir).seen.items, gmf_model().seen.items);
  std::mt19937 random(15);
  for (const char* name : {"seen.bin", "model.bin", "user_ids.json", "item_ids.json"}) {
    const std::string good = read_bytes(dir / name);
    for (int trial = 0; trial < 60; ++trial) {
      std::string bad = good;
      const size_t at = random() % bad.size();
      bad[at] = static_cast<char>(bad[at] ^ (1 << (random() % 8)));
      write_bytes(dir / name, bad);
      const std::string error = load_error(dir);
      EXPECT_NE(error, "") << name << " byte " << at;
      EXPECT_NE(error.find(name), std::string::npos) << error;
    }
    // A truncated file too.
    write_bytes(dir / name, good.substr(0, good.size() - 3));
    EXPECT_NE(load_error(dir).find("corrupt: " + (dir / name).string()), std::string::npos) << load_error(dir);
    write_bytes(dir / name, good);
  }
  EXPECT_EQ(load_error(dir), "");
  fs::remove_all(dir);
}

// Files of before the checksum (TBSEEN01, tensor file version 1) still load, and their contents
// are checked: indices in range, offsets increasing, counts within the file.
std::string seen_v1(uint64_t users, const std::vector<uint64_t>& offsets, const std::vector<uint32_t>& items) {
  std::string bytes = "TBSEEN01";
  put(bytes, users);
  for (uint64_t o : offsets) put(bytes, o);
  for (uint32_t i : items) put(bytes, i);
  return bytes;
}

TEST(ModelDir, OldFilesLoadAndTheirContentsAreChecked) {
  const fs::path dir = write_gmf_dir("legacy");
  write_bytes(dir / "seen.bin", seen_v1(2, {0, 2, 3}, {2, 4, 4}));
  EXPECT_EQ(load_error(dir), "");
  const std::vector<std::pair<std::string, std::string>> bad{
      {seen_v1(2, {0, 2, 3}, {2, 9, 4}), "has seen item 9, but the model has 5 items"},
      {seen_v1(3, {0, 3, 2, 3}, {1, 2, 4}), "do not increase"},
      {seen_v1(2, {0, 2, 3}, {4, 2, 4}), "not sorted"},
      {seen_v1(UINT64_MAX, {0, 2, 3}, {2, 4, 4}), "users do not fit"},
      {seen_v1(2, {0, 2, UINT64_MAX / 2}, {2, 4, 4}), "items do not match"},
      {seen_v1(2, {1, 2, 3}, {2, 4, 4}), "offset is not 0"},
  };
  for (const auto& [bytes, message] : bad) {
    write_bytes(dir / "seen.bin", bytes);
    const std::string error = load_error(dir);
    EXPECT_NE(error.find("corrupt: " + (dir / "seen.bin").string()), std::string::npos) << error;
    EXPECT_NE(error.find(message), std::string::npos) << error;
  }
  write_bytes(dir / "seen.bin", seen_v1(2, {0, 2, 3}, {2, 4, 4}));
  // model.bin of version 1: the header's counts are bounded by the file before allocating.
  auto model_v1 = [](const std::string& header) {
    std::string bytes = "TBTENSOR";
    put(bytes, uint32_t{1});
    put(bytes, uint64_t{header.size()});
    bytes += header;
    put(bytes, uint64_t{0});
    return bytes;
  };
  write_bytes(dir / "model.bin",
              model_v1(R"({"kind": "model", "config": {"model": "gmf", "num_users": 4000000000, "num_items": 5, "factors": 64, "layers": [64, 32]}})"));
  // (4e9 + 5) x 64 table floats + 65 head floats, 4 bytes each.
  EXPECT_NE(load_error(dir).find("needs 1024000001540 bytes of parameters"), std::string::npos) << load_error(dir);
  write_bytes(dir / "model.bin", model_v1(R"({"kind": "model"})"));
  EXPECT_NE(load_error(dir).find("without its \"config\""), std::string::npos) << load_error(dir);
  write_bytes(dir / "model.bin", model_v1(R"({"kind": "model", "config": {"model": 7}})"));
  EXPECT_NE(load_error(dir).find("bad model config"), std::string::npos) << load_error(dir);
  fs::remove_all(dir);
}

TEST(ModelDir, RecipeNeighbourListsAreChecked) {
  const fs::path dir = write_gmf_dir("recipe");
  fs::remove(dir / "model.bin");
  write_bytes(dir / "config.json", R"({"model": "sims"})");
  RecipeData d;
  d.kind = "sims";
  d.popularity = {3, 1, 2, 0, 0};
  d.neighbors.offsets = {0, 1, 1, 2, 2, 2};
  d.neighbors.items = {2, 0};
  d.neighbors.scores = {0.5f, 0.25f};
  write_recipe(d, dir / "recipe.bin");
  EXPECT_EQ(load_error(dir), "");
  std::string bytes = read_bytes(dir / "recipe.bin");
  bytes[bytes.size() / 2] ^= 0x10;
  write_bytes(dir / "recipe.bin", bytes);
  EXPECT_NE(load_error(dir).find("corrupt: " + (dir / "recipe.bin").string()), std::string::npos) << load_error(dir);
  for (const auto& [offsets, items] : std::vector<std::pair<std::vector<uint64_t>, std::vector<uint32_t>>>{
           {{0, 1, 1, 2, 2, 2}, {2, 7}}, {{0, 2, 1, 2, 2, 2}, {2, 0}}, {{0, 1, 1, 2, 2}, {2, 0}}}) {
    d.neighbors.offsets = offsets;
    d.neighbors.items = items;
    write_recipe(d, dir / "recipe.bin");
    EXPECT_NE(load_error(dir).find("corrupt: "), std::string::npos) << load_error(dir);
  }
  fs::remove_all(dir);
}

// ---- Answers a job configuration shapes (issue 14) ------------------------------------------

// A small shop: GMF with one factor, every user 1, item i<k> = 9 - k, so relevance runs i0 > i1 >
// ... > i9. Even items are toys, odd ones books; item i<k> appeared k days after the first one
// and the dataset's latest event is day 10. u1 has seen i7, i8 and i9 (their popularity 1, the
// others 0); u0 has seen nothing. u0 is 12 years old, u1 30.
ModelData shop_model() {
  ModelData m;
  m.kind = ModelType::kGMF;
  m.user_ids = {"u0", "u1"};
  for (int k = 0; k < 10; ++k) m.item_ids.push_back(fmt::format("i{}", k));
  ModelParams p;
  p.config.kind = ModelKind::kGMF;
  p.config.num_users = 2;
  p.config.num_items = 10;
  p.config.factors = 1;
  p.user_gmf = tensor({2, 1}, {1, 1});
  std::vector<float> items;
  for (int k = 0; k < 10; ++k) items.push_back(static_cast<float>(9 - k));
  p.item_gmf = tensor({10, 1}, items);
  p.head_weight = tensor({1}, {1});
  p.head_bias = tensor({1}, {0});
  m.params = p;
  m.seen.offsets = {0, 0, 3};
  m.seen.items = {7, 8, 9};
  return m;
}

constexpr double kDay = 86400;

InferenceContext shop_context() {
  InferenceContext c;
  c.catalog.item_ids = shop_model().item_ids;
  ItemCategoricalColumn category{"CATEGORY_L1", {"toys", "books"}, {}, {}};
  category.offsets.push_back(0);
  for (uint32_t k = 0; k < 10; ++k) {
    category.values.push_back(k % 2);
    category.offsets.push_back(k + 1);
    c.item_time.push_back(k * kDay);
  }
  c.catalog.categorical.push_back(category);
  std::vector<double> price;
  for (int k = 0; k < 10; ++k) price.push_back(10.0 + k);
  c.catalog.numerical.push_back({"PRICE", price});
  c.catalog.numerical.push_back({"CREATION_TIMESTAMP", c.item_time});
  c.catalog.now = 10 * kDay;
  c.catalog.users.user_ids = {"u0", "u1"};
  c.catalog.users.numerical.push_back({"AGE", {12, 30}});
  return c;
}

Recommender shop(JobConfig job, std::string filter = {}) {
  InferenceOptions options;
  options.job = std::move(job);
  options.filter = std::move(filter);
  return Recommender(shop_model(), shop_context(), options);
}

JobConfig job_of(const std::string& text) { return parse_job_config(text, "job.json"); }

// How many entries of the output's list `key` equal `value`.
size_t count_of(const json& answer, const char* key, const json& value) {
  const json& list = answer.at("output").at(key);
  return static_cast<size_t>(std::count(list.begin(), list.end(), value));
}

// The items whose entry in `key` equals `value`, in result order.
std::vector<std::string> items_where(const json& answer, const char* key, const json& value) {
  std::vector<std::string> out;
  const json& out_json = answer.at("output");
  for (size_t k = 0; k < out_json.at(key).size(); ++k)
    if (out_json.at(key)[k] == value) out.push_back(out_json.at("recommendedItems")[k].get<std::string>());
  return out;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(Slates, ExplorationOnAtPointThreeTakesRoundedShareOffAtZeroNone) {
  // Cut-off 3 days: i7, i8 and i9 (days 7-9, now day 10) are explorable.
  const Recommender on = shop(job_of(R"({"itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "3"}})"));
  // K 5: round(0.3 * 5) = 2 exploration slots (halves round up); relevance keeps i0, i1, i2.
  json a = ask(on, R"({"userId": "u0", "numResults": 5})");
  EXPECT_EQ(count_of(a, "reasons", "exploration"), 2u) << a.dump();
  EXPECT_EQ(items_where(a, "reasons", "exploration"), (std::vector<std::string>{"i7", "i8"}));
  EXPECT_EQ(items_where(a, "reasons", nullptr), (std::vector<std::string>{"i0", "i1", "i2"}));
  // K 10: round(0.3 * 10) = 3; relevance keeps i0-i6, exploration the rest; nothing twice.
  a = ask(on, R"({"userId": "u0", "numResults": 10})");
  EXPECT_EQ(count_of(a, "reasons", "exploration"), 3u);
  EXPECT_EQ(sorted(items_of(a)), sorted(shop_model().item_ids));
  // K 2: round(0.6) = 1.
  EXPECT_EQ(count_of(ask(on, R"({"userId": "u0", "numResults": 2})"), "reasons", "exploration"), 1u);
  // The same seed and query give the same result.
  EXPECT_EQ(ask(on, R"({"userId": "u0", "numResults": 10})"), a);
  // Another seed places the same items elsewhere (relevance and exploration items each keep
  // their own order).
  InferenceOptions seeded;
  seeded.job = job_of(R"({"itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "3"}})");
  seeded.seed = 12345;
  const json b = ask(Recommender(shop_model(), shop_context(), seeded), R"({"userId": "u0", "numResults": 10})");
  EXPECT_NE(items_of(b), items_of(a));
  EXPECT_EQ(sorted(items_of(b)), sorted(items_of(a)));
  EXPECT_EQ(items_where(b, "reasons", "exploration"), items_where(a, "reasons", "exploration"));
  // Weight 0: no exploration slot; the plain top-K, in order.
  const Recommender off = shop(job_of(R"({"itemExplorationConfig": {"explorationWeight": 0, "explorationItemAgeCutOff": "3"}})"));
  a = ask(off, R"({"userId": "u0", "numResults": 5})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i0", "i1", "i2", "i3", "i4"}));
  EXPECT_EQ(count_of(a, "reasons", nullptr), 5u);
  // A job configuration without the key explores at the service's default 0.3; no configuration at
  // all leaves answers as they were (no "reasons").
  EXPECT_EQ(count_of(ask(shop(job_of(R"({"itemExplorationConfig": {"explorationItemAgeCutOff": 3}})")),
                         R"({"userId": "u0", "numResults": 10})"), "reasons", "exploration"), 3u);
  a = ask(shop(JobConfig{}), R"({"userId": "u0", "numResults": 5})");
  EXPECT_FALSE(a.at("output").contains("reasons"));
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i0", "i1", "i2", "i3", "i4"}));
  // An unknown user gets popular items, each a popularity fill, and no exploration.
  a = ask(on, R"({"userId": "nobody", "numResults": 2})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i7", "i8"}));
  EXPECT_EQ(count_of(a, "reasons", "popularity fill"), 2u);
  EXPECT_TRUE(a.at("output").contains("reason"));
  // Seen items are not explored: u1 has seen i7-i9, so nothing is young enough.
  EXPECT_EQ(count_of(ask(on, R"({"userId": "u1", "numResults": 5})"), "reasons", "exploration"), 0u);
}

TEST(Slates, PromotionsTakeTheirExactShareTaggedByName) {
  const std::string books = R"j({"name": "books-push", "percentPromotedItems": 20, "filterExpression": "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN (\"books\")", "filterValues": {}})j";
  const std::string toys = R"j({"name": "toys", "percentPromotedItems": "30", "filterExpression": "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN ($C)", "filterValues": {"C": "\"toys\""}})j";
  const Recommender one = shop(job_of(R"({"itemExplorationConfig": {"explorationWeight": 0}, "promotions": [)" + books + "]}"));
  // 20% of 10 slots: the two best books, i1 and i3; relevance fills the other 8.
  json a = ask(one, R"({"userId": "u0", "numResults": 10})");
  EXPECT_EQ(count_of(a, "promotionNames", "books-push"), 2u) << a.dump();
  EXPECT_EQ(items_where(a, "promotionNames", "books-push"), (std::vector<std::string>{"i1", "i3"}));
  EXPECT_EQ(items_where(a, "reasons", "promotion"), (std::vector<std::string>{"i1", "i3"}));
  EXPECT_EQ(items_where(a, "promotionNames", nullptr), (std::vector<std::string>{"i0", "i2", "i4", "i5", "i6", "i7", "i8", "i9"}));
  EXPECT_EQ(a.at("output").at("promotionNames").size(), a.at("output").at("recommendedItems").size());
  // 20% of 5 slots: one.
  EXPECT_EQ(count_of(ask(one, R"({"userId": "u0", "numResults": 5})"), "promotionNames", "books-push"), 1u);
  // Several promotions: 2 books and 3 toys of 10 slots, none twice.
  const Recommender two = shop(job_of(R"({"itemExplorationConfig": {"explorationWeight": 0}, "promotions": [)" + books + "," + toys + "]}"));
  a = ask(two, R"({"userId": "u0", "numResults": 10})");
  EXPECT_EQ(items_where(a, "promotionNames", "books-push"), (std::vector<std::string>{"i1", "i3"}));
  EXPECT_EQ(items_where(a, "promotionNames", "toys"), (std::vector<std::string>{"i0", "i2", "i4"}));
  EXPECT_EQ(sorted(items_of(a)), sorted(shop_model().item_ids));
  // The request filter applies to the other slots only, as in the service: no book but the promoted one.
  const Recommender filtered = shop(job_of(R"({"itemExplorationConfig": {"explorationWeight": 0}, "promotions": [)" + books + "]}"),
                                    "EXCLUDE ItemID WHERE Items.CATEGORY_L1 IN (\"books\")");
  a = ask(filtered, R"({"userId": "u0", "numResults": 5})");
  EXPECT_EQ(items_where(a, "promotionNames", "books-push"), (std::vector<std::string>{"i1"}));
  EXPECT_EQ(items_where(a, "promotionNames", nullptr), (std::vector<std::string>{"i0", "i2", "i4", "i6"}));
  // Related items are promoted too.
  EXPECT_EQ(count_of(ask(one, R"({"itemId": "i0", "numResults": 5})"), "promotionNames", "books-push"), 1u);
  // A promotion filter that names a field the items lack is the job's error, naming the key.
  try {
    shop(job_of(R"j({"promotions": [{"name": "x", "percentPromotedItems": 10, "filterExpression": "INCLUDE ItemID WHERE Items.COLOUR IN (\"red\")"}]})j"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("job.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("promotions[0].filterExpression"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("COLOUR"), std::string::npos) << e.what();
  }
}

TEST(Slates, RankingInfluenceBlendsPercentiles) {
  // FRESHNESS 1: newest first (relevance then has no weight).
  EXPECT_EQ(items_of(ask(shop(job_of(R"({"itemExplorationConfig": {"explorationWeight": 0}, "rankingInfluence": {"FRESHNESS": 1}})")),
                         R"({"userId": "u0", "numResults": 3})")),
            (std::vector<std::string>{"i9", "i8", "i7"}));
  // POPULARITY 0.4: 0.6 R + 0.4 P. R runs 1, 8/9, ..., 0 down the catalog; P is 8/9 for i7-i9
  // (three tied at the top) and 3/9 for the rest: i0 .733, i1 .667, i2 .6, i3 .533, i7 .489, i4 .467.
  const json a = ask(shop(job_of(R"({"itemExplorationConfig": {"explorationWeight": 0}, "rankingInfluence": {"POPULARITY": 0.4}})")),
                     R"({"userId": "u0", "numResults": 5})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i0", "i1", "i2", "i3", "i7"}));
  // Scores stay the model's.
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[4].get<float>(), sig(2.0f));
  EXPECT_EQ(percentiles(std::vector<double>{5, NAN, 5, 7}), (std::vector<double>{0.5, 0.0, 0.5, 1.0}));
}

TEST(Slates, MetadataColumnsTravelWithEachItem) {
  JobConfig job;
  job.metadata_columns = parse_metadata_columns("Items.CATEGORY_L1,PRICE");
  const json a = ask(shop(job), R"({"userId": "u0", "numResults": 2})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i0", "i1"}));
  EXPECT_EQ(a.at("output").at("metadata"),
            json::parse(R"([{"CATEGORY_L1": "toys", "PRICE": 10}, {"CATEGORY_L1": "books", "PRICE": 11}])"));
  // Rankings carry them too, null for an id the model never saw.
  const json b = ask(shop(job), R"({"userId": "u0", "itemList": ["i3", "zz"]})");
  EXPECT_EQ(b.at("output").at("metadata"), json::parse(R"([{"CATEGORY_L1": "books", "PRICE": 13}, null])"));
  job.metadata_columns = {"COLOUR"};
  EXPECT_THROW(shop(job), Error);
}

TEST(Slates, AFilterThatDependsOnTheUser) {
  // Toys only for users under 18: u0 (12) gets toys, u1 (30) everything it has not seen.
  const Recommender r = shop(JobConfig{}, "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN (\"toys\") IF CurrentUser.AGE < 18");
  EXPECT_EQ(items_of(ask(r, R"({"userId": "u0", "numResults": 3})")), (std::vector<std::string>{"i0", "i2", "i4"}));
  EXPECT_EQ(items_of(ask(r, R"({"userId": "u1", "numResults": 3})")), (std::vector<std::string>{"i0", "i1", "i2"}));
  // An unknown user satisfies no IF clause: popular items, unfiltered.
  EXPECT_EQ(items_of(ask(r, R"({"userId": "nobody", "numResults": 1})")), (std::vector<std::string>{"i7"}));
  // Related items of the same category as the query's item.
  const Recommender same = shop(JobConfig{}, "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN CurrentItem.CATEGORY_L1");
  EXPECT_EQ(sorted(items_of(ask(same, R"({"itemId": "i3", "numResults": 4})"))),
            (std::vector<std::string>{"i1", "i5", "i7", "i9"}));
  // Items created in the last 2 days (now: day 10).
  const Recommender fresh = shop(JobConfig{}, "INCLUDE ItemID WHERE Items.CREATION_TIMESTAMP >= NOW - 2 DAYS");
  EXPECT_EQ(items_of(ask(fresh, R"({"userId": "u0"})")), (std::vector<std::string>{"i8", "i9"}));
}

TEST(Slates, SegmentFiltersSelectUsers) {
  ModelData m = shop_model();
  InferenceOptions options;
  options.filter = "INCLUDE UserID WHERE Users.AGE >= $MIN";
  const Recommender r(std::move(m), shop_context(), options);
  json a = json::parse(r.segment(R"({"itemId": "i0", "filterValues": {"MIN": "18"}})", 10));
  EXPECT_EQ(a.at("output").at("recommendedUsers"), json::parse(R"(["u1"])"));
  a = json::parse(r.segment(R"({"itemId": "i0", "filterValues": {"MIN": "1"}})", 10));
  EXPECT_EQ(a.at("output").at("recommendedUsers").size(), 2u);
  // A user filter cannot answer item queries.
  EXPECT_FALSE(ask(r, R"({"userId": "u0"})").at("error").is_null());
}

// ---- Exploration as the service describes it: cold and new items (issue 24) ------------------

// 40 users (every one 1) and 30 items: w0-w19 warm (logit 10 - 0.1 k, each seen by 10 users, user
// u seeing w(u) .. w(u + 4) mod 20), created 200 days ago but w19 yesterday; c0-c9 cold (no
// interaction, logit 0.1 j: what an id-only model's untrained rows say is noise), c<j> created
// j + 1 days ago, c5 without a date, c9 100 days ago. Now is day 1000.
constexpr double kColdShopNow = 1000 * kDay;

ModelData cold_shop_model() {
  ModelData m;
  m.kind = ModelType::kGMF;
  for (int u = 0; u < 40; ++u) m.user_ids.push_back(fmt::format("u{}", u));
  std::vector<float> items;
  for (int k = 0; k < 20; ++k) {
    m.item_ids.push_back(fmt::format("w{}", k));
    items.push_back(10.0f - 0.1f * static_cast<float>(k));
  }
  for (int j = 0; j < 10; ++j) {
    m.item_ids.push_back(fmt::format("c{}", j));
    items.push_back(0.1f * static_cast<float>(j));
  }
  ModelParams p;
  p.config.kind = ModelKind::kGMF;
  p.config.num_users = 40;
  p.config.num_items = 30;
  p.config.factors = 1;
  p.user_gmf = tensor({40, 1}, std::vector<float>(40, 1.0f));
  p.item_gmf = tensor({30, 1}, items);
  p.head_weight = tensor({1}, {1});
  p.head_bias = tensor({1}, {0});
  m.params = p;
  m.seen.offsets = {0};
  for (uint32_t u = 0; u < 40; ++u) {
    std::vector<uint32_t> seen;
    for (uint32_t j = 0; j < 5; ++j) seen.push_back((u + j) % 20);
    std::sort(seen.begin(), seen.end());
    m.seen.items.insert(m.seen.items.end(), seen.begin(), seen.end());
    m.seen.offsets.push_back(m.seen.items.size());
  }
  return m;
}

InferenceContext cold_shop_context() {
  InferenceContext c;
  c.catalog.item_ids = cold_shop_model().item_ids;
  for (int k = 0; k < 20; ++k) c.item_time.push_back(kColdShopNow - (k == 19 ? 1 : 200) * kDay);
  for (int j = 0; j < 10; ++j) c.item_time.push_back(j == 5 ? NAN : kColdShopNow - (j == 9 ? 100 : j + 1) * kDay);
  c.catalog.now = kColdShopNow;
  return c;
}

Recommender cold_shop(ModelData m, const std::string& job) {
  InferenceOptions options;
  options.job = job_of(job);
  return Recommender(std::move(m), cold_shop_context(), options);
}

const std::string kExplore30 = R"({"itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "30"}})";

TEST(Exploration, ColdAndYoungItemsTakeTheWeightsShareEveryAnswer) {
  const Recommender r = cold_shop(cold_shop_model(), kExplore30);
  EXPECT_EQ(share_slots(0.3, 10), 3u);
  std::set<std::string> explored;
  for (int u = 0; u < 40; ++u) {
    const std::string line = fmt::format(R"({{"userId": "u{}", "numResults": 10}})", u);
    const json a = ask(r, line);
    // Id-only model: the cold items' scores are noise, so three of the explorable ones in the
    // query's drawn order: c0..c8 (c5 has no date: new; c9 is past the cut-off). w19 is young but
    // ten users took it: not explored.
    const std::vector<std::string> cold = items_where(a, "reasons", "exploration");
    EXPECT_EQ(cold.size(), 3u) << a.dump();
    for (const std::string& id : cold) {
      EXPECT_TRUE(id[0] == 'c' && id != "c9") << a.dump();
      explored.insert(id);
    }
    EXPECT_EQ(count_of(a, "reasons", nullptr), 7u) << a.dump();
    for (const std::string& id : items_where(a, "reasons", nullptr)) EXPECT_EQ(id[0], 'w') << a.dump();
    EXPECT_EQ(ask(r, line), a);  // the same query, the same draw
  }
  // Over 40 users, all nine explorable cold items get slots.
  EXPECT_EQ(explored.size(), 9u);
  // Weight 0: none; the seven best unseen warm items and three more, all warm.
  const Recommender off = cold_shop(cold_shop_model(), R"({"itemExplorationConfig": {"explorationWeight": 0, "explorationItemAgeCutOff": "30"}})");
  const json a = ask(off, R"({"userId": "u0", "numResults": 10})");
  EXPECT_EQ(count_of(a, "reasons", "exploration"), 0u);
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"w5", "w6", "w7", "w8", "w9", "w10", "w11", "w12", "w13", "w14"}));
}

TEST(Exploration, AMetadataModelsScoresRankTheColdItemsAndTheCutOffBinds) {
  // Items scored through their metadata rows: the model's relevance orders the cold items, c8 >
  // c7 > c6 (c9 scores best but is 100 days old: past the 30-day cut-off).
  ModelData m = cold_shop_model();
  m.item_metadata = true;
  json a = ask(cold_shop(m, kExplore30), R"({"userId": "u3", "numResults": 10})");
  EXPECT_EQ(items_where(a, "reasons", "exploration"), (std::vector<std::string>{"c8", "c7", "c6"})) << a.dump();
  // A cut-off of 200 days lets c9 in (the warm items, 200 days old, have too many users).
  a = ask(cold_shop(m, R"({"itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "200"}})"),
          R"({"userId": "u3", "numResults": 10})");
  EXPECT_EQ(items_where(a, "reasons", "exploration"), (std::vector<std::string>{"c9", "c8", "c7"})) << a.dump();
  // A cut-off of 1.5 days: c0 (1 day) and c5 (no date) only; the third slot goes to relevance.
  a = ask(cold_shop(m, R"({"itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "1.5"}})"),
          R"({"userId": "u3", "numResults": 10})");
  EXPECT_EQ(items_where(a, "reasons", "exploration"), (std::vector<std::string>{"c5", "c0"})) << a.dump();
  EXPECT_EQ(count_of(a, "reasons", nullptr), 8u);
}

TEST(Exploration, ARecipesEqualScoresAreDrawnPerQuery) {
  // Popularity: the cold items all score 0, so three of the explorable c0..c8, in the query's draw;
  // another seed draws other ones for some user.
  ModelData m = cold_shop_model();
  m.kind = ModelType::kPopularity;
  m.params.reset();
  m.recipe.kind = "popularity";
  for (uint32_t i = 0; i < 30; ++i) m.recipe.popularity.push_back(i < 20 ? 100.0f - static_cast<float>(i) : 0.0f);
  m.recipe.item_scores = m.recipe.popularity;
  const Recommender r = cold_shop(m, kExplore30);
  InferenceOptions other;
  other.job = job_of(kExplore30);
  other.seed = 99;
  const Recommender reseeded(m, cold_shop_context(), other);
  bool differs = false;
  for (int u = 0; u < 10; ++u) {
    const std::string line = fmt::format(R"({{"userId": "u{}", "numResults": 10}})", u);
    const std::vector<std::string> cold = items_where(ask(r, line), "reasons", "exploration");
    ASSERT_EQ(cold.size(), 3u);
    for (const std::string& id : cold) EXPECT_TRUE(id[0] == 'c' && id != "c9") << id;
    differs |= sorted(cold) != sorted(items_where(ask(reseeded, line), "reasons", "exploration"));
  }
  EXPECT_TRUE(differs);
}

// A random GMF over 200 users and 100 items, the last 20 cold and young, the warm ones old: the
// cold items take at least the weight's share of all slots, and every exploration item is cold.
TEST(Exploration, ColdItemsTakeTheWeightsShareOverManyUsers) {
  constexpr uint32_t kUsers = 200, kItems = 100, kCold = 20, kFactors = 4;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ModelData m;
  m.kind = ModelType::kGMF;
  for (uint32_t u = 0; u < kUsers; ++u) m.user_ids.push_back(fmt::format("u{}", u));
  for (uint32_t i = 0; i < kItems; ++i) m.item_ids.push_back(fmt::format("{}{}", i < kItems - kCold ? "w" : "c", i));
  ModelParams p;
  p.config.kind = ModelKind::kGMF;
  p.config.num_users = kUsers;
  p.config.num_items = kItems;
  p.config.factors = kFactors;
  std::vector<float> users(kUsers * kFactors), items(kItems * kFactors);
  for (float& x : users) x = normal(rng);
  for (float& x : items) x = normal(rng);
  p.user_gmf = tensor({kUsers, kFactors}, users);
  p.item_gmf = tensor({kItems, kFactors}, items);
  p.head_weight = tensor({kFactors}, std::vector<float>(kFactors, 1.0f));
  p.head_bias = tensor({1}, {0});
  m.params = p;
  m.seen.offsets = {0};
  for (uint32_t u = 0; u < kUsers; ++u) {  // 8 warm items each: about 20 users per warm item
    std::vector<uint32_t> seen;
    for (uint32_t j = 0; j < 8; ++j) seen.push_back((u * 7 + j * 11) % (kItems - kCold));
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    m.seen.items.insert(m.seen.items.end(), seen.begin(), seen.end());
    m.seen.offsets.push_back(m.seen.items.size());
  }
  InferenceContext c;
  c.catalog.item_ids = m.item_ids;
  for (uint32_t i = 0; i < kItems; ++i) c.item_time.push_back(kColdShopNow - (i < kItems - kCold ? 400.0 : 1.0 + i % 7) * kDay);
  c.catalog.now = kColdShopNow;
  auto cold_slots = [&](const std::string& job, size_t& slots) {
    InferenceOptions options;
    options.job = job_of(job);
    const Recommender r(m, c, options);
    size_t cold = 0;
    slots = 0;
    for (uint32_t u = 0; u < kUsers; ++u) {
      const json a = ask(r, fmt::format(R"({{"userId": "u{}", "numResults": 10}})", u));
      for (const json& id : a.at("output").at("recommendedItems")) cold += id.get<std::string>()[0] == 'c';
      for (const std::string& id : items_where(a, "reasons", "exploration")) EXPECT_EQ(id[0], 'c') << a.dump();
      slots += a.at("output").at("recommendedItems").size();
    }
    return cold;
  };
  size_t slots = 0;
  const size_t explored = cold_slots(kExplore30, slots);
  EXPECT_EQ(slots, kUsers * 10u);
  EXPECT_GE(explored, share_slots(0.3, 10) * kUsers);
  const size_t plain = cold_slots(R"({"itemExplorationConfig": {"explorationWeight": 0}})", slots);
  EXPECT_LT(plain, explored);
}

// ---- Scores as the service returns them: a share of the catalog ---------------------------------

TEST(NormalizedScores, EachScoreIsItsShareOfTheAllowedCatalog) {
  // Popularity 3, 2, 1, 0: shares 3/6, 2/6, 1/6, 0.
  ModelData pop;
  pop.kind = ModelType::kPopularity;
  pop.user_ids = {"u0", "u1"};
  pop.item_ids = {"a", "b", "c", "d"};
  pop.recipe.kind = "popularity";
  pop.recipe.popularity = pop.recipe.item_scores = {3, 2, 1, 0};
  pop.seen.offsets = {0, 0, 1};
  pop.seen.items = {0};  // u1 has seen a
  InferenceOptions options;
  options.normalize_scores = true;
  const Recommender r = make(pop, options);
  json a = ask(r, R"({"userId": "u0", "numResults": 3})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[0].get<float>(), 0.5f);
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[1].get<float>(), 1.0f / 3);
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[2].get<float>(), 1.0f / 6);
  // Seen items are not in the catalog the user is offered: b 2/3, c 1/3.
  a = ask(r, R"({"userId": "u1", "numResults": 2})");
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[0].get<float>(), 2.0f / 3);
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[1].get<float>(), 1.0f / 3);
  // An unknown user's popular items too; related items keep the recipe's scale.
  a = ask(r, R"({"userId": "nobody", "numResults": 1})");
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[0].get<float>(), 0.5f);
  EXPECT_FLOAT_EQ(ask(r, R"({"itemId": "d", "numResults": 1})").at("output").at("scores")[0].get<float>(), 3.0f);
  // A filter narrows the catalog: without a, b 2/3.
  options.filter = R"(EXCLUDE ItemID WHERE Items.CATEGORY_L1 IN ("x"))";
  ItemCatalog catalog;
  catalog.item_ids = pop.item_ids;
  ItemCategoricalColumn category{"CATEGORY_L1", {"x", "y"}, {0, 1, 2, 3, 4}, {0, 1, 1, 1}};
  catalog.categorical.push_back(category);
  a = ask(make(pop, options, catalog), R"({"userId": "u0", "numResults": 1})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"b"}));
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[0].get<float>(), 2.0f / 3);
}

TEST(NormalizedScores, ANeuralModelsSharesAreTheSoftmaxOfItsLogits) {
  // gmf_model's u0: logits i0 0.5, i1 -1, i3 0 (i2 and i4 seen): softmax over those three.
  InferenceOptions options;
  options.normalize_scores = true;
  const json a = ask(make(gmf_model(), options), R"({"userId": "u0", "numResults": 3})");
  EXPECT_EQ(items_of(a), (std::vector<std::string>{"i0", "i3", "i1"}));
  const double z = std::exp(0.5) + std::exp(0.0) + std::exp(-1.0);
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[0].get<float>(), static_cast<float>(std::exp(0.5) / z));
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[1].get<float>(), static_cast<float>(1.0 / z));
  EXPECT_FLOAT_EQ(a.at("output").at("scores")[2].get<float>(), static_cast<float>(std::exp(-1.0) / z));
  // Shaped answers (a job configuration) give the same shares.
  options.job = job_of(R"({"itemExplorationConfig": {"explorationWeight": 0}})");
  const json b = ask(make(gmf_model(), options), R"({"userId": "u0", "numResults": 3})");
  EXPECT_EQ(b.at("output").at("scores"), a.at("output").at("scores"));
  // Two-stage retrieval scores only its candidates: refused.
  options.candidates = 2;
  EXPECT_THROW(make(gmf_model(), options), Error);
}

// --device cuda under a job configuration: the shaped lines are answered on the CPU path, so the
// chunk reads exactly as the CPU's answers, reasons and promotion names included.
TEST(Slates, ShapedLinesStayOnTheCpuWithAGpu) {
  std::string reason;
  if (!gpu_scorer_available(&reason)) GTEST_SKIP() << "no usable GPU: " << reason;
  InferenceOptions options;
  options.job = job_of(R"j({"itemExplorationConfig": {"explorationItemAgeCutOff": 3}, "promotions": [{"name": "b", "percentPromotedItems": 20, "filterExpression": "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN (\"books\")"}]})j");
  const Recommender cpu(shop_model(), shop_context(), options);
  options.device = "cuda";
  const Recommender gpu(shop_model(), shop_context(), options);
  const std::vector<std::string> lines{R"({"userId": "u0", "numResults": 5})", R"({"userId": "u1", "numResults": 10})",
                                       R"({"itemId": "i3"})", R"({"userId": "nobody"})"};
  std::vector<std::string> got(lines.size());
  std::vector<Recommender::LineOutcome> outcomes(lines.size());
  gpu.answer_chunk(lines, got, outcomes, 2);
  for (size_t k = 0; k < lines.size(); ++k) EXPECT_EQ(got[k], cpu.answer(lines[k])) << lines[k];
}

TEST(Inference, AFolderOfJsonFilesIsAnsweredIntoAFolderOfOutFiles) {
  const fs::path dir = fs::temp_directory_path() / ("tastebud-test-folder-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "in");
  std::ofstream(dir / "in" / "a.json") << "{\"userId\": \"u0\", \"numResults\": 1}\n";
  std::ofstream(dir / "in" / "b.json") << "{\"userId\": \"u1\", \"numResults\": 1}\n{\"userId\": \"u0\"}\n";
  std::ofstream(dir / "in" / "notes.txt") << "not a query file\n";
  const Recommender r = make(gmf_model());
  const BatchStats stats = run_batch_infer(r, dir / "in", dir / "out", 1);
  EXPECT_EQ(stats.lines, 3u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "out"), fs::directory_iterator()), 2);
  std::ifstream a(dir / "out" / "a.json.out"), b(dir / "out" / "b.json.out");
  std::string line;
  ASSERT_TRUE(std::getline(a, line));
  EXPECT_EQ(items_of(json::parse(line)), (std::vector<std::string>{"i0"}));
  ASSERT_TRUE(std::getline(b, line));
  EXPECT_EQ(items_of(json::parse(line)), (std::vector<std::string>{"i1"}));
  // A folder input with a file for output is refused.
  std::ofstream(dir / "file.jsonl") << "";
  EXPECT_THROW(run_batch_infer(r, dir / "in", dir / "file.jsonl", 1), Error);
  fs::remove_all(dir);
}

// An output that names the input or a file of the model is refused before anything is loaded or
// written: the model stays whole.
TEST(Inference, AnOutputOverAnInputIsRefused) {
  const fs::path dir = fs::temp_directory_path() / ("tastebud-test-over-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "m");
  std::ofstream(dir / "m" / "model.bin") << "model bytes";
  std::ofstream(dir / "queries.jsonl") << "{\"userId\": \"u0\"}\n";
  const auto error_of = [](auto&& job) {
    try {
      job();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::ostringstream log;
  EXPECT_NE(error_of([&] { batch_infer(dir / "m", dir / "queries.jsonl", dir / "m" / "model.bin", {}, log); })
                .find(fmt::format("--output {}: is the model's model.bin", (dir / "m" / "model.bin").string())),
            std::string::npos);
  EXPECT_NE(error_of([&] { batch_infer(dir / "m", dir / "queries.jsonl", dir / "queries.jsonl", {}, log); })
                .find(": is the input"),
            std::string::npos);
  EXPECT_NE(error_of([&] { batch_segment(dir / "m", dir / "queries.jsonl", dir / "queries.jsonl", 5, false, 1, log, ""); })
                .find(": is the input"),
            std::string::npos);
  EXPECT_NE(error_of([&] { export_onnx(dir / "m", dir / "m" / "model.bin"); }).find("is the model's model.bin"),
            std::string::npos);
  EXPECT_EQ(read_file(dir / "m" / "model.bin"), "model bytes");
  EXPECT_EQ(read_file(dir / "queries.jsonl"), "{\"userId\": \"u0\"}\n");
  fs::remove_all(dir);
}

TEST(Inference, JobWritesEveryLineInOrderAndAtomically) {
  const fs::path dir = fs::temp_directory_path() / ("tastebud-test-infer-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream in(dir / "queries.jsonl");
    for (int k = 0; k < 5000; ++k) in << (k % 7 == 3 ? "{bad\n" : (k % 2 ? "{\"userId\": \"u1\"}\n" : "{\"userId\": \"u0\"}\n"));
    in << "\n";  // blank lines are skipped
  }
  const Recommender r = make(gmf_model());
  const BatchStats stats = run_batch_infer(r, dir / "queries.jsonl", dir / "out.jsonl", 2);
  EXPECT_EQ(stats.lines, 5000u);
  EXPECT_EQ(stats.errors, 714u);  // k % 7 == 3 for k < 5000
  std::ifstream out(dir / "out.jsonl");
  std::string line;
  int k = 0;
  while (std::getline(out, line)) {
    const json a = json::parse(line);
    if (k % 7 == 3) {
      EXPECT_FALSE(a.at("error").is_null());
    } else {
      EXPECT_EQ(a.at("input").at("userId"), k % 2 ? "u1" : "u0") << k;
    }
    ++k;
  }
  EXPECT_EQ(k, 5000);
  // Nothing but the input and the output remains: the temporary file was renamed.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 2);
  // More threads than any machine has are refused (libgomp once crashed on 100000).
  EXPECT_THROW(run_batch_infer(r, dir / "queries.jsonl", dir / "many.jsonl", 100000), Error);
  // An output naming a directory is refused up front, naming it.
  try {
    run_batch_infer(r, dir / "queries.jsonl", dir, 1);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
  // What a killed job left beside its output (a dead PID's temporary) goes with the next job.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const fs::path stale = dir / (".out.jsonl.tmp-" + std::to_string(dead));
  std::ofstream(stale) << "half";
  run_batch_infer(r, dir / "queries.jsonl", dir / "out.jsonl", 2);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 2);
  // A missing input fails and leaves no output behind.
  EXPECT_THROW(run_batch_infer(r, dir / "missing.jsonl", dir / "none.jsonl", 1), Error);
  EXPECT_FALSE(fs::exists(dir / "none.jsonl"));
  fs::remove_all(dir);
}

}  // namespace
// Users asking at once share a pass over the catalog: each gets exactly what it would alone,
// whatever the pass held; a bad user fails alone.
TEST(ScoreBatcher, ConcurrentUsersGetWhatEachGetsAlone) {
  ModelConfig c;
  c.kind = ModelKind::kGMF;
  c.num_users = 40;
  c.num_items = 301;
  c.factors = 66;
  ModelParams p = ModelParams::initialize(c, 5);
  const Scorer scorer(p);
  std::vector<std::vector<float>> alone(c.num_users, std::vector<float>(c.num_items));
  for (uint32_t u = 0; u < c.num_users; ++u) scorer.score_all(u, alone[u]);
  ScoreBatcher batcher(scorer, 8, 2);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, refused{0};
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> got;
      for (int k = 0; k < 60; ++k) {
        const uint32_t u = static_cast<uint32_t>((t * 7 + k * 13) % c.num_users);
        batcher.score(u, got);
        if (got != alone[u]) ++mismatches;
        if (k % 20 == 0) {
          try {
            batcher.score(c.num_users + 3, got);
          } catch (const Error&) {
            ++refused;
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(refused.load(), 12 * 3);
  EXPECT_GE(batcher.largest_pass(), 1u);
  EXPECT_LE(batcher.largest_pass(), 8u);
}

}  // namespace tastebud::host
