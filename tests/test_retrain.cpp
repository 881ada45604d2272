// Retraining (issue 12): a warm start keeps the rows of the ids the parent knew, matched by id and
// never by index; update mode trains the new and changed rows only; retrain promotes a candidate
// by its threshold, keeps K versions, and leaves `current` untouched when any step fails.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "host/features.h"
#include "host/inference.h"
#include "host/model_dir.h"
#include "host/retrain.h"
#include "host/scrub_model.h"
#include "host/sequence_training.h"
#include "host/training.h"
#include "host/warm_start.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/delete_users.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/engine/backends.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/engine/param_layout.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"
#include "training_sets.h"
#include "run_cli.h"

namespace tastebud {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing_cli::run_cli;
using testing_cli::spawn_cli;

// Row `row` of an id table.
std::vector<float> row_of(const Tensor& t, uint64_t row) {
  const uint64_t w = t.cols();
  return {t.values.begin() + row * w, t.values.begin() + (row + 1) * w};
}

class Retrain : public ::testing::Test {
 protected:
  // A shop split by time: old.csv (the first 90% of its events), new.csv (the rest), and
  // shuffled.csv (every event, lines in reverse order: a full import of it gives other indices).
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("tastebud_test_retrain_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    datasets::GeneratorOptions g;
    g.users = 300;
    g.items = 120;
    g.interactions = 9000;
    g.clusters = 4;
    g.seed = 5;
    const datasets::CsvFiles csv = datasets::generate_shop(g, root_ / "shop");
    std::ifstream in(csv.interactions);
    std::string header, line;
    std::getline(in, header);
    std::vector<std::pair<int64_t, std::string>> rows;
    const size_t column = [&] {
      std::stringstream fields(header);
      std::string name;
      for (size_t k = 0; std::getline(fields, name, ','); ++k)
        if (name == "TIMESTAMP") return k;
      return size_t{0};
    }();
    while (std::getline(in, line)) {
      std::stringstream fields(line);
      std::string value;
      for (size_t k = 0; k <= column; ++k) std::getline(fields, value, ',');
      rows.emplace_back(std::stoll(value), line);
    }
    std::stable_sort(rows.begin(), rows.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    const size_t cut = rows.size() * 9 / 10;
    cut_time_ = rows[cut - 1].first;
    {
      std::ofstream old_csv(root_ / "old.csv"), new_csv(root_ / "new.csv"),
          all(root_ / "shuffled.csv"), extra(root_ / "extra.csv");
      old_csv << header << "\n";
      new_csv << header << "\n";
      all << header << "\n";
      for (size_t r = 0; r < rows.size(); ++r) {
        const bool later = rows[r].first > cut_time_;
        (later ? new_csv : old_csv) << rows[r].second << "\n";
      }
      for (size_t r = rows.size(); r-- > 0;) all << rows[r].second << "\n";
      // A few users and items that only the new rows know.
      new_csv << "newcomer-1,newitem-1," << cut_time_ + 10 << ",purchase,,desktop\n";
      new_csv << "newcomer-1,i3," << cut_time_ + 11 << ",view,,desktop\n";
      new_csv << "newcomer-2,newitem-1," << cut_time_ + 12 << ",view,,mobile\n";
      all << "newcomer-1,newitem-1," << cut_time_ + 10 << ",purchase,,desktop\n";
      // Later still: a batch for a second refresh.
      extra << header << "\n"
            << "u7,i9," << rows.back().first + 100 << ",purchase,,desktop\n"
            << "u8,newitem-2," << rows.back().first + 200 << ",view,,mobile\n";
    }  // the files are whole before they are imported
    header_ = header;
    import(root_ / "old.csv", root_ / "base", datasets::ImportMode::Full);
    parent_ = root_ / "parent";
    std::ostringstream log;
    host::run_training(job(root_ / "base", parent_), log);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static void import(const fs::path& csv, const fs::path& out, datasets::ImportMode mode) {
    datasets::ImportOptions o;
    o.interactions = csv;
    o.out = out;
    o.mode = mode;
    datasets::import_dataset(o);
  }

  static host::TrainJob job(const fs::path& data, const fs::path& out) {
    host::TrainJob j;
    j.data = data;
    j.out = out;
    j.epochs = 2;
    j.batch_size = 512;
    j.lr = 0.005f;
    j.validation_users = 0;
    j.threads = 2;
    j.progress = false;
    return j;
  }

  // A copy of the base dataset with new.csv imported incrementally.
  static fs::path updated_dataset(const std::string& name) {
    const fs::path d = root_ / name;
    fs::copy(root_ / "base", d, fs::copy_options::recursive);
    import(root_ / "new.csv", d, datasets::ImportMode::Incremental);
    return d;
  }

  static fs::path root_, parent_;
  static int64_t cut_time_;
  static std::string header_;
};
fs::path Retrain::root_, Retrain::parent_;
int64_t Retrain::cut_time_ = 0;
std::string Retrain::header_;

TEST_F(Retrain, WarmStartKeepsOldRowsByIdEvenWhenIndicesShift) {
  import(root_ / "shuffled.csv", root_ / "shuffled", datasets::ImportMode::Full);
  const datasets::Dataset dataset = datasets::Dataset::open(root_ / "shuffled");
  const host::ParentModel parent = host::load_parent_model(parent_);
  ASSERT_TRUE(parent.optimizer_state);
  ModelConfig config = parent.state.params.config;
  config.num_users = dataset.num_users();
  config.num_items = dataset.num_items();
  const TrainState fresh = TrainState::fresh(ModelParams::initialize(config, 1), OptimizerParams{});
  uint32_t kept_users = 0, kept_items = 0;
  const TrainState warm =
      host::warm_start_state(parent, fresh, dataset, "adam", &kept_users, &kept_items);
  const auto parent_users = host::index_ids(parent.user_ids);
  const auto parent_items = host::index_ids(parent.item_ids);
  uint32_t known_users = 0, known_items = 0;
  for (uint32_t u = 0; u < dataset.num_users(); ++u)
    known_users += parent_users.contains(std::string(dataset.user_ids[u]));
  for (uint32_t i = 0; i < dataset.num_items(); ++i)
    known_items += parent_items.contains(std::string(dataset.item_ids[i]));
  EXPECT_EQ(kept_users, known_users);
  EXPECT_EQ(kept_items, known_items);
  EXPECT_LT(known_users, dataset.num_users());  // newcomer-1 is new
  EXPECT_LT(known_items, dataset.num_items());  // newitem-1 is new
  uint32_t shifted = 0;
  const ModelParams& was = parent.state.params;
  for (uint32_t u = 0; u < dataset.num_users(); ++u) {
    const auto it = parent_users.find(std::string(dataset.user_ids[u]));
    if (it == parent_users.end()) {
      EXPECT_EQ(row_of(warm.params.user_gmf, u), row_of(fresh.params.user_gmf, u));
      EXPECT_EQ(row_of(warm.params.user_mlp, u), row_of(fresh.params.user_mlp, u));
      continue;
    }
    shifted += it->second != u;
    ASSERT_EQ(row_of(warm.params.user_gmf, u), row_of(was.user_gmf, it->second))
        << dataset.user_ids[u];
    ASSERT_EQ(row_of(warm.params.user_mlp, u), row_of(was.user_mlp, it->second));
    // The optimizer state of the same row comes along (tensor 0 is the user GMF table).
    ASSERT_EQ(row_of(warm.state0[0], u), row_of(parent.state.state0[0], it->second));
  }
  EXPECT_GT(shifted, dataset.num_users() / 2) << "the reversed file must give other indices";
  for (uint32_t i = 0; i < dataset.num_items(); ++i) {
    const auto it = parent_items.find(std::string(dataset.item_ids[i]));
    const Tensor& expected = it == parent_items.end() ? fresh.params.item_gmf : was.item_gmf;
    ASSERT_EQ(row_of(warm.params.item_gmf, i),
              row_of(expected, it == parent_items.end() ? i : it->second));
  }
  EXPECT_EQ(warm.params.head_weight.values, was.head_weight.values);
  EXPECT_EQ(warm.params.weights[0].values, was.weights[0].values);
  EXPECT_EQ(warm.step, parent.state.step);
}

TEST_F(Retrain, WarmStartRecordsItsParentAndDataset) {
  const fs::path data = updated_dataset("recorded_data");
  host::TrainJob j = job(data, root_ / "recorded");
  j.warm_start = parent_;
  j.epochs = 1;
  std::ostringstream log;
  host::run_training(j, log);
  EXPECT_NE(log.str().find("warm start from"), std::string::npos) << log.str();
  const json config = json::parse(read_file(root_ / "recorded" / "config.json"));
  const json parent_config = json::parse(read_file(parent_ / "config.json"));
  EXPECT_EQ(config["parent"]["path"], fs::canonical(parent_).string());
  EXPECT_EQ(config["parent"]["config_crc32"], parent_config["checksums"]["config.json"]);
  EXPECT_EQ(config["parent"]["dataset"]["last_timestamp"], cut_time_);
  EXPECT_EQ(config["dataset"]["path"], fs::absolute(data).lexically_normal().string());
  EXPECT_GT(config["dataset"]["last_timestamp"].get<int64_t>(), cut_time_);
  EXPECT_EQ(config["dataset"]["interactions"], datasets::Dataset::open(data).interactions.size());
}

TEST_F(Retrain, AnotherShapeIsRefusedNamingWhatDiffers) {
  host::TrainJob j = job(root_ / "base", root_ / "wider");
  j.warm_start = parent_;
  j.factors = 16;
  j.model = "gmf";
  std::ostringstream log;
  try {
    host::run_training(j, log);
    FAIL() << "a model of another shape must be refused";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("model neumf (this run: gmf)"), std::string::npos) << message;
    EXPECT_NE(message.find("factors 8 (this run: 16)"), std::string::npos) << message;
    EXPECT_EQ(message.find("layers 64"), std::string::npos)
        << "the layers are the same: " << message;
  }
  std::string out;
  EXPECT_EQ(run_cli(fmt::format("train --data {} --out {} --update", (root_ / "base").string(),
                                (root_ / "no_parent").string()),
                    &out),
            1);
  EXPECT_NE(out.find("--update needs --warm-start MODEL_DIR"), std::string::npos) << out;
  // --device cuda takes update mode to the GPU; without one it says why.
  std::string reason;
  const bool gpu = cuda_available(&reason);
  EXPECT_EQ(
      run_cli(
          fmt::format("train --data {} --out {} --warm-start {} --update --device cuda --epochs 1",
                      updated_dataset("cuda_data").string(), (root_ / "on_cuda").string(),
                      parent_.string()),
          &out),
      gpu ? 0 : 1) << out;
  if (!gpu) {
    EXPECT_NE(out.find("--device cuda: " + reason), std::string::npos) << out;
  }
}

// A CATEGORY_L1 field over the shop's items: i % 3 picks books, games or toys; `first` (when not
// empty) is listed before them, and the items are listed in reverse order, so that a full import
// of this file gives the field's values other indices than the parent's.
void write_items(const fs::path& path, const std::string& first) {
  std::ofstream out(path);
  out << "ITEM_ID,CATEGORY_L1,PRICE\n";
  if (!first.empty()) out << first << "\n";
  const char* categories[] = {"books", "games", "toys"};
  for (int k = 0; k < 120; ++k) {
    const int i = first.empty() ? k : 119 - k;
    out << "i" << i << "," << categories[i % 3] << "," << 1 + i << "\n";
  }
}

TEST_F(Retrain, MetadataRowsFollowTheirValuesWhenTheVocabularyGrows) {
  write_items(root_ / "items_old.csv", "");
  write_items(root_ / "items_new.csv", "newitem-1,garden,5");
  datasets::ImportOptions o;
  o.interactions = root_ / "old.csv";
  o.items = root_ / "items_old.csv";
  o.out = root_ / "meta_base";
  datasets::import_dataset(o);
  host::TrainJob j = job(root_ / "meta_base", root_ / "meta_parent");
  j.epochs = 1;
  j.metadata = "items";
  std::ostringstream log;
  host::run_training(j, log);
  const host::ParentModel parent = host::load_parent_model(root_ / "meta_parent");
  const std::vector<std::string> old_values = {"books", "games", "toys"};
  ASSERT_EQ(parent.vocabularies["item"]["CATEGORY_L1"], json(old_values));
  // A full import of every event with a fourth category listed first: other value indices.
  o.interactions = root_ / "shuffled.csv";
  o.items = root_ / "items_new.csv";
  o.out = root_ / "meta_grown";
  datasets::import_dataset(o);
  const datasets::Dataset dataset = datasets::Dataset::open(root_ / "meta_grown");
  ModelConfig config = parent.state.params.config;
  config.num_users = dataset.num_users();
  config.num_items = dataset.num_items();
  config.item_features = host::make_feature_spec(dataset.items, j.text_buckets, "item");
  ASSERT_EQ(config.item_features.categorical_rows.front(), 4u);
  const TrainState fresh = TrainState::fresh(ModelParams::initialize(config, 9), OptimizerParams{});
  const TrainState warm = host::warm_start_state(parent, fresh, dataset, "adam", nullptr, nullptr);
  const Tensor& was = parent.state.params.item_features;
  const Tensor& now = warm.params.item_features;
  const ParamLayout layout(config);
  size_t table = 0;
  while (layout[table].role != TensorRole::kItemFeatures) ++table;
  const datasets::StringTable& values = dataset.items.categorical.front().vocabulary;
  ASSERT_EQ(values[0], "garden");
  for (uint32_t v = 0; v < values.size(); ++v) {
    const auto known = std::find(old_values.begin(), old_values.end(), values[v]);
    if (known == old_values.end()) {
      EXPECT_EQ(row_of(now, v), row_of(fresh.params.item_features, v)) << values[v] << " is new";
    } else {
      EXPECT_EQ(row_of(now, v), row_of(was, known - old_values.begin())) << values[v];
      EXPECT_EQ(row_of(warm.state1[table], v),
                row_of(parent.state.state1[table], known - old_values.begin()))
          << values[v] << ": its optimizer state comes along";
    }
  }
  EXPECT_EQ(warm.params.item_numeric.values, parent.state.params.item_numeric.values);
  // From the command line the grown vocabulary trains instead of being refused as another shape.
  std::string out;
  EXPECT_EQ(run_cli(fmt::format("train --data {} --out {} --warm-start {} --metadata items "
                                "--epochs 1 --validation-users 0 --device cpu --no-progress",
                                (root_ / "meta_grown").string(), (root_ / "meta_warm").string(),
                                (root_ / "meta_parent").string()),
                    &out),
            0)
      << out;
  // A parent that does not record its values (trained before vocabularies.json) matches its
  // table row by row, so a grown vocabulary is still another shape.
  host::ParentModel unrecorded = parent;
  unrecorded.vocabularies = nullptr;
  try {
    host::check_same_shape(unrecorded, config);
    FAIL() << "a grown vocabulary without the parent's values must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("item metadata CATEGORY_L1 (3 values)"), std::string::npos)
        << e.what();
  }
}

TEST_F(Retrain, UpdateWithNothingChangedIsANoOp) {
  // The parent's own dataset: no new id and no interaction after its dataset's end.
  std::string out;
  const fs::path out_dir = root_ / "not_updated";
  ASSERT_EQ(run_cli(fmt::format("train --data {} --out {} --warm-start {} --update --epochs 2 "
                                "--validation-users 0 --device cpu --no-progress",
                                (root_ / "base").string(), out_dir.string(), parent_.string()),
                    &out),
            0)
      << out;
  EXPECT_NE(out.find("nothing changed since the parent model; nothing to train"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(out_dir)) << "nothing trained, so no model directory";
}

TEST_F(Retrain, UpdateTrainsChangedRowsAndFreezesTheRest) {
  const fs::path data = updated_dataset("update_data");
  std::string out;
  ASSERT_EQ(
      run_cli(fmt::format(
                  "train --data {} --out {} --warm-start {} --update --epochs 2 --batch-size 512 "
                  "--lr 0.005 --validation-users 0 --device cpu --no-progress",
                  data.string(), (root_ / "updated").string(), parent_.string()),
              &out),
      0)
      << out;
  EXPECT_NE(out.find("every other row and the dense layers stay frozen"), std::string::npos) << out;
  const datasets::Dataset dataset = datasets::Dataset::open(data);
  std::set<std::string> changed_users, changed_items;
  for (size_t r = 0; r < dataset.interactions.size(); ++r) {
    if (dataset.interactions.timestamp[r] <= cut_time_) continue;
    changed_users.insert(std::string(dataset.user_ids[dataset.interactions.user[r]]));
    changed_items.insert(std::string(dataset.item_ids[dataset.interactions.item[r]]));
  }
  ASSERT_GT(changed_users.size(), 5u);
  const ModelParams before = load_model(parent_ / "model.bin");
  const ModelParams after = load_model(root_ / "updated" / "model.bin");
  const auto parent_users = host::index_ids(host::read_ids(parent_ / "user_ids.json"));
  const auto parent_items = host::index_ids(host::read_ids(parent_ / "item_ids.json"));
  uint32_t frozen = 0, moved = 0;
  for (uint32_t u = 0; u < dataset.num_users(); ++u) {
    const std::string id(dataset.user_ids[u]);
    const auto it = parent_users.find(id);
    if (changed_users.contains(id)) {
      if (it == parent_users.end()) continue;
      EXPECT_NE(row_of(after.user_gmf, u), row_of(before.user_gmf, it->second))
          << id << " changed and must train";
      ++moved;
    } else {
      ASSERT_EQ(row_of(after.user_gmf, u), row_of(before.user_gmf, it->second))
          << id << " must stay frozen";
      ASSERT_EQ(row_of(after.user_mlp, u), row_of(before.user_mlp, it->second)) << id;
      ++frozen;
    }
  }
  EXPECT_GT(frozen, 0u);
  EXPECT_GT(moved, 0u);
  for (uint32_t i = 0; i < dataset.num_items(); ++i) {
    const std::string id(dataset.item_ids[i]);
    if (changed_items.contains(id)) continue;
    ASSERT_EQ(row_of(after.item_gmf, i), row_of(before.item_gmf, parent_items.at(id))) << id;
    ASSERT_EQ(row_of(after.item_mlp, i), row_of(before.item_mlp, parent_items.at(id))) << id;
  }
  for (size_t j = 0; j < before.weights.size(); ++j) {
    EXPECT_EQ(after.weights[j].values, before.weights[j].values);
    EXPECT_EQ(after.biases[j].values, before.biases[j].values);
  }
  EXPECT_EQ(after.head_weight.values, before.head_weight.values);
  EXPECT_EQ(after.head_bias.values, before.head_bias.values);
}

// The CPU backend's mask on its own: users and items that train in every batch but are not
// flagged keep their rows and optimizer state bit for bit, and so do the dense layers.
TEST(UpdateMask, FrozenRowsAndDenseLayersStayBitIdentical) {
  const TrainingSet data = testing_data::banded_training_set(41, 37);
  ModelConfig config;
  config.num_users = data.num_users;
  config.num_items = data.num_items;
  const TrainState start = TrainState::fresh(ModelParams::initialize(config, 3), OptimizerParams{});
  TrainOptions options;
  options.batch_size = 64;
  options.threads = 2;
  testing_data::freeze_all_but_some_rows(options, data);
  auto backend = make_cpu_backend(data, options, start);
  backend->train_epoch(0, {});
  backend->train_epoch(1, {});
  const TrainState end = backend->state();
  for (uint32_t u = 0; u < data.num_users; ++u) {
    if (options.trainable_users[u]) {
      EXPECT_NE(row_of(end.params.user_gmf, u), row_of(start.params.user_gmf, u))
          << "user " << u << " trains";
    } else {
      ASSERT_EQ(row_of(end.params.user_gmf, u), row_of(start.params.user_gmf, u)) << "user " << u;
      ASSERT_EQ(row_of(end.params.user_mlp, u), row_of(start.params.user_mlp, u)) << "user " << u;
      ASSERT_EQ(row_of(end.state0[0], u), row_of(start.state0[0], u)) << "user " << u;
    }
  }
  for (uint32_t i = 0; i < data.num_items; ++i) {
    if (options.trainable_items[i]) {
      EXPECT_NE(row_of(end.params.item_gmf, i), row_of(start.params.item_gmf, i))
          << "item " << i << " trains";
    } else {
      ASSERT_EQ(row_of(end.params.item_mlp, i), row_of(start.params.item_mlp, i)) << "item " << i;
    }
  }
  for (size_t j = 0; j < start.params.weights.size(); ++j)
    EXPECT_EQ(end.params.weights[j].values, start.params.weights[j].values);
  EXPECT_EQ(end.params.head_weight.values, start.params.head_weight.values);
  // Without the mask the same epochs move every row: the comparison above can fail.
  TrainOptions plain;
  plain.batch_size = 64;
  plain.threads = 2;
  auto unmasked = make_cpu_backend(data, plain, start);
  unmasked->train_epoch(0, {});
  EXPECT_NE(row_of(unmasked->state().params.user_gmf, 1), row_of(start.params.user_gmf, 1));
  EXPECT_NE(unmasked->state().params.head_weight.values, start.params.head_weight.values);
}

class RetrainJobs : public Retrain {
 protected:
  host::RetrainJob retrain(const std::string& models, const std::vector<fs::path>& interactions) {
    host::RetrainJob r;
    r.data = root_ / (models + "_data");
    r.models = root_ / models;
    r.interactions = interactions;
    r.train = job({}, {});
    return r;
  }
  // A small sasrec model's retrain job.
  host::RetrainJob sasrec_retrain(const std::string& models, const std::vector<fs::path>& interactions) {
    host::RetrainJob r = retrain(models, interactions);
    r.train.model = "sasrec";
    r.train.hidden = 16;
    r.train.blocks = 1;
    r.train.max_sequence = 12;
    r.train.batch_size = 32;
    return r;
  }
  static fs::path current_target(const fs::path& models) {
    return fs::read_symlink(models / "current");
  }
  static std::vector<json> log_lines(const fs::path& models) {
    std::ifstream in(models / "retrain.jsonl");
    std::vector<json> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
    return lines;
  }
  static std::vector<std::string> versions(const fs::path& models) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(models / "versions"))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

TEST_F(RetrainJobs, AFailureAtAnyStepLeavesCurrentUntouched) {
  std::ostringstream log;
  host::RetrainJob first = retrain("failing", {root_ / "old.csv"});
  EXPECT_EQ(host::run_retrain(first, log).decision,
            "promoted");  // the first run trains from scratch
  const fs::path target = current_target(first.models);
  EXPECT_EQ(target, fs::path("versions") / "000001");
  const std::string model_bytes = read_file(first.models / "current" / "model.bin");
  for (const char* failing_step : {"train", "evaluate", "promote"}) {
    host::RetrainJob next = retrain("failing", {});
    next.before_step = [&](const std::string& step) {
      if (step == failing_step) throw Error(fmt::format("injected failure before {}", step));
    };
    EXPECT_THROW(host::run_retrain(next, log), Error) << failing_step;
    EXPECT_EQ(current_target(first.models), target) << failing_step;
    EXPECT_EQ(read_file(first.models / "current" / "model.bin"), model_bytes);
    EXPECT_EQ(versions(first.models), std::vector<std::string>{"000001"}) << failing_step;
    const json last = log_lines(first.models).back();
    EXPECT_EQ(last["decision"], "failed");
    EXPECT_EQ(last["error"], fmt::format("injected failure before {}", failing_step));
  }
  // From the command line: a candidate whose training diverges fails the job, and current stays.
  std::string out;
  EXPECT_EQ(
      run_cli(fmt::format("retrain --data {} --models {} --interactions {} --lr 1e30 --epochs 1 "
                          "--validation-users 0",
                          first.data.string(), first.models.string(), (root_ / "new.csv").string()),
              &out),
      1);
  EXPECT_NE(out.find("NaN or infinite"), std::string::npos) << out;
  EXPECT_EQ(current_target(first.models), target);
  EXPECT_EQ(read_file(first.models / "current" / "model.bin"), model_bytes);
  EXPECT_EQ(versions(first.models), std::vector<std::string>{"000001"});
}

TEST_F(RetrainJobs, PromotesByThresholdAndKeepsTheNewestVersions) {
  std::ostringstream log;
  host::RetrainJob first = retrain("promoting", {root_ / "old.csv"});
  first.keep = 2;
  host::run_retrain(first, log);
  // A threshold no candidate can meet: refused, current stays, the candidate goes.
  host::RetrainJob strict = retrain("promoting", {root_ / "new.csv"});
  strict.max_regression = -1.0;
  strict.keep = 2;
  const host::RetrainResult refused = host::run_retrain(strict, log);
  EXPECT_EQ(refused.decision, "refused");
  EXPECT_EQ(current_target(first.models), fs::path("versions") / "000001");
  EXPECT_EQ(versions(first.models), std::vector<std::string>{"000001"});
  json last = log_lines(first.models).back();
  EXPECT_EQ(last["decision"], "refused");
  EXPECT_EQ(last["metric"], "hr@10");
  EXPECT_EQ(last["candidate_metrics"]["hr@10"], refused.candidate_metrics.at("hr@10"));
  EXPECT_EQ(last["current_metrics"]["hr@10"], refused.current_metrics.at("hr@10"));
  EXPECT_EQ(last["mode"], "warm-start");
  // Any candidate meets a threshold of 1: promoted three times; the newest two versions stay.
  std::string newest;
  for (int k = 0; k < 3; ++k) {
    host::RetrainJob easy = retrain(
        "promoting", k == 2 ? std::vector<fs::path>{root_ / "extra.csv"} : std::vector<fs::path>{});
    easy.max_regression = 1.0;
    easy.keep = 2;
    easy.train.update = k == 2;
    const host::RetrainResult promoted = host::run_retrain(easy, log);
    EXPECT_EQ(promoted.decision, "promoted");
    newest = promoted.candidate.filename().string();
  }
  EXPECT_EQ(log_lines(first.models).back()["mode"], "update");
  EXPECT_EQ(current_target(first.models), fs::path("versions") / newest);
  const std::vector<std::string> kept = versions(first.models);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept.back(), newest);
  EXPECT_EQ(log_lines(first.models).size(), 5u);
  // Every version's config records the one it started from.
  const json config = json::parse(read_file(first.models / "current" / "config.json"));
  EXPECT_EQ(config["parent"]["path"],
            fs::canonical(first.models / "versions" / kept.front()).string());
}

// The sequence model retrains like the others: from scratch the first time, then warm-started from
// current with current's shape and settings (nothing given), both judged on the updated dataset's
// split by reading each user's events before the held-out one. An update with nothing new leaves
// current as it is.
TEST_F(RetrainJobs, RetrainsTheSequenceModel) {
  std::ostringstream log;
  host::RetrainJob first = sasrec_retrain("sequence", {root_ / "old.csv"});
  ASSERT_EQ(host::run_retrain(first, log).decision, "promoted") << log.str();
  host::RetrainJob next = retrain("sequence", {root_ / "new.csv"});
  next.given = [](const std::string&) { return false; };  // every setting the current model's
  next.max_regression = 1.0;
  const host::RetrainResult result = host::run_retrain(next, log);
  EXPECT_EQ(result.decision, "promoted") << log.str();
  EXPECT_GT(result.candidate_metrics.at("hr@10"), 0.2);  // 0.1: ten of 100 items at random
  std::printf("[ retrain ] sasrec candidate hr@10 %.4f, current %.4f\n", result.candidate_metrics.at("hr@10"), result.current_metrics.at("hr@10"));
  EXPECT_GT(result.current_metrics.at("hr@10"), 0.2);
  EXPECT_NE(result.candidate_metrics.at("hr@10"), result.current_metrics.at("hr@10"));
  EXPECT_NE(log.str().find("warm start from"), std::string::npos) << log.str();
  const json line = log_lines(first.models).back();
  EXPECT_EQ(line["mode"], "warm-start");
  const json config = json::parse(read_file(first.models / "current" / "config.json"));
  EXPECT_EQ(config["sequence"]["hidden"], 16);
  EXPECT_EQ(config["sequence"]["max_sequence"], 12);
  host::RetrainJob update = retrain("sequence", {});
  update.given = next.given;
  update.train.update = true;
  EXPECT_EQ(host::run_retrain(update, log).decision, "unchanged") << log.str();
}

// --update of a sasrec model: the changed users' sequences train the changed items' rows alone
// (newitem-1 among them); every other item row, the positions and the blocks stay the parent's
// bits, and the parent's metadata is already folded into the rows it carries.
TEST_F(RetrainJobs, AnUpdateOfTheSequenceModelTrainsTheChangedItemsAlone) {
  std::ostringstream log;
  host::RetrainJob first = sasrec_retrain("sequence-update", {root_ / "old.csv"});
  ASSERT_EQ(host::run_retrain(first, log).decision, "promoted") << log.str();
  const fs::path parent = fs::canonical(first.models / "current");
  host::RetrainJob update = retrain("sequence-update", {root_ / "new.csv"});
  update.given = [](const std::string&) { return false; };
  update.train.update = true;
  update.max_regression = 1.0;
  const host::RetrainResult result = host::run_retrain(update, log);
  ASSERT_EQ(result.decision, "promoted") << log.str();
  EXPECT_NE(log.str().find("update: the sequences of"), std::string::npos) << log.str();
  EXPECT_EQ(log_lines(first.models).back()["mode"], "update");
  const std::vector<std::string> was_ids = host::read_ids(parent / "item_ids.json");
  const std::vector<std::string> ids = host::read_ids(result.candidate / "item_ids.json");
  const SequenceParams was = host::read_sequence_params(parent / "sequence.bin", static_cast<uint32_t>(was_ids.size()));
  const SequenceParams now = host::read_sequence_params(result.candidate / "sequence.bin", static_cast<uint32_t>(ids.size()));
  const SequenceLayout a(was.config), b(now.config);
  EXPECT_TRUE(std::equal(was.values.begin() + static_cast<int64_t>(a.dense_begin()), was.values.end(),
                         now.values.begin() + static_cast<int64_t>(b.dense_begin()), now.values.end()))
      << "a frozen dense tensor moved";
  const auto index = host::index_ids(was_ids);
  const size_t d = now.config.hidden;
  uint32_t same = 0, moved = 0;
  for (uint32_t i = 0; i < ids.size(); ++i) {
    const auto it = index.find(ids[i]);
    if (it == index.end()) continue;  // a new item (newitem-1 among them)
    const bool equal = std::equal(was.values.begin() + static_cast<int64_t>(a.items + it->second * d),
                                  was.values.begin() + static_cast<int64_t>(a.items + (it->second + 1) * d),
                                  now.values.begin() + static_cast<int64_t>(b.items + i * d));
    (equal ? same : moved) += 1;
  }
  EXPECT_NE(std::find(ids.begin(), ids.end(), "newitem-1"), ids.end());
  EXPECT_GT(same, 0u) << "every item row moved";
  EXPECT_GT(moved, 0u) << "no changed item's row moved";
  const json config = json::parse(read_file(result.candidate / "config.json"));
  EXPECT_TRUE(config.value("update", false));
  EXPECT_TRUE(config["dataset"].contains("last_timestamp"));
}

TEST_F(RetrainJobs, AnUpdateWithNothingNewLeavesCurrentAsItIs) {
  std::ostringstream log;
  host::RetrainJob first = retrain("unchanged", {root_ / "old.csv"});
  ASSERT_EQ(host::run_retrain(first, log).decision, "promoted");
  const std::string model_bytes = read_file(first.models / "current" / "model.bin");
  host::RetrainJob again = retrain("unchanged", {});
  again.train.update = true;
  const host::RetrainResult result = host::run_retrain(again, log);
  EXPECT_EQ(result.decision, "unchanged");
  EXPECT_EQ(result.candidate, fs::canonical(first.models / "versions" / "000001"));
  EXPECT_NE(log.str().find("nothing changed since the parent model; nothing to train"),
            std::string::npos)
      << log.str();
  EXPECT_EQ(current_target(first.models), fs::path("versions") / "000001");
  EXPECT_EQ(read_file(first.models / "current" / "model.bin"), model_bytes);
  EXPECT_EQ(versions(first.models), std::vector<std::string>{"000001"});  // no candidate left
  const std::vector<json> lines = log_lines(first.models);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines.back()["decision"], "unchanged");
  EXPECT_EQ(lines.back()["mode"], "update");
  // With new rows the same update trains and is judged again.
  host::RetrainJob later = retrain("unchanged", {root_ / "extra.csv"});
  later.train.update = true;
  later.max_regression = 1.0;
  EXPECT_EQ(host::run_retrain(later, log).decision, "promoted");
}

// A model trained with --metadata none on a dataset with item metadata: the next retrain, given no
// --metadata, keeps none (config.json leaves the key out when it is none).
TEST_F(RetrainJobs, ARetrainKeepsMetadataNone) {
  std::ostringstream log;
  host::RetrainJob first = retrain("no_metadata", {root_ / "old.csv"});
  first.items = root_ / "shop" / "items.csv";
  first.train.epochs = 1;
  first.train.metadata = "none";
  ASSERT_EQ(host::run_retrain(first, log).decision, "promoted");
  host::RetrainJob next = retrain("no_metadata", {});
  next.train.epochs = 1;
  next.max_regression = 1.0;
  next.given = [](const std::string&) { return false; };  // as from a command line without flags
  ASSERT_EQ(host::run_retrain(next, log).decision, "promoted") << log.str();
  const json config = json::parse(read_file(next.models / "current" / "config.json"));
  EXPECT_FALSE(config.contains("metadata")) << config.dump();
}

// A setting retrain cannot use is refused before the new rows are imported or a candidate trains.
TEST_F(RetrainJobs, BadSettingsAreRefusedBeforeAnythingIsImported) {
  std::ostringstream log;
  host::RetrainJob first = retrain("checked", {root_ / "old.csv"});
  first.train.epochs = 1;
  host::run_retrain(first, log);
  const uint64_t rows = datasets::Dataset::open(first.data).interactions.size();
  for (int bad = 0; bad < 3; ++bad) {
    host::RetrainJob next = retrain("checked", {root_ / "new.csv"});
    if (bad == 0) next.metric = "bogus";
    if (bad == 1) next.max_regression = std::nan("");
    if (bad == 2) next.train.epochs = 0;
    try {
      host::run_retrain(next, log);
      ADD_FAILURE() << "setting " << bad << " was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(bad == 0 ? "unknown --metric 'bogus'" : bad == 1 ? "--max-regression" : "`epochs`"),
                std::string::npos)
          << what;
    }
    EXPECT_EQ(datasets::Dataset::open(first.data).interactions.size(), rows) << bad;
    EXPECT_EQ(log_lines(first.models).size(), 1u) << bad;
    EXPECT_EQ(versions(first.models), std::vector<std::string>{"000001"}) << bad;
  }
  std::string out;
  EXPECT_EQ(run_cli(fmt::format("retrain --data {} --models {} --max-regression nan", first.data.string(),
                                first.models.string()),
                    &out),
            1);
  EXPECT_NE(out.find("--max-regression must be a finite number"), std::string::npos) << out;
}

// A model or a retrain directory inside the dataset directory would go with the next import:
// refused before anything is written.
TEST_F(RetrainJobs, ModelsInsideTheDatasetAreRefused) {
  std::ostringstream log;
  host::RetrainJob inside = retrain("inside_data", {root_ / "old.csv"});
  inside.models = inside.data / "models";
  try {
    host::run_retrain(inside, log);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is inside the dataset directory"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(inside.data));
  host::TrainJob train = job(root_ / "base", root_ / "base" / "model");
  EXPECT_THROW(host::run_training(train, log), Error);
  EXPECT_FALSE(fs::exists(root_ / "base" / "model"));
}

// A retrain.jsonl whose last line lost its newline (edited by hand, copied) gets the next record
// on a line of its own.
TEST_F(RetrainJobs, TheNextRecordStartsOnItsOwnLine) {
  std::ostringstream log;
  host::RetrainJob first = retrain("newline", {root_ / "old.csv"});
  first.train.epochs = 1;
  host::run_retrain(first, log);
  std::string text = read_file(first.models / "retrain.jsonl");
  text.pop_back();
  std::ofstream(first.models / "retrain.jsonl") << text;
  host::RetrainJob next = retrain("newline", {});
  next.before_step = [](const std::string& step) { throw Error("injected failure before " + step); };
  EXPECT_THROW(host::run_retrain(next, log), Error);
  ASSERT_EQ(log_lines(first.models).size(), 2u);  // each line parses
  EXPECT_EQ(log_lines(first.models).back()["decision"], "failed");
}

// The ids a model directory holds.
std::set<std::string> model_users(const fs::path& dir) {
  const std::vector<std::string> ids = host::read_ids(dir / "user_ids.json");
  return {ids.begin(), ids.end()};
}

// A user deleted from the dataset while the candidate trained on the older copy does not come
// back with the promotion.
TEST_F(RetrainJobs, AUserDeletedWhileTheCandidateTrainsIsNotPromoted) {
  std::ostringstream log;
  host::RetrainJob first = retrain("deleting", {root_ / "old.csv"});
  first.train.epochs = 1;
  host::run_retrain(first, log);
  ASSERT_TRUE(model_users(first.models / "current").contains("u3"));
  host::RetrainJob next = retrain("deleting", {});
  next.train.epochs = 1;
  next.max_regression = 1.0;
  next.before_step = [&](const std::string& step) {
    if (step == "promote") datasets::delete_users(next.data, {"u3"});
  };
  ASSERT_EQ(host::run_retrain(next, log).decision, "promoted");
  EXPECT_EQ(current_target(next.models), fs::path("versions") / "000002");
  EXPECT_FALSE(model_users(next.models / "current").contains("u3"));
  EXPECT_TRUE(model_users(next.models / "current").contains("u4"));
  EXPECT_NO_THROW(host::load_model_dir(next.models / "current"));
}

// True once versions/ holds a candidate in training (a hidden temporary directory).
bool candidate_training(const fs::path& models) {
  for (const auto& e : fs::directory_iterator(models / "versions")) {
    const std::string name = e.path().filename().string();
    if (name.front() == '.' && name.find(".tmp-") != std::string::npos && e.is_directory())
      return true;
  }
  return false;
}

// Two processes: a retrain, stopped (SIGSTOP) while its candidate trains, and a delete-users run
// to its end meanwhile. A deletion that exits 0 stays deleted: in the dataset and, with --model,
// in every version; without --model, in the version the retrain promotes.
TEST_F(RetrainJobs, ADeletionRacingARetrainStaysDeleted) {
  std::ostringstream log;
  host::RetrainJob first = retrain("racing", {root_ / "old.csv"});
  first.train.epochs = 1;
  host::run_retrain(first, log);
  const std::string data = first.data.string(), models = first.models.string();
  for (const std::string id : {"u5", "u6"}) {
    const bool with_model = id == "u5";
    std::ofstream(root_ / "race_gone.csv") << "USER_ID\n" << id << "\n";
    const std::string deletion =
        fmt::format("delete-users --data {} --users {}{}", data, (root_ / "race_gone.csv").string(),
                    with_model ? " --model " + models + "/current" : "");
    const uint32_t users_before = datasets::Dataset::open(first.data).num_users();
    const pid_t retrain = spawn_cli({"retrain", "--data", data, "--models", models, "--epochs", "1",
                                     "--batch-size", "512", "--validation-users", "0", "--threads",
                                     "2", "--max-regression", "1"});
    int status = 0;
    bool ended = false;
    while (!candidate_training(first.models) && !ended) ended = ::waitpid(retrain, &status, WNOHANG) == retrain;
    ASSERT_FALSE(ended) << "the retrain ended before its candidate trained";
    ::kill(retrain, SIGSTOP);
    std::string out;
    const int deleted = run_cli(deletion, &out);
    ::kill(retrain, SIGCONT);
    ASSERT_EQ(::waitpid(retrain, &status, 0), retrain);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << id;
    if (deleted != 0) {  // refused while the retrain held the models: nothing changed; again now
      EXPECT_NE(out.find("in use by PID"), std::string::npos) << out;
      EXPECT_EQ(datasets::Dataset::open(first.data).num_users(), users_before);
      ASSERT_EQ(run_cli(deletion, &out), 0) << out;
    }
    EXPECT_EQ(datasets::Dataset::open(first.data).num_users(), users_before - 1) << id;
    EXPECT_FALSE(model_users(first.models / "current").contains(id)) << id << ": " << out;
    if (!with_model) continue;
    for (const std::string& version : versions(first.models)) {
      if (version.front() == '.') continue;
      EXPECT_FALSE(model_users(first.models / "versions" / version).contains(id)) << version;
    }
  }
}

int killed_runs = 0;  // runs that were killed rather than finished, reported by the test

// `tastebud ARGS` in a child, killed with SIGKILL after `delay` unless it ended first; true when
// it ran to completion with status 0.
bool run_and_kill(const std::vector<std::string>& args, std::chrono::microseconds delay) {
  const pid_t child = spawn_cli(args);
  const auto deadline = std::chrono::steady_clock::now() + delay;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(child, &status, WNOHANG) == child)
      return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, &status, 0);
  killed_runs += WIFSIGNALED(status);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Killed at seeded moments of a warm-started retrain, `current` always names a whole version that
// loads, versions/ holds only whole versions, and the next retrain runs through. The delays come
// from a fixed seed; the property holds for any delay.
TEST_F(RetrainJobs, AKilledRetrainLeavesCurrentWholeAndTheNextOneRuns) {
  std::ostringstream log;
  host::RetrainJob first = retrain("killed", {root_ / "old.csv"});
  host::run_retrain(first, log);
  const std::vector<std::string> args{"retrain",
                                      "--data",
                                      first.data.string(),
                                      "--models",
                                      first.models.string(),
                                      "--epochs",
                                      "2",
                                      "--batch-size",
                                      "512",
                                      "--validation-users",
                                      "0",
                                      "--threads",
                                      "2",
                                      "--max-regression",
                                      "1"};
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_and_kill(args, std::chrono::seconds(120)));
  const auto span = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  std::mt19937 random(12);
  for (int round = 0; round < 6; ++round) {
    run_and_kill(args, std::chrono::microseconds(random() % std::max<int64_t>(span.count(), 1)));
    const fs::path target = first.models / current_target(first.models);
    EXPECT_NO_THROW(host::load_model_dir(target)) << target;
    for (const auto& entry : fs::directory_iterator(first.models / "versions")) {
      const std::string name = entry.path().filename().string();
      if (name.front() == '.')
        continue;  // a killed run's candidate or lock: the next run removes them
      EXPECT_TRUE(fs::exists(entry.path() / "model.bin") &&
                  fs::exists(entry.path() / "config.json"))
          << name;
    }
  }
  EXPECT_TRUE(run_and_kill(args, std::chrono::seconds(120)));
  for (const auto& entry : fs::directory_iterator(first.models / "versions")) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos)
        << "left behind: " << entry.path();
  }
  std::cout << "killed " << killed_runs << " of 6 runs mid-way\n";
}

}  // namespace
}  // namespace tastebud
