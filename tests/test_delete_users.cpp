// delete-users (issue 12): after a deletion no file of the dataset, nor of the model scrubbed with
// --model, holds a deleted id; the other users keep their interactions, metadata and rows; batch
// jobs answer a deleted user as an unknown one; each deletion leaves one audit line without ids.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "host/inference.h"
#include "host/scrub_model.h"
#include "host/training.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/delete_users.h"
#include "tastebud/datasets/import.h"
#include "tastebud/directory_lock.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"
#include "run_cli.h"

namespace tastebud {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kGone = {"gone-alice-7f3e", "gone-bob-91ac"};

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

using testing_cli::run_cli;

// Files under dir whose bytes contain `needle`.
std::vector<std::string> files_holding(const fs::path& dir, const std::string& needle) {
  std::vector<std::string> found;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    if (read_file(entry.path()).find(needle) != std::string::npos)
      found.push_back(entry.path().string());
  }
  return found;
}

// Each user's (item, timestamp) events by external ids.
std::map<std::string, std::vector<std::pair<std::string, int64_t>>> events_by_user(
    const datasets::Dataset& d) {
  std::map<std::string, std::vector<std::pair<std::string, int64_t>>> out;
  const auto& in = d.interactions;
  for (size_t r = 0; r < in.size(); ++r) {
    out[std::string(d.user_ids[in.user[r]])].emplace_back(std::string(d.item_ids[in.item[r]]),
                                                          in.timestamp[r]);
  }
  return out;
}

class DeleteUsers : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("tastebud_test_delete_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    // 30 users (two of them to be deleted) with metadata, 20 items, impressions and a context
    // field.
    std::string users = "USER_ID,AGE,MEMBERSHIP\n", items = "ITEM_ID,GENRES,PRICE\n";
    std::string interactions = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,DEVICE_TYPE,IMPRESSION\n";
    std::vector<std::string> ids;
    for (int u = 0; u < 28; ++u) ids.push_back("user" + std::to_string(u));
    ids.insert(ids.begin() + 5, kGone[0]);
    ids.insert(ids.begin() + 17, kGone[1]);
    for (size_t u = 0; u < ids.size(); ++u)
      users += fmt::format("{},{},{}\n", ids[u], 20 + u, u % 3 ? "gold" : "basic");
    for (int i = 0; i < 20; ++i)
      items += fmt::format("item{},{},{}.5\n", i, i % 2 ? "a|b" : "c", i);
    for (size_t u = 0; u < ids.size(); ++u) {
      for (int k = 0; k < 8; ++k) {
        const int item = static_cast<int>((u * 7 + k * 3) % 20);
        interactions += fmt::format("{},item{},{},{},{},item{}|item{}\n", ids[u], item,
                                    1700000000 + u * 100 + k, k % 3 ? "click" : "purchase",
                                    k % 2 ? "mobile" : "desktop", (item + 1) % 20, (item + 2) % 20);
      }
    }
    write_text(root_ / "users.csv", users);
    write_text(root_ / "items.csv", items);
    write_text(root_ / "interactions.csv", interactions);
    datasets::ImportOptions o;
    o.interactions = root_ / "interactions.csv";
    o.users = root_ / "users.csv";
    o.items = root_ / "items.csv";
    o.out = root_ / "dataset";
    datasets::import_dataset(o);
    write_text(root_ / "gone.csv", "USER_ID,REASON\n" + kGone[0] + ",asked\n" + kGone[1] +
                                       ",asked\nnobody-here,asked\n");
  }
  void TearDown() override { fs::remove_all(root_); }

  // `tastebud delete-users` of gone.csv's users from the dataset and the model; the exit status.
  int delete_gone_users(std::string* out) const {
    return run_cli(fmt::format("delete-users --data {} --users {} --model {}", (root_ / "dataset").string(),
                               (root_ / "gone.csv").string(), (root_ / "model").string()),
                   out);
  }

  void train(const std::string& metadata) {
    host::TrainJob j;
    j.data = root_ / "dataset";
    j.out = root_ / "model";
    j.epochs = 2;
    j.eval = "loo";
    j.validation_users = 0;
    j.metadata = metadata;
    j.progress = false;
    std::ostringstream log;
    host::run_training(j, log);
  }

  fs::path root_;
};

TEST_F(DeleteUsers, NoFileOfTheDatasetOrTheModelHoldsADeletedId) {
  train("users");
  for (const std::string& id : kGone) {
    ASSERT_FALSE(files_holding(root_ / "dataset", id).empty())
        << "the test must start with the ids present";
    ASSERT_FALSE(files_holding(root_ / "model", id).empty());
  }
  std::string out;
  ASSERT_EQ(delete_gone_users(&out), 0) << out;
  EXPECT_NE(out.find("deleted 2 of 3 users (16 interactions)"), std::string::npos) << out;
  for (const std::string& id : kGone) {
    EXPECT_EQ(files_holding(root_ / "dataset", id), std::vector<std::string>{}) << id;
    EXPECT_EQ(files_holding(root_ / "model", id), std::vector<std::string>{}) << id;
  }
}

TEST_F(DeleteUsers, OtherUsersKeepTheirEventsMetadataAndRows) {
  train("none");
  const datasets::Dataset before = datasets::Dataset::open(root_ / "dataset");
  const auto events_before = events_by_user(before);
  std::map<std::string, float> age_before;
  for (uint32_t u = 0; u < before.num_users(); ++u)
    age_before[std::string(before.user_ids[u])] = before.users.numerical[0].values[u];
  const ModelParams params_before = load_model(root_ / "model" / "model.bin");
  const std::vector<std::string> model_ids_before =
      host::read_ids(root_ / "model" / "user_ids.json");

  const std::vector<std::string> ids = datasets::read_user_id_list(root_ / "gone.csv");
  const datasets::DeleteUsersReport report = datasets::delete_users(root_ / "dataset", ids);
  EXPECT_EQ(report.requested, 3u);
  EXPECT_EQ(report.users_deleted, 2u);
  EXPECT_EQ(report.interactions_deleted, 16u);
  const host::ScrubReport scrubbed = host::scrub_users_from_model(root_ / "model", ids);
  EXPECT_EQ(scrubbed.users_removed, 2u);

  const datasets::Dataset after = datasets::Dataset::open(root_ / "dataset");
  EXPECT_EQ(after.num_users(), before.num_users() - 2);
  EXPECT_EQ(after.num_items(), before.num_items());
  auto expected = events_before;
  for (const std::string& id : kGone) expected.erase(id);
  EXPECT_EQ(events_by_user(after), expected);
  for (uint32_t u = 0; u < after.num_users(); ++u) {
    EXPECT_EQ(after.users.numerical[0].values[u], age_before.at(std::string(after.user_ids[u])));
    EXPECT_EQ(after.interactions.impression_offsets.empty(),
              before.interactions.impression_offsets.empty());
  }
  // The model's rows of the kept users, by id, bit for bit.
  const ModelParams params_after = load_model(root_ / "model" / "model.bin");
  const std::vector<std::string> model_ids_after =
      host::read_ids(root_ / "model" / "user_ids.json");
  ASSERT_EQ(model_ids_after.size(), model_ids_before.size() - 2);
  ASSERT_EQ(params_after.config.num_users, model_ids_after.size());
  const auto row_of = host::index_ids(model_ids_before);
  const uint64_t f = params_after.user_gmf.cols(), e = params_after.user_mlp.cols();
  for (uint32_t u = 0; u < model_ids_after.size(); ++u) {
    const uint32_t old = row_of.at(model_ids_after[u]);
    for (uint64_t c = 0; c < f; ++c)
      ASSERT_EQ(params_after.user_gmf.values[u * f + c],
                params_before.user_gmf.values[old * f + c]);
    for (uint64_t c = 0; c < e; ++c)
      ASSERT_EQ(params_after.user_mlp.values[u * e + c],
                params_before.user_mlp.values[old * e + c]);
  }
  EXPECT_EQ(params_after.head_weight.values, params_before.head_weight.values);
  // The model directory still loads whole (checksums, seen lists of the kept users).
  const host::ModelData model = host::load_model_dir(root_ / "model");
  EXPECT_EQ(model.seen.offsets.size(), model.user_ids.size() + 1);
}

TEST_F(DeleteUsers, BatchJobsAnswerADeletedUserAsAnUnknownOne) {
  train("users");
  write_text(root_ / "queries.jsonl",
             "{\"userId\": \"" + kGone[0] + "\"}\n{\"userId\": \"user3\"}\n");
  std::string out;
  ASSERT_EQ(delete_gone_users(&out), 0) << out;
  ASSERT_EQ(run_cli(fmt::format("batch-infer --model {} --input {} --output {} --device cpu",
                                (root_ / "model").string(), (root_ / "queries.jsonl").string(),
                                (root_ / "results.jsonl").string()),
                    &out),
            0)
      << out;
  std::ifstream in(root_ / "results.jsonl");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(json::parse(line)["output"].value("reason", ""), "unknown user: the most popular items")
      << line;
  std::getline(in, line);
  EXPECT_FALSE(json::parse(line)["output"].contains("reason")) << line;
}

TEST_F(DeleteUsers, EachDeletionLeavesOneAuditLineWithoutIdsThatImportsKeep) {
  datasets::delete_users(root_ / "dataset", {kGone[0]});
  datasets::delete_users(root_ / "dataset", {kGone[1], "nobody-here"});
  // An incremental import rebuilds the directory; the log goes with it.
  write_text(root_ / "more.csv",
             "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,DEVICE_TYPE,IMPRESSION\nuser1,item3,1800000000,"
             "click,mobile,\n");
  datasets::ImportOptions o;
  o.interactions = root_ / "more.csv";
  o.out = root_ / "dataset";
  o.mode = datasets::ImportMode::Incremental;
  datasets::import_dataset(o);
  std::ifstream in(root_ / "dataset" / "deletions.jsonl");
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["users_deleted"], 1);
  EXPECT_EQ(lines[0]["interactions_deleted"], 8);
  EXPECT_EQ(lines[1]["users_requested"], 2);
  EXPECT_EQ(lines[1]["users_deleted"], 1);
  EXPECT_EQ(lines[1]["dataset"], fs::absolute(root_ / "dataset").lexically_normal().string());
  EXPECT_TRUE(lines[1].contains("time"));
  const std::string log = read_file(root_ / "dataset" / "deletions.jsonl");
  for (const std::string& id : kGone) EXPECT_EQ(log.find(id), std::string::npos);
  EXPECT_EQ(log.find("nobody-here"), std::string::npos);
}

// A --model it cannot scrub (busy, not a model) is found before the dataset is rewritten and
// before the deletion is logged as done.
TEST_F(DeleteUsers, AModelItCannotReachLeavesTheDatasetAsItWas) {
  train("none");
  std::string out;
  {
    const DirectoryLock busy(root_ / "model", "a training run");
    EXPECT_EQ(delete_gone_users(&out), 1) << out;
    EXPECT_NE(out.find("in use by PID"), std::string::npos) << out;
  }
  fs::create_directories(root_ / "not_a_model");
  EXPECT_EQ(run_cli(fmt::format("delete-users --data {} --users {} --model {}",
                                (root_ / "dataset").string(), (root_ / "gone.csv").string(),
                                (root_ / "not_a_model").string()),
                    &out),
            1);
  EXPECT_NE(out.find("not a model directory (no config.json)"), std::string::npos) << out;
  EXPECT_EQ(datasets::Dataset::open(root_ / "dataset").num_users(), 30u);
  EXPECT_FALSE(fs::exists(root_ / "dataset" / "deletions.jsonl"));
}

// A retrain directory, its `current` link or one of its versions: every version is scrubbed, so a
// rollback cannot serve a deleted user again.
TEST_F(DeleteUsers, EveryVersionOfARetrainDirectoryIsScrubbed) {
  train("none");
  const fs::path models = root_ / "models";
  fs::create_directories(models / "versions");
  for (const char* version : {"000001", "000002", "000003"})
    fs::copy(root_ / "model", models / "versions" / version, fs::copy_options::recursive);
  fs::create_directory_symlink(fs::path("versions") / "000003", models / "current");
  std::string out;
  ASSERT_EQ(run_cli(fmt::format("delete-users --data {} --users {} --model {}",
                                (root_ / "dataset").string(), (root_ / "gone.csv").string(),
                                (models / "current").string()),
                    &out),
            0)
      << out;
  for (const std::string& id : kGone)
    EXPECT_EQ(files_holding(models, id), std::vector<std::string>{}) << id << "\n" << out;
  for (const char* version : {"000001", "000002", "000003"})
    EXPECT_NO_THROW(host::load_model_dir(models / "versions" / version)) << version;
}

// A 700 dataset and model with 600 files stay so after delete-users rewrites them.
TEST_F(DeleteUsers, TheOwnersModesStay) {
  train("none");
  for (const char* dir : {"dataset", "model"}) {
    for (const auto& e : fs::recursive_directory_iterator(root_ / dir)) {
      fs::permissions(e.path(), e.is_directory() ? fs::perms::owner_all
                                                 : fs::perms::owner_read | fs::perms::owner_write);
    }
    fs::permissions(root_ / dir, fs::perms::owner_all);
  }
  std::string out;
  ASSERT_EQ(delete_gone_users(&out), 0) << out;
  for (const char* dir : {"dataset", "model"}) {
    EXPECT_EQ(fs::status(root_ / dir).permissions(), fs::perms::owner_all) << dir;
    for (const auto& e : fs::recursive_directory_iterator(root_ / dir)) {
      EXPECT_EQ(e.status().permissions(), e.is_directory() ? fs::perms::owner_all
                                                           : fs::perms::owner_read | fs::perms::owner_write)
          << e.path();
    }
  }
}

TEST_F(DeleteUsers, BadIdFilesAreRefusedWithFileLineAndField) {
  write_text(root_ / "no_column.csv", "ID\nuser1\n");
  try {
    datasets::read_user_id_list(root_ / "no_column.csv");
    FAIL() << "a file without USER_ID must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              (root_ / "no_column.csv").string() + ":1: the header has no USER_ID column");
  }
  write_text(root_ / "empty_id.csv", "USER_ID,REASON\nuser1,x\n,y\n");
  try {
    datasets::read_user_id_list(root_ / "empty_id.csv");
    FAIL() << "an empty id must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              (root_ / "empty_id.csv").string() + ":3: field 1 (USER_ID) is empty");
  }
  write_text(root_ / "two_columns.csv", "USER_ID,user_id\nuser1,user2\n");
  try {
    datasets::read_user_id_list(root_ / "two_columns.csv");
    FAIL() << "two USER_ID columns must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), (root_ / "two_columns.csv").string() +
                                         ":1: field 2 (USER_ID): the column appears twice in the header");
  }
  std::string out;
  EXPECT_EQ(run_cli(fmt::format("delete-users --data {} --users {}", (root_ / "dataset").string(),
                                (root_ / "no_column.csv").string()),
                    &out),
            1);
  EXPECT_NE(out.find("the header has no USER_ID column"), std::string::npos) << out;
  EXPECT_EQ(datasets::Dataset::open(root_ / "dataset").num_users(), 30u);  // untouched
}

}  // namespace
}  // namespace tastebud
