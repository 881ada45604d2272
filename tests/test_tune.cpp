// tastebud tune: successive halving on the validation split, never the test rows.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "host/split.h"
#include "host/tune.h"
#include "tastebud/datasets/import.h"
#include "tastebud/error.h"
#include "run_cli.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// 60 users with 8 distinct items each out of 150 (an Items file fixes the item indices; 150 leave
// 99 untouched candidates per user); with
// `other_truth`, each user's latest interaction, the row leave-one-out holds out for the test, is
// with another item the user never touched, at the same time.
fs::path make_dataset(const fs::path& dir, bool other_truth) {
  fs::create_directories(dir);
  std::ofstream items(dir / "items.csv");
  items << "ITEM_ID\n";
  for (int i = 0; i < 150; ++i) items << "i" << i << "\n";
  items.close();
  std::ofstream csv(dir / "interactions.csv");
  csv << "USER_ID,ITEM_ID,TIMESTAMP\n";
  for (int u = 0; u < 60; ++u) {
    for (int k = 0; k < 8; ++k) {
      const int item = k == 7 && other_truth ? (3 * u + 75) % 150 : (3 * u + k) % 150;
      csv << "u" << u << ",i" << item << "," << 1600000000 + 100 * u + k << "\n";
    }
  }
  csv.close();
  datasets::ImportOptions o;
  o.interactions = dir / "interactions.csv";
  o.items = dir / "items.csv";
  o.out = dir / "dataset";
  datasets::import_dataset(o);
  return dir / "dataset";
}

class Tune : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tastebud_test_tune_" + std::to_string(::getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  TuneOptions options(const fs::path& data, const std::string& out) {
    TuneOptions o;
    o.base.data = data;
    o.base.batch_size = 64;
    o.base.validation_users = 30;
    o.base.threads = 1;
    o.out = root_ / out;
    o.trials = 4;
    o.max_epochs = 2;
    o.reduction = 2;
    return o;
  }
  fs::path root_;
};

// Two datasets that differ only in the rows the test split holds out give the same trials, to the
// last digit: the search never evaluates, trains on or draws candidates from a test row.
TEST_F(Tune, NeverReadsTheTestRows) {
  const fs::path a = make_dataset(root_ / "a", false), b = make_dataset(root_ / "b", true);
  SplitOptions split;
  const Split test_a = make_split(datasets::Dataset::open(a), split), test_b = make_split(datasets::Dataset::open(b), split);
  ASSERT_EQ(test_a.eval_users, test_b.eval_users);
  ASSERT_NE(test_a.held_out_item, test_b.held_out_item);  // the test truth differs
  // What a trial trains on and is judged by is the same split, candidates included.
  split.record_held_out_rows = true;
  const Split held_a = make_split(datasets::Dataset::open(a), split), held_b = make_split(datasets::Dataset::open(b), split);
  const Split val_a = make_validation_split(datasets::Dataset::open(a), split, held_a, 30);
  const Split val_b = make_validation_split(datasets::Dataset::open(b), split, held_b, 30);
  EXPECT_EQ(val_a.eval_users, val_b.eval_users);
  EXPECT_EQ(val_a.held_out_item, val_b.held_out_item);
  EXPECT_EQ(val_a.candidates, val_b.candidates);
  EXPECT_EQ(val_a.train.item, val_b.train.item);
  EXPECT_EQ(val_a.train.user, val_b.train.user);
  std::ostringstream log;
  const TuneResult ra = run_tune(options(a, "tune-a"), log), rb = run_tune(options(b, "tune-b"), log);
  const std::string table = read(root_ / "tune-a" / "trials.tsv");
  EXPECT_EQ(table, read(root_ / "tune-b" / "trials.tsv")) << log.str();
  EXPECT_EQ(read(root_ / "tune-a" / "best.toml"), read(root_ / "tune-b" / "best.toml"));
  EXPECT_EQ(ra.metric, "val.hr@10");
  EXPECT_GT(ra.trials[ra.best].value, 0.0);  // the validation metric measures something
  (void)rb;
  EXPECT_NE(table.find("val.hr@10"), std::string::npos);
}

// Successive halving: every trial trains the first rung, half of them the second; the best trial
// is the best validation value, and its job file names its configuration.
TEST_F(Tune, HalvesTheTrialsAndWritesTheBestJob) {
  const fs::path a = make_dataset(root_ / "a", false);
  std::ostringstream log;
  const TuneResult r = run_tune(options(a, "tune"), log);
  ASSERT_EQ(r.trials.size(), 4u);
  int second_rung = 0;
  for (const Trial& t : r.trials) {
    EXPECT_GE(t.epochs, 1u);
    second_rung += t.epochs == 2;
    EXPECT_LE(t.value, r.trials[r.best].value);
    EXPECT_EQ(t.stopped, t.epochs == 1);
  }
  EXPECT_EQ(second_rung, 2);
  const Trial& best = r.trials[r.best];
  EXPECT_EQ(best.epochs, 2u);
  const std::string toml = read(root_ / "tune" / "best.toml");
  EXPECT_NE(toml.find("factors = " + std::to_string(best.factors)), std::string::npos) << toml;
  EXPECT_NE(toml.find("negatives = " + std::to_string(best.negatives)), std::string::npos) << toml;
  // Deterministic for a seed.
  const Trial again = draw_trial(1, best.id);
  EXPECT_EQ(again.lr, best.lr);
  EXPECT_EQ(again.factors, best.factors);
}

// The sequence model's search: its own space (width, blocks, dropout, negatives, lr), halved the
// same way, and a best job that `tastebud train --config` takes as it is.
TEST_F(Tune, SearchesTheSequenceModel) {
  const fs::path a = make_dataset(root_ / "a", false);
  TuneOptions o = options(a, "tune");
  o.base.model = "sasrec";
  o.base.max_sequence = 8;
  o.base.batch_size = 16;
  std::ostringstream log;
  const TuneResult r = run_tune(o, log);
  ASSERT_EQ(r.trials.size(), 4u);
  for (const Trial& t : r.trials) {
    EXPECT_TRUE(t.sequence);
    EXPECT_TRUE(t.hidden == 32 || t.hidden == 64 || t.hidden == 128) << t.hidden;
    EXPECT_TRUE(t.blocks >= 1 && t.blocks <= 3) << t.blocks;
    EXPECT_TRUE(t.dropout >= 0.09f && t.dropout <= 0.51f) << t.dropout;
    EXPECT_LE(t.value, r.trials[r.best].value);
  }
  EXPECT_GT(r.trials[r.best].value, 0.0) << log.str();
  const Trial& best = r.trials[r.best];
  EXPECT_EQ(best.epochs, 2u);
  const std::string toml = read(root_ / "tune" / "best.toml");
  EXPECT_NE(toml.find("model = \"sasrec\""), std::string::npos) << toml;
  EXPECT_NE(toml.find("hidden = " + std::to_string(best.hidden)), std::string::npos) << toml;
  EXPECT_NE(toml.find("blocks = " + std::to_string(best.blocks)), std::string::npos) << toml;
  EXPECT_NE(read(root_ / "tune" / "trials.tsv").find("\thidden\tblocks\tdropout\t"), std::string::npos);
  std::string out;
  EXPECT_EQ(testing_cli::run_cli("train --config " + (root_ / "tune" / "best.toml").string() + " --data " + a.string() +
                                     " --out " + (root_ / "best").string() + " --epochs 1 --no-progress",
                                 &out),
            0)
      << out;
  EXPECT_NE(out.find("hidden " + std::to_string(best.hidden)), std::string::npos) << out;
}

TEST_F(Tune, RefusesASearchWithoutAValidationSplit) {
  const fs::path a = make_dataset(root_ / "a", false);
  TuneOptions o = options(a, "none");
  o.base.validation_users = 0;
  EXPECT_THROW(run_tune(o, std::cout), Error);
  o = options(a, "none");
  o.base.eval = "none";
  EXPECT_THROW(run_tune(o, std::cout), Error);
}

// --time-budget 0s meant no budget at all; a duration must be positive.
TEST(TuneFlags, AZeroTimeBudgetIsRefused) {
  for (const char* budget : {"0s", "0", "-5m"}) {
    std::string out;
    EXPECT_EQ(testing_cli::run_cli(std::string("tune --data /nonexistent --time-budget ") + budget, &out), 1);
    EXPECT_NE(out.find("expected a positive duration"), std::string::npos) << budget << ": " << out;
  }
}

}  // namespace
}  // namespace tastebud::host
