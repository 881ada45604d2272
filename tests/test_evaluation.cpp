// Evaluation a user can trust: bootstrap intervals with known answers, paired comparisons, and the
// managed service's offline split (--eval personalize) checked row by row.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "host/evaluation.h"
#include "host/split.h"
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

}  // namespace
}  // namespace tastebud::host
