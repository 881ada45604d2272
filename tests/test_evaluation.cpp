// Evaluation a user can trust: bootstrap intervals with known answers, paired comparisons, and the
// managed service's offline split (--eval personalize) checked row by row.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <set>
#include <sstream>

#include "host/evaluation.h"
#include "host/inference.h"
#include "host/offline_eval.h"
#include "host/split.h"
#include "host/training.h"
#include "tastebud/datasets/import.h"
#include "tastebud/error.h"
#include "tastebud/philox.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;

UserValues one_column(const std::string& name, const std::vector<double>& per_user) {
  UserValues v;
  v.names = {name};
  v.values = per_user;
  return v;
}

TEST(Bootstrap, AConstantMetricHasAnIntervalOfZeroWidth) {
  const Metrics m = summarize(one_column("hr@10", std::vector<double>(50, 0.4)));
  EXPECT_DOUBLE_EQ(m.at("hr@10"), 0.4);
  EXPECT_DOUBLE_EQ(m.at("hr@10.lo"), 0.4);
  EXPECT_DOUBLE_EQ(m.at("hr@10.hi"), 0.4);
  EXPECT_EQ(m.at("eval_users"), 50.0);
}

// 400 users, a quarter of them hits: the percentile interval is the binomial one, about
// 0.25 +- 1.96 * sqrt(0.25 * 0.75 / 400) = [0.208, 0.292].
TEST(Bootstrap, AHitRateGetsTheBinomialInterval) {
  std::vector<double> hits(400, 0.0);
  for (size_t u = 0; u < hits.size(); u += 4) hits[u] = 1.0;
  const Metrics m = summarize(one_column("hr@10", hits));
  EXPECT_DOUBLE_EQ(m.at("hr@10"), 0.25);
  EXPECT_NEAR(m.at("hr@10.lo"), 0.208, 0.012);
  EXPECT_NEAR(m.at("hr@10.hi"), 0.292, 0.012);
  // Fixed seed: the same interval every run; another seed, another (close) one.
  EXPECT_EQ(summarize(one_column("hr@10", hits)), m);
  BootstrapOptions other;
  other.seed = 5;
  EXPECT_NE(summarize(one_column("hr@10", hits), other).at("hr@10.lo") + summarize(one_column("hr@10", hits), other).at("hr@10.hi"),
            m.at("hr@10.lo") + m.at("hr@10.hi"));
}

TEST(Bootstrap, CoverageIsTheShareOfTheCatalogInAnyList) {
  UserValues v;
  v.num_items = 10;
  v.add_list(std::vector<uint32_t>{0, 1}, std::vector<uint32_t>{1});
  v.add_list(std::vector<uint32_t>{1, 2}, std::vector<uint32_t>{7});
  const Metrics m = summarize(v);
  EXPECT_DOUBLE_EQ(m.at("coverage"), 0.3);
  EXPECT_LE(m.at("coverage.lo"), 0.3);
  EXPECT_GE(m.at("coverage.lo"), 0.2);  // a resample holds one or both users: 2 or 3 items
  EXPECT_DOUBLE_EQ(m.at("coverage.hi"), 0.3);
  EXPECT_DOUBLE_EQ(m.at("precision@5"), (1.0 / 5 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(m.at("mrr@25"), (0.5 + 0.0) / 2);
}

TEST(Bootstrap, PairedDifferencesOfTheSameUsers) {
  std::vector<double> a(200), b(200);
  for (size_t u = 0; u < a.size(); ++u) {
    a[u] = (u % 3 == 0) ? 1.0 : 0.0;
    b[u] = a[u] + 0.1;  // better by exactly 0.1 for every user
  }
  const Metrics better = compare_paired(one_column("ndcg@10", a), one_column("ndcg@10", b));
  EXPECT_NEAR(better.at("ndcg@10"), 0.1, 1e-12);
  EXPECT_NEAR(better.at("ndcg@10.lo"), 0.1, 1e-12);
  EXPECT_NEAR(better.at("ndcg@10.hi"), 0.1, 1e-12);
  EXPECT_EQ(better.at("ndcg@10.p"), 0.0);
  const Metrics same = compare_paired(one_column("ndcg@10", a), one_column("ndcg@10", a));
  EXPECT_EQ(same.at("ndcg@10"), 0.0);
  EXPECT_EQ(same.at("ndcg@10.p"), 1.0);
  // A difference of noise: users swap hits, the mean difference is 0 and p is large.
  std::vector<double> c(200);
  for (size_t u = 0; u < c.size(); ++u) c[u] = (u % 3 == 1) ? 1.0 : 0.0;
  EXPECT_GT(compare_paired(one_column("ndcg@10", a), one_column("ndcg@10", c)).at("ndcg@10.p"), 0.5);
  EXPECT_THROW(compare_paired(one_column("ndcg@10", a), one_column("ndcg@10", std::vector<double>(5))), Error);
}

TEST(Bootstrap, IntervalKeysAreTold) {
  EXPECT_TRUE(is_interval_key("hr@10.lo"));
  EXPECT_TRUE(is_interval_key("coverage.hi"));
  EXPECT_TRUE(is_interval_key("ndcg@10.p"));
  EXPECT_FALSE(is_interval_key("hr@10"));
  EXPECT_FALSE(is_interval_key("eval_users"));
}

// 300 users with 20 interactions each (items u..u+19 of 400, at increasing times) and one user
// with a single interaction.
class PersonalizeSplit : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("tastebud_test_evaluation_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    std::ofstream csv(root_ / "interactions.csv");
    csv << "USER_ID,ITEM_ID,TIMESTAMP\n";
    for (uint32_t u = 0; u < kUsers; ++u) {
      for (uint32_t k = 0; k < 20; ++k) csv << "u" << u << ",i" << (u + k) % 400 << "," << 1600000000 + 1000 * u + k << "\n";
    }
    csv << "lonely,i1,1700000000\n";
    csv.close();
    datasets::ImportOptions o;
    o.interactions = root_ / "interactions.csv";
    o.out = root_ / "dataset";
    datasets::import_dataset(o);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }
  static constexpr uint32_t kUsers = 300;
  static fs::path root_;
};
fs::path PersonalizeSplit::root_;

TEST_F(PersonalizeSplit, TenPercentOfUsersHoldOutTheirNewestTenPercent) {
  const datasets::Dataset d = datasets::Dataset::open(root_ / "dataset");
  SplitOptions o;
  o.protocol = parse_eval_protocol("personalize");
  const Split s = make_split(d, o);
  EXPECT_EQ(s.protocol, EvalProtocol::kPersonalize);
  EXPECT_TRUE(holds_out_newest(s.protocol));
  // Who is evaluated: the users whose split coin falls under 10%.
  std::set<uint32_t> expected;
  for (uint32_t u = 0; u < d.num_users(); ++u) {
    const uint32_t word = random_words(o.eval_seed, RandomStream::kSplit, 0, u).v[0];
    if (uniform_unit(word) < 0.1 && d.interactions.user_offsets[u + 1] - d.interactions.user_offsets[u] >= 2) {
      expected.insert(u);
    }
  }
  EXPECT_EQ(std::set<uint32_t>(s.eval_users.begin(), s.eval_users.end()), expected);
  EXPECT_GT(expected.size(), 15u);  // about 30 of 300
  EXPECT_LT(expected.size(), 50u);
  for (uint32_t u = 0; u < d.num_users(); ++u) {
    const uint64_t trained = s.train.user_offsets[u + 1] - s.train.user_offsets[u];
    const uint64_t had = d.interactions.user_offsets[u + 1] - d.interactions.user_offsets[u];
    EXPECT_EQ(trained, expected.count(u) ? had - 2 : had) << "user " << u;  // 10% of 20 held out
  }
  for (size_t k = 0; k < s.eval_users.size(); ++k) {
    const uint32_t u = s.eval_users[k];
    const uint64_t last = d.interactions.user_offsets[u + 1] - 1;
    // The truth: the user's two newest items.
    const std::vector<uint32_t> truth(s.truth.begin() + s.truth_offsets[k], s.truth.begin() + s.truth_offsets[k + 1]);
    std::vector<uint32_t> newest{d.interactions.item[last - 1], d.interactions.item[last]};
    std::sort(newest.begin(), newest.end());
    EXPECT_EQ(truth, newest) << "user " << u;
  }
  // Judged like holdout: the service's metrics, each with its interval.
  const Metrics m = evaluate_popularity(s);
  for (const char* key : {"coverage", "mrr@25", "ndcg@5", "ndcg@10", "ndcg@25", "precision@5", "precision@10",
                          "precision@25"}) {
    ASSERT_TRUE(m.count(key)) << key;
    EXPECT_LE(m.at(std::string(key) + ".lo"), m.at(key)) << key;
    EXPECT_GE(m.at(std::string(key) + ".hi"), m.at(key)) << key;
  }
  EXPECT_EQ(m.at("eval_users"), static_cast<double>(expected.size()));
}

TEST_F(PersonalizeSplit, UnknownProtocolNamesTheChoices) {
  try {
    parse_eval_protocol("personalise");
    FAIL() << "accepted an unknown protocol";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("personalize"), std::string::npos) << e.what();
  }
}

// Batch outputs of two systems judged against the same truth, with known answers.
class OfflineEvaluation : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tastebud_test_offline_eval_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write("truth.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,a,1\nu1,b,2\nu2,c,3\n");
    write("a.jsonl",
          "{\"input\": {\"userId\": \"u1\"}, \"output\": {\"recommendedItems\": [\"a\", \"x\", \"y\", \"z\", \"w\", \"b\"]}, \"error\": null}\n"
          "{\"input\": {\"itemId\": \"a\"}, \"output\": {\"recommendedItems\": [\"b\"]}, \"error\": null}\n"
          "{\"input\": {\"userId\": \"u2\"}, \"output\": null, \"error\": \"unknown\"}\n");
    write("b.jsonl",
          "{\"input\": {\"userId\": \"u1\"}, \"output\": {\"recommendedItems\": [\"b\", \"a\"]}, \"error\": null}\n"
          "{\"input\": {\"userId\": \"u2\"}, \"output\": {\"recommendedItems\": [\"c\"], \"scores\": [0.5]}, \"error\": null}\n");
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }
  OfflineEvalOptions options(std::vector<std::string> files) {
    OfflineEvalOptions o;
    for (const auto& f : files) o.predictions.push_back(dir_ / f);
    o.truth = dir_ / "truth.csv";
    return o;
  }
  std::string error_of(const OfflineEvalOptions& o) {
    try {
      evaluate_predictions(o);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  fs::path dir_;
};

TEST_F(OfflineEvaluation, KnownAnswersForOneSystem) {
  const Predictions p = read_predictions(dir_ / "a.jsonl");
  EXPECT_EQ(p.other_lines, 1u);
  EXPECT_EQ(p.failed_lines, 1u);
  const OfflineEvalReport r = evaluate_predictions(options({"a.jsonl"}));
  ASSERT_EQ(r.systems.size(), 1u);
  const Metrics& m = r.systems[0];
  EXPECT_EQ(r.truth_users, 2u);
  EXPECT_EQ(r.missing_users[0], 0u);  // u2's line failed: an empty list, not a missing user
  EXPECT_DOUBLE_EQ(m.at("precision@5"), (1.0 / 5 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(m.at("precision@10"), (2.0 / 10 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(m.at("mrr@25"), (1.0 + 0.0) / 2);
  const double ideal = 1.0 + 1.0 / std::log2(3.0);
  EXPECT_NEAR(m.at("ndcg@10"), ((1.0 + 1.0 / std::log2(7.0)) / ideal + 0.0) / 2, 1e-12);
  // Without a dataset the catalog is every item named: a, b, c, x, y, z, w; the lists hold six.
  EXPECT_DOUBLE_EQ(m.at("coverage"), 6.0 / 7.0);
  EXPECT_LE(m.at("precision@5.lo"), m.at("precision@5"));
  EXPECT_FALSE(m.count("novelty"));
}

TEST_F(OfflineEvaluation, TwoSystemsSideBySideWithAPairedTest) {
  const OfflineEvalReport r = evaluate_predictions(options({"a.jsonl", "b.jsonl"}));
  ASSERT_EQ(r.systems.size(), 2u);
  EXPECT_DOUBLE_EQ(r.systems[1].at("precision@5"), (2.0 / 5 + 1.0 / 5) / 2);
  EXPECT_DOUBLE_EQ(r.systems[1].at("mrr@25"), 1.0);
  EXPECT_NEAR(r.paired.at("precision@5"), 0.2, 1e-12);
  EXPECT_NEAR(r.paired.at("mrr@25"), 0.5, 1e-12);
  EXPECT_TRUE(r.paired.count("mrr@25.p"));
  std::ostringstream out;
  print_report(options({"a.jsonl", "b.jsonl"}), r, out);
  EXPECT_NE(out.str().find("second - first"), std::string::npos) << out.str();
}

TEST_F(OfflineEvaluation, BadFilesNameTheFileLineAndField) {
  write("broken.jsonl", "{\"input\": {\"userId\": \"u1\"}, \"output\": {\"recommendedItems\": []}}\nnot json\n");
  EXPECT_NE(error_of(options({"broken.jsonl"})).find("broken.jsonl:2: not JSON"), std::string::npos);
  // A 100,000-deep line is refused before it is parsed (its copy would overflow the stack).
  write("deep.jsonl", std::string(100000, '[') + std::string(100000, ']') + "\n");
  EXPECT_NE(error_of(options({"deep.jsonl"})).find("deep.jsonl:1: JSON nested deeper than 64 levels"),
            std::string::npos);
  write("layout.jsonl", "{\"input\": {\"userId\": \"u1\"}, \"output\": {\"items\": []}}\n");
  EXPECT_NE(error_of(options({"layout.jsonl"})).find("layout.jsonl:1: \"output\" has no \"recommendedItems\""),
            std::string::npos);
  write("truth.csv", "USER_ID,ITEM\nu1,a\n");
  EXPECT_NE(error_of(options({"a.jsonl"})).find("needs USER_ID and ITEM_ID columns; it has USER_ID, ITEM"),
            std::string::npos);
  write("truth.csv", "user_id,item_id\nu1,a\nu2,\n");
  const std::string empty = error_of(options({"a.jsonl"}));
  EXPECT_NE(empty.find("truth.csv: line 3"), std::string::npos) << empty;
  EXPECT_NE(empty.find("item_id"), std::string::npos) << empty;
}

TEST_F(OfflineEvaluation, TheCommandLineTakesTheIssuesFlags) {
  const std::string command = std::string(TASTEBUD_BINARY) + " evaluate --predictions " + (dir_ / "a.jsonl").string() +
                              " --predictions " + (dir_ / "b.jsonl").string() + " --truth " +
                              (dir_ / "truth.csv").string() + " > " + (dir_ / "out.txt").string() + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::ifstream in(dir_ / "out.txt");
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(out.find("precision@10"), std::string::npos) << out;
  EXPECT_NE(out.find("2 users in"), std::string::npos) << out;
}

// With the dataset: novelty, diversity and the share of cold items. The PersonalizeSplit dataset
// has 319 items (i0..i318), all with interactions; "nowhere" is not in its catalog.
TEST_F(PersonalizeSplit, EvaluateWithTheDatasetAddsBeyondAccuracyMetrics) {
  const fs::path dir = root_ / "beyond";
  fs::create_directories(dir);
  std::ofstream(dir / "truth.csv") << "USER_ID,ITEM_ID\nu1,i5\n";
  std::ofstream(dir / "p.jsonl") << "{\"input\": {\"userId\": \"u1\"}, \"output\": {\"recommendedItems\": [\"i5\", \"nowhere\"]}}\n";
  OfflineEvalOptions o;
  o.predictions = {dir / "p.jsonl"};
  o.truth = dir / "truth.csv";
  o.data = root_ / "dataset";
  const Metrics m = evaluate_predictions(o).systems.at(0);
  EXPECT_DOUBLE_EQ(m.at("cold_share"), 0.5);  // "nowhere" has no interactions
  EXPECT_EQ(m.at("diversity"), 0.0);         // no item metadata in this dataset
  // i5 was touched by users u0..u5, 6 of 301; "nowhere" by none: -log2(7/302) and -log2(1/302),
  // averaged (add-one smoothing).
  EXPECT_NEAR(m.at("novelty"), (-std::log2(7.0 / 302) - std::log2(1.0 / 302)) / 2, 1e-9);
  EXPECT_DOUBLE_EQ(m.at("coverage"), 1.0 / 319);  // the catalog is the dataset's 319 items
}

// The validation split lives inside the test split's training rows: it never trains on, nor is
// judged by, a row the test split holds out, and its own held-out rows leave its training set.
TEST_F(PersonalizeSplit, ValidationIsCarvedFromTrainingRowsOnly) {
  const datasets::Dataset d = datasets::Dataset::open(root_ / "dataset");
  for (const char* protocol : {"loo", "holdout", "personalize"}) {
    SplitOptions o;
    o.protocol = parse_eval_protocol(protocol);
    o.record_held_out_rows = true;
    const Split test = make_split(d, o);
    const Split validation = make_validation_split(d, o, test, 50);
    ASSERT_FALSE(validation.eval_users.empty()) << protocol;
    EXPECT_LE(validation.eval_users.size(), o.protocol == EvalProtocol::kPersonalize ? 50u : 60u) << protocol;
    EXPECT_NE(validation.eval_users, test.eval_users) << protocol;
    auto trains = [](const Split& s, uint32_t u, uint32_t item) {
      const auto begin = s.train.item.begin() + s.train.user_offsets[u], end = s.train.item.begin() + s.train.user_offsets[u + 1];
      return std::binary_search(begin, end, item);
    };
    uint64_t held = 0;
    for (uint32_t u = 0; u < d.num_users(); ++u) {
      for (uint64_t r = d.interactions.user_offsets[u]; r < d.interactions.user_offsets[u + 1]; ++r) {
        if (!test.held_out_rows[r]) continue;
        ++held;
        EXPECT_FALSE(trains(validation, u, d.interactions.item[r])) << protocol << ": a test row trains";
      }
      // The validation's training set is a subset of the test split's.
      for (uint64_t p = validation.train.user_offsets[u]; p < validation.train.user_offsets[u + 1]; ++p) {
        EXPECT_TRUE(trains(test, u, validation.train.item[p])) << protocol;
      }
    }
    EXPECT_GT(held, 0u) << protocol;
    for (size_t k = 0; k < validation.eval_users.size(); ++k) {
      const uint32_t u = validation.eval_users[k];
      if (o.protocol == EvalProtocol::kLeaveOneOut) {
        EXPECT_FALSE(trains(validation, u, validation.held_out_item[k])) << protocol;
        EXPECT_TRUE(trains(test, u, validation.held_out_item[k])) << protocol << ": validation truth is a training row";
      } else {
        for (uint64_t t = validation.truth_offsets[k]; t < validation.truth_offsets[k + 1]; ++t) {
          EXPECT_FALSE(trains(validation, u, validation.truth[t])) << protocol;
          EXPECT_TRUE(trains(test, u, validation.truth[t])) << protocol << ": validation truth is a training row";
        }
      }
    }
  }
}

// The training job keeps the epoch the validation users like best, whatever the test users say,
// and logs both; without a validation split the test split chooses.
TEST_F(PersonalizeSplit, TheValidationSplitChoosesTheEpoch) {
  TrainJob j;
  j.data = root_ / "dataset";
  j.out = root_ / "chosen";
  j.epochs = 4;
  j.batch_size = 256;
  j.lr = 0.01f;
  j.progress = false;
  j.validation_users = 100;
  std::ostringstream log;
  const TrainResult r = run_training(j, log);
  size_t best = 0;
  for (size_t e = 0; e < r.history.size(); ++e) {
    ASSERT_TRUE(r.history[e].metrics.count("val.hr@10")) << log.str();
    ASSERT_TRUE(r.history[e].metrics.count("hr@10")) << log.str();
    if (r.history[e].metrics.at("val.hr@10") > r.history[best].metrics.at("val.hr@10")) best = e;
  }
  EXPECT_EQ(r.best_epoch, best + 1) << log.str();
  EXPECT_NE(log.str().find("validation: "), std::string::npos) << log.str();
  // config.json checks itself: a changed value is a corrupt file, not a silently different model.
  const fs::path config = root_ / "chosen" / "config.json";
  std::string text;
  {
    std::ifstream in(config);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_NO_THROW(load_model_dir(root_ / "chosen"));
  const size_t at = text.find("\"batch_size\": 256");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 17, "\"batch_size\": 257");
  std::ofstream(config) << text;
  try {
    load_model_dir(root_ / "chosen");
    ADD_FAILURE() << "a changed config.json loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt: "), std::string::npos) << e.what();
  }
  j.out = root_ / "on-test";
  j.validation_users = 0;
  const TrainResult t = run_training(j, log);
  EXPECT_FALSE(t.history[0].metrics.count("val.hr@10"));
}

}  // namespace
}  // namespace tastebud::host
