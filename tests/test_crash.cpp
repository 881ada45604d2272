// Crash consistency (issue 15): the command line killed with SIGKILL at pseudo-random moments of an
// import, an incremental import, a training run and a batch job. Whenever the kill lands, what a
// reader finds is the old state or the new one, never half of one; the next run removes what the
// killed one left and (training) resumes. The delays come from a fixed seed; the property holds
// for any delay, so the test is not timing-dependent.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "host/inference.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/engine/model_io.h"
#include "run_cli.h"

namespace tastebud {
namespace {

namespace fs = std::filesystem;

int kills = 0;  // runs that were killed rather than finished, reported per test

// Runs `tastebud ARGS` in a child and kills it after `delay` (unless it ended first). True when it
// ran to completion with exit status 0.
bool run_and_kill(const std::vector<std::string>& args, std::chrono::microseconds delay) {
  const pid_t child = testing_cli::spawn_cli(args);
  const auto deadline = std::chrono::steady_clock::now() + delay;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(child, &status, WNOHANG) == child) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, &status, 0);
  kills += WIFSIGNALED(status);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// How long an uninterrupted run takes: kill delays are drawn below it, so that the kills land
// inside the job on a fast machine and a slow one alike.
std::chrono::microseconds duration_of(const std::vector<std::string>& args) {
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(run_and_kill(args, std::chrono::seconds(120)));
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
}

std::chrono::microseconds within(std::mt19937& random, std::chrono::microseconds span) {
  return std::chrono::microseconds(random() % std::max<int64_t>(span.count(), 1));
}

// Entries of `dir` that a writer left: hidden temporaries (".X.tmp-PID-...") and older names.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp") != std::string::npos || name.find(".old-") != std::string::npos) out.push_back(name);
  }
  return out;
}

class Crash : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("tastebud_test_crash_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    datasets::GeneratorOptions g;
    g.users = 400;
    g.items = 150;
    g.interactions = 10000;
    g.seed = 7;
    csv_ = datasets::generate_shop(g, root_ / "shop");
    g.seed = 8;
    batch_ = datasets::generate_shop(g, root_ / "batch");
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::vector<std::string> full_import(const fs::path& out) {
    return {"import", "--interactions", csv_.interactions.string(), "--items", csv_.items.string(), "--out",
            out.string(), "--overwrite", "--quiet"};
  }

  static fs::path root_;
  static datasets::CsvFiles csv_, batch_;
};
fs::path Crash::root_;
datasets::CsvFiles Crash::csv_, Crash::batch_;

TEST_F(Crash, KilledImportsLeaveTheOldDatasetOrTheNew) {
  const fs::path out = root_ / "data" / "ds";
  ASSERT_TRUE(run_and_kill(full_import(out), std::chrono::seconds(60)));
  const uint64_t old_rows = datasets::Dataset::open(out).interactions.size();
  const std::vector<std::string> incremental{"import", "--mode", "incremental", "--interactions",
                                             batch_.interactions.string(), "--out", out.string(), "--quiet"};
  ASSERT_TRUE(run_and_kill(incremental, std::chrono::seconds(60)));
  const uint64_t new_rows = datasets::Dataset::open(out).interactions.size();
  ASSERT_GT(new_rows, old_rows);
  std::mt19937 random(15);
  const auto import_time = duration_of(incremental);
  ASSERT_TRUE(run_and_kill(full_import(out), std::chrono::seconds(60)));
  kills = 0;
  for (int trial = 0; trial < 6; ++trial) {
    ASSERT_TRUE(run_and_kill(full_import(out), std::chrono::seconds(60)));  // back to the old state
    const bool full = trial % 2 == 0;
    run_and_kill(full ? full_import(out) : incremental, within(random, import_time));
    const uint64_t now = datasets::Dataset::open(out).interactions.size();  // it opens: never half
    if (full) {
      EXPECT_EQ(now, old_rows) << "trial " << trial;  // the same rows, old or new
    } else {
      EXPECT_TRUE(now == old_rows || now == new_rows) << "trial " << trial << ": " << now;
    }
  }
  // The next import removes what the killed ones left beside the dataset.
  ASSERT_TRUE(run_and_kill(full_import(out), std::chrono::seconds(60)));
  EXPECT_TRUE(leftovers(out.parent_path()).empty()) << leftovers(out.parent_path()).front();
  RecordProperty("killed", kills);
  std::cout << kills << " of 6 imports killed midway\n";
}

TEST_F(Crash, KilledTrainingResumesAndKilledBatchJobsLeaveNoHalfOutput) {
  const fs::path data = root_ / "train_data";
  ASSERT_TRUE(run_and_kill(full_import(data), std::chrono::seconds(60)));
  std::mt19937 random(16);
  auto train_into = [&](const fs::path& model) {
    return std::vector<std::string>{"train", "--data", data.string(), "--out", model.string(), "--epochs", "3",
                                    "--factors", "4", "--layers", "8,4", "--eval", "none"};
  };
  const auto training_time = duration_of(train_into(root_ / "model_timed"));
  kills = 0;
  for (int trial = 0; trial < 3; ++trial) {
    const fs::path model = root_ / ("model" + std::to_string(trial));
    const std::vector<std::string> train = train_into(model);
    run_and_kill(train, within(random, training_time));
    if (fs::exists(model / "model.bin")) {
      EXPECT_NO_THROW(load_model(model / "model.bin"));
    }
    std::vector<std::string> again = train;
    if (fs::exists(model / "checkpoint.bin")) again.push_back("--resume");
    ASSERT_TRUE(run_and_kill(again, std::chrono::seconds(120))) << "trial " << trial;
    EXPECT_NO_THROW(host::load_model_dir(model));
    EXPECT_TRUE(leftovers(model).empty()) << leftovers(model).front();
  }
  // A batch job killed midway leaves no output, or the whole of it.
  const fs::path queries = root_ / "queries.jsonl", output = root_ / "answers" / "out.jsonl";
  {
    std::ofstream q(queries);
    for (int k = 0; k < 5000; ++k) q << "{\"userId\": \"u" << k % 500 << "\"}\n";
  }
  fs::create_directories(output.parent_path());
  const std::vector<std::string> job{"batch-infer", "--model", (root_ / "model0").string(), "--input", queries.string(),
                                     "--output", output.string(), "--device", "cpu"};
  const auto job_time = duration_of(job);
  for (int trial = 0; trial < 3; ++trial) {
    fs::remove(output);
    run_and_kill(job, within(random, job_time));
    if (fs::exists(output)) {
      std::ifstream in(output);
      std::string line;
      int lines = 0;
      while (std::getline(in, line)) ++lines;
      EXPECT_EQ(lines, 5000) << "trial " << trial;
    }
    ASSERT_TRUE(run_and_kill(job, std::chrono::seconds(120)));
    EXPECT_TRUE(leftovers(output.parent_path()).empty()) << leftovers(output.parent_path()).front();
  }
  RecordProperty("killed", kills);
  std::cout << kills << " of 6 training runs and batch jobs killed midway\n";
}

// The ids of a model directory's users.
std::vector<std::string> model_user_ids(const fs::path& model) {
  return host::load_model_dir(model).user_ids;
}

// A process id that no longer runs: a child that has exited and been reaped.
long dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

// delete-users --model killed at seeded moments: what the killed run left beside the dataset or
// the model (a rebuilt or swapped-out copy, with the deleted users in it) is gone after the rerun,
// and the users are gone from the model. A dead writer's copy is also planted beside the model, so
// the check does not depend on where the kills land.
TEST_F(Crash, KilledDeletionsLeaveNoCopyOfTheDeletedUsers) {
  const fs::path pristine = root_ / "deletion";
  // The dataset and the model in directories of their own: each one's cleanup must find its own.
  ASSERT_TRUE(run_and_kill(full_import(pristine / "data" / "ds"), std::chrono::seconds(60)));
  ASSERT_TRUE(run_and_kill({"train", "--data", (pristine / "data" / "ds").string(), "--out",
                            (pristine / "models" / "m").string(),
                            "--epochs", "1", "--factors", "4", "--layers", "8,4", "--eval", "none"},
                           std::chrono::seconds(120)));
  const std::vector<std::string> before = model_user_ids(pristine / "models" / "m");
  const std::string gone = before[3];
  std::ofstream(root_ / "gone.csv") << "USER_ID\n" << gone << "\n" << before[4] << "\n";
  auto deletion = [&](const fs::path& dir) {
    return std::vector<std::string>{"delete-users", "--data", (dir / "data" / "ds").string(),
                                    "--users", (root_ / "gone.csv").string(), "--model",
                                    (dir / "models" / "m").string()};
  };
  fs::copy(pristine, root_ / "deletion_timed", fs::copy_options::recursive);
  const auto deletion_time = duration_of(deletion(root_ / "deletion_timed"));
  std::mt19937 random(26);
  kills = 0;
  for (int trial = 0; trial < 4; ++trial) {
    const fs::path dir = root_ / ("deletion" + std::to_string(trial));
    fs::copy(pristine, dir, fs::copy_options::recursive);
    run_and_kill(deletion(dir), within(random, deletion_time));
    fs::copy(pristine / "models" / "m", dir / "models" / fmt::format(".m.tmp-{}-0", dead_pid()),
             fs::copy_options::recursive);
    ASSERT_TRUE(run_and_kill(deletion(dir), std::chrono::seconds(60))) << "trial " << trial;
    for (const char* sub : {"data", "models"})
      EXPECT_TRUE(leftovers(dir / sub).empty()) << leftovers(dir / sub).front();
    const std::vector<std::string> after = model_user_ids(dir / "models" / "m");
    EXPECT_EQ(after.size(), before.size() - 2) << "trial " << trial;
    EXPECT_EQ(std::find(after.begin(), after.end(), gone), after.end()) << "trial " << trial;
  }
  std::cout << kills << " of 4 deletions killed midway\n";
}

}  // namespace
}  // namespace tastebud
