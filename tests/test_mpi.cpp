// Training on several ranks against one process. CTest runs this program under
// `mpirun -np 2 --oversubscribe` (only in builds with MPI); every rank runs every test, and each
// test trains the one-process reference itself (a single-process communicator) to compare with.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include <unistd.h>

#include "host/distributed_eval.h"
#include "rank_step.h"  // engine/src: the rank step both backends' exchanges go through
#include "training_sets.h"
#include "tastebud/engine/backends.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/error.h"
#ifdef TASTEBUD_WITH_CUDA
#include "cuda/common.h"
#include "device_shards.h"  // engine/src: the CUDA backend's id-table shards on the GPUs
#endif

namespace tastebud {
namespace {

using testing_data::add_context;
using testing_data::banded_training_set;
using testing_data::flatten;

ModelConfig config_of(const TrainingSet& t, ModelKind kind) {
  ModelConfig c;
  c.kind = kind;
  c.num_users = t.num_users;
  c.num_items = t.num_items;
  c.factors = 7;
  c.layers = {18, 13, 5};
  return c;
}

TrainOptions options_of(LossKind loss, OptimizerKind optimizer) {
  TrainOptions o;
  o.loss = loss;
  o.negatives = 3;
  o.sampler = loss == LossKind::kBpr ? SamplerKind::kPopularity : SamplerKind::kUniform;
  o.optimizer.kind = optimizer;
  o.optimizer.lr = optimizer == OptimizerKind::kAdam ? 0.01f : 0.1f;
  o.optimizer.l2 = 0.001f;
  o.seed = 11;
  o.threads = 1;
  o.batch_size = 700;  // several chunks of 128 rows a batch, a shorter last batch
  return o;
}

struct TrainRun {
  TrainState state;
  std::vector<double> losses;
};

// The id tables' floats a state holds (parameters and both optimizer states).
uint64_t id_table_floats(const TrainState& s) {
  uint64_t floats = 0;
  const std::vector<const Tensor*> params = s.params.tensors();
  for (size_t t = 0; t < ModelParams::kEmbeddingTables; ++t) {
    floats += params[t]->values.size() + s.state0[t].values.size() + s.state1[t].values.size();
  }
  return floats;
}

// Several ranks start from a sharded initialisation (each rank draws its own rows only), one
// process from the whole model.
TrainState fresh_state(Communicator& comm, const ModelConfig& config, const OptimizerParams& optimizer) {
  const auto rank = static_cast<uint32_t>(comm.rank()), ranks = static_cast<uint32_t>(comm.size());
  return TrainState::fresh(ranks > 1 ? ModelParams::initialize_shard(config, 3, rank, ranks) : ModelParams::initialize(config, 3),
                           optimizer);
}

// device: "cpu" or "cuda", through make_backend as the command line chooses.
TrainRun train(Communicator& comm, const TrainingSet& data, TrainOptions options, ModelKind kind, uint32_t epochs,
               uint64_t* held_bytes = nullptr, const std::string& device = "cpu") {
  options.comm = &comm;
  TrainState start = fresh_state(comm, config_of(data, kind), options.optimizer);
  // No rank of several ever holds the whole id tables: the state it starts from holds its rows.
  const uint64_t gmf_width = kind == ModelKind::kMLP ? 0 : 7, mlp_width = kind == ModelKind::kGMF || kind == ModelKind::kMF ? 0 : 9;
  const uint64_t whole = (data.num_users + data.num_items) * (gmf_width + mlp_width) * 3;
  if (comm.size() > 1) {
    EXPECT_LE(id_table_floats(start), whole / comm.size() + 3 * 16 * 2);
  } else {
    EXPECT_EQ(id_table_floats(start), whole);
  }
  std::string notice;
  auto backend = make_backend(device, data, options, std::move(start), &notice);
  if (device == "cuda" && comm.size() > 1 && comm.root()) std::printf("[ ranks ] %s\n", notice.c_str());
  if (held_bytes) *held_bytes = backend->held_bytes();
  TrainRun run;
  for (uint32_t e = 0; e < epochs; ++e) run.losses.push_back(backend->train_epoch(e, {}).mean_loss);
  run.state = backend->state();  // several ranks: whole on rank 0 only
  return run;
}


double largest_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t k = 0; k < a.size(); ++k) worst = std::max(worst, std::abs(static_cast<double>(a[k]) - b[k]));
  return worst;
}

// Every float of got within atol + rtol * |want|; names the first that is not.
::testing::AssertionResult near_all(const std::vector<float>& got, const std::vector<float>& want, double atol,
                                    double rtol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << got.size() << " floats, want " << want.size();
  for (size_t k = 0; k < got.size(); ++k) {
    const double tolerance = atol + rtol * std::abs(static_cast<double>(want[k]));
    if (!(std::abs(static_cast<double>(got[k]) - want[k]) <= tolerance)) {
      return ::testing::AssertionFailure() << "float " << k << ": " << got[k] << " vs " << want[k] << " (tolerance "
                                           << tolerance << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// One training case: the loss, the optimizer, the model, and the largest parameter difference
// allowed (its absolute part).
struct Case {
  LossKind loss;
  OptimizerKind optimizer;
  ModelKind kind;
  double tolerance;
};

class TwoRanks : public ::testing::Test {
 protected:
  void SetUp() override {
    // CTest starts this suite under mpirun -np 2; one rank alone would check nothing, so it fails.
    ASSERT_GE(world().size(), 2) << "run under mpirun -np 2 (this process is one rank of one)";
  }
  static Communicator& world() { return world_communicator(); }
  // Every rank asks, so that all of them skip together.
  static bool every_rank_has_cuda(std::string* reason) {
    double available = cuda_available(reason) ? 1.0 : 0.0;
    world().allreduce_sum(std::span<double>(&available, 1));
    return available == world().size();
  }
};

TEST_F(TwoRanks, TrainTheOneProcessModelWithinRounding) {
  const TrainingSet data = banded_training_set(151, 97);
  const auto single = make_single_communicator();
  // SGD follows the gradient's size, so rounding stays rounding. Adam's step is about lr * sign(g):
  // a near-zero gradient whose sign the summation order flips moves that parameter by up to 2 lr,
  // so Adam gets more room (6e-8 was measured; a flip would show as about 2 lr = 0.02).
  for (const Case& c : {Case{LossKind::kBce, OptimizerKind::kSgd, ModelKind::kNeuMF, 1e-5},
                        Case{LossKind::kBpr, OptimizerKind::kSgd, ModelKind::kNeuMF, 1e-5},
                        Case{LossKind::kBce, OptimizerKind::kAdam, ModelKind::kNeuMF, 1e-4},
                        Case{LossKind::kBce, OptimizerKind::kAdagrad, ModelKind::kGMF, 1e-5},
                        Case{LossKind::kBce, OptimizerKind::kAdam, ModelKind::kMF, 1e-4}}) {
    const TrainOptions options = options_of(c.loss, c.optimizer);
    const TrainRun one = train(*single, data, options, c.kind, 3);
    const TrainRun two = train(world(), data, options, c.kind, 3);
    for (size_t e = 0; e < one.losses.size(); ++e) {
      EXPECT_NEAR(two.losses[e], one.losses[e], 1e-5 * one.losses[e]) << "epoch " << e;
    }
    EXPECT_EQ(two.state.step, one.state.step);
    if (!world().root()) continue;  // rank 0 holds the whole model
    const double worst = largest_difference(flatten(one.state), flatten(two.state));
    std::printf("[ ranks ] %s %s %s: largest parameter difference, %d ranks vs 1 process: %.3g; last loss %.9f vs %.9f\n",
                c.loss == LossKind::kBce ? "bce" : "bpr",
                c.optimizer == OptimizerKind::kSgd ? "sgd" : c.optimizer == OptimizerKind::kAdam ? "adam" : "adagrad",
                c.kind == ModelKind::kGMF ? "gmf" : c.kind == ModelKind::kMF ? "mf" : "neumf", world().size(), worst, two.losses.back(), one.losses.back());
    EXPECT_LE(worst, c.tolerance);
    if (c.kind != ModelKind::kMF) continue;
    // MF's rows [p, b_u, 1] and [q, 1, b_i]: each owner keeps its rows' constant column at one.
    const uint32_t f = two.state.params.config.factors;
    for (uint32_t u = 0; u < data.num_users; ++u) ASSERT_EQ(two.state.params.user_gmf.values[u * f + f - 1], 1.0f) << u;
    for (uint32_t i = 0; i < data.num_items; ++i) ASSERT_EQ(two.state.params.item_gmf.values[i * f + f - 2], 1.0f) << i;
  }
}

TEST_F(TwoRanks, RerunIsBitIdenticalAndEachRankHoldsItsShareOfTheTables) {
  const TrainingSet data = banded_training_set(151, 97);
  const TrainOptions options = options_of(LossKind::kBce, OptimizerKind::kAdam);
  uint64_t held = 0, whole = 0;
  const std::vector<float> first = flatten(train(world(), data, options, ModelKind::kNeuMF, 2, &held).state);
  const std::vector<float> second = flatten(train(world(), data, options, ModelKind::kNeuMF, 2).state);
  ASSERT_EQ(first.size(), second.size());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
  // The id tables (151 + 97 rows of 7 + 9 floats, three copies with Adam's moments) are split
  // between the ranks; the dense layers (a few hundred floats) are replicated.
  const auto single = make_single_communicator();
  train(*single, data, options, ModelKind::kNeuMF, 0, &whole);
  const uint64_t tables = (151 + 97) * (7 + 9) * 3 * sizeof(float);
  EXPECT_LT(held, whole - tables / world().size() + tables / 10) << "held " << held << " of " << whole;
  EXPECT_GT(held, whole - tables);
  if (world().root()) std::printf("[ ranks ] rank 0 holds %llu of the model's %llu bytes\n",
                                  static_cast<unsigned long long>(held), static_cast<unsigned long long>(whole));
}

// Metadata on both sides (as in test_backends): categorical, tag, text and numeric inputs.
void add_metadata(TrainingSet& data, ModelConfig& config) {
  auto side = [](uint32_t entities, uint32_t salt, FeatureSpec& spec, FeatureInputs& in) {
    spec.categorical = {"band", "tags"};
    spec.categorical_rows = {4, 7};
    spec.textual = "description";
    spec.text_buckets = 9;
    spec.numerical = {"price", "age"};
    spec.numerical_mean = {10.0f, 3.0f};
    spec.numerical_stddev = {2.0f, 1.5f};
    in = {};
    in.entities = entities;
    in.offsets = {0};
    in.numeric = 2;
    for (uint32_t x = 0; x < entities; ++x) {
      in.rows.push_back(x * 4 / entities);
      in.weights.push_back(1.0f);
      const uint32_t tags = 1 + (x + salt) % 3;
      std::vector<uint32_t> tag_rows;
      for (uint32_t j = 0; j < tags; ++j) tag_rows.push_back(4 + (x * salt + 3 * j) % 7);
      std::sort(tag_rows.begin(), tag_rows.end());
      for (uint32_t row : tag_rows) {
        in.rows.push_back(row);
        in.weights.push_back(1.0f / static_cast<float>(tags));
      }
      in.rows.push_back(11 + (x * salt) % 9);
      in.weights.push_back(1.0f);
      in.offsets.push_back(in.rows.size());
      in.values.push_back(static_cast<float>(x % 7) * 0.5f - 1.5f);
      in.values.push_back(std::sin(static_cast<float>(x + salt)));
    }
  };
  side(data.num_users, 3, config.user_features, data.user_features);
  side(data.num_items, 5, config.item_features, data.item_features);
}

// The replicated tables' cases: metadata on both sides, context, both.
struct Replicated {
  const char* name;
  bool metadata, context;
};
constexpr Replicated kReplicated[] = {{"metadata", true, false}, {"context", false, true}, {"metadata and context", true, true}};

// A NeuMF with the case's metadata and context tables, trained two epochs (several batches) from
// one start on `comm` and `device`: its losses and final state (several ranks: whole on rank 0).
// `started`, when given, receives the replicated table's initial values (user metadata, else context).
TrainRun train_replicated(Communicator& comm, const Replicated& c, OptimizerKind optimizer, const std::string& device,
                          std::vector<float>* started = nullptr, RankExchange exchange = RankExchange::kHost) {
  TrainingSet data = banded_training_set(41, 50);
  ModelConfig config = config_of(data, ModelKind::kNeuMF);
  if (c.metadata) add_metadata(data, config);
  if (c.context) add_context(data, config);
  TrainOptions options = options_of(LossKind::kBce, optimizer);
  options.batch_size = 300;
  options.comm = &comm;
  options.rank_exchange = exchange;
  ModelParams params = ModelParams::initialize(config, 23);
  zero_untrained_rows(params, data);
  if (started) *started = (c.metadata ? params.user_features : params.context_features).values;
  auto backend = make_backend(device, data, options, TrainState::fresh(params, options.optimizer), nullptr);
  TrainRun run;
  for (uint32_t e = 0; e < 2; ++e) run.losses.push_back(backend->train_epoch(e, {}).mean_loss);
  run.state = backend->state();
  return run;
}

// Metadata and context tables stay replicated and are updated from the shared slices; the
// sharded item rows of items without positives stay at zero, as in one process.
TEST_F(TwoRanks, MetadataModelsTrainTheOneProcessModel) {
  const auto single = make_single_communicator();
  for (const Replicated& c : kReplicated) {
    std::vector<float> started;
    const TrainRun one = train_replicated(*single, c, OptimizerKind::kSgd, "cpu", &started);
    const TrainRun two = train_replicated(world(), c, OptimizerKind::kSgd, "cpu");
    for (size_t e = 0; e < one.losses.size(); ++e) EXPECT_NEAR(two.losses[e], one.losses[e], 1e-5 * one.losses[e]) << c.name;
    if (!world().root()) continue;
    const double worst = largest_difference(flatten(one.state), flatten(two.state));
    std::printf("[ ranks ] %s neumf sgd: largest parameter difference, %d ranks vs 1 process: %.3g\n", c.name,
                world().size(), worst);
    EXPECT_LE(worst, 1e-5) << c.name;
    const Tensor& replicated = c.metadata ? two.state.params.user_features : two.state.params.context_features;
    EXPECT_FALSE(started.empty()) << c.name;
    EXPECT_NE(replicated.values, started) << c.name << ": the replicated table did not train";
    if (!c.metadata) continue;
    for (uint32_t item : {48u, 49u}) {
      for (const Tensor* table : {&two.state.params.item_gmf, &two.state.params.item_mlp}) {
        const auto row = table->values.begin() + item * table->cols();
        EXPECT_TRUE(std::all_of(row, row + table->cols(), [](float x) { return x == 0.0f; }))
            << "cold item " << item << " moved in " << table->name;
      }
    }
  }
}

// The same on two CUDA ranks, with the id-table shards on the hosts and on the GPUs: against one
// CUDA process and against two CPU ranks.
TEST_F(TwoRanks, CudaRanksTrainMetadataAndContextModels) {
  std::string reason;
  if (!every_rank_has_cuda(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
  const auto single = make_single_communicator();
  for (const Replicated& c : kReplicated) {
    for (const OptimizerKind optimizer : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
      const double tolerance = optimizer == OptimizerKind::kAdam ? 1e-4 : 1e-5;
      const TrainRun one = train_replicated(*single, c, optimizer, "cuda");
      const TrainRun cpu = train_replicated(world(), c, optimizer, "cpu");
      for (const RankExchange exchange : {RankExchange::kHost, RankExchange::kDevice}) {
        const char* where = exchange == RankExchange::kHost ? "host shards" : "device shards";
        const TrainRun two = train_replicated(world(), c, optimizer, "cuda", nullptr, exchange);
        for (size_t e = 0; e < one.losses.size(); ++e) {
          EXPECT_NEAR(two.losses[e], one.losses[e], 1e-5 * one.losses[e]) << c.name << ", " << where << ", epoch " << e;
          EXPECT_NEAR(two.losses[e], cpu.losses[e], 1e-4 * cpu.losses[e]) << c.name << ", " << where << ", epoch " << e;
        }
        if (!world().root()) continue;
        const std::vector<float> got = flatten(two.state);
        std::printf("[ ranks ] cuda %s, %s: largest parameter difference vs 1 CUDA process %.3g, vs %d CPU ranks %.3g\n",
                    c.name, where, largest_difference(got, flatten(one.state)), world().size(),
                    largest_difference(got, flatten(cpu.state)));
        EXPECT_TRUE(near_all(got, flatten(one.state), tolerance, 1e-3)) << c.name << ", " << where << ": vs one CUDA process";
        EXPECT_TRUE(near_all(got, flatten(cpu.state), tolerance, 1e-3)) << c.name << ", " << where << ": vs two CPU ranks";
      }
    }
  }
}

TEST_F(TwoRanks, CollectivesSumGatherAndBroadcast) {
  std::vector<double> sums{1.0, static_cast<double>(world().rank())};
  world().allreduce_sum(sums);
  EXPECT_EQ(sums[0], world().size());
  EXPECT_EQ(sums[1], world().size() * (world().size() - 1) / 2.0);
  // Rank r writes r + 1 bytes of value r; everyone then holds every block in rank order.
  std::vector<size_t> counts;
  for (int r = 0; r < world().size(); ++r) counts.push_back(r + 1);
  std::vector<std::byte> buffer(world().size() * (world().size() + 1) / 2);
  const auto [begin, end] = std::pair<size_t, size_t>(world().rank() * (world().rank() + 1) / 2,
                                                      (world().rank() + 1) * (world().rank() + 2) / 2);
  std::fill(buffer.begin() + begin, buffer.begin() + end, static_cast<std::byte>(world().rank()));
  world().allgather_in_place(buffer, counts);
  size_t at = 0;
  for (int r = 0; r < world().size(); ++r) {
    for (int k = 0; k <= r; ++k) EXPECT_EQ(buffer[at++], static_cast<std::byte>(r));
  }
  const std::string text = gather_text(world(), "rank" + std::to_string(world().rank()) + ";");
  std::string want;
  for (int r = 0; r < world().size() && world().root(); ++r) want += "rank" + std::to_string(r) + ";";
  EXPECT_EQ(text, want);
  uint64_t value = world().root() ? 42 : 0;
  world().broadcast({reinterpret_cast<std::byte*>(&value), sizeof(value)}, 0);
  EXPECT_EQ(value, 42u);
}

// A split of every user of the banded set: leave-one-out (a held-out item and 9 candidates each)
// or holdout (two truth items each), scored by a fixed hash of (user, item).
host::Split split_of(const TrainingSet& train, host::EvalProtocol protocol) {
  host::Split s;
  s.train = train;
  s.protocol = protocol;
  for (uint32_t u = 0; u < train.num_users; ++u) {
    s.eval_users.push_back(u);
    s.held_out_item.push_back(u * 7 % train.num_items);
    for (uint32_t j = 0; j < 9; ++j) s.candidates.push_back((u * 13 + j * 5 + 1) % train.num_items);
    s.truth_offsets.push_back(s.truth.size());
    for (const uint32_t item : {u * 3 % train.num_items, (u * 3 + 1) % train.num_items}) s.truth.push_back(item);
  }
  s.truth_offsets.push_back(s.truth.size());
  s.negatives_per_user = 9;
  return s;
}

float hashed_score(uint32_t u, uint32_t item) {
  return static_cast<float>((u * 2654435761u ^ item * 40503u) % 1000003u) / 1000003.0f;
}

TEST_F(TwoRanks, EvaluationSplitAcrossRanksGivesTheOneProcessMetrics) {
  const TrainingSet data = banded_training_set(151, 97);
  const host::ScoreFn score = [](uint32_t u, std::span<const uint32_t> items, std::span<float> out) {
    if (items.empty()) {
      for (uint32_t i = 0; i < out.size(); ++i) out[i] = hashed_score(u, i);
    } else {
      for (size_t k = 0; k < items.size(); ++k) out[k] = hashed_score(u, items[k]);
    }
  };
  for (const auto protocol : {host::EvalProtocol::kLeaveOneOut, host::EvalProtocol::kHoldout}) {
    const host::Split split = split_of(data, protocol);
    const host::Metrics shared = host::evaluate_across_ranks(world(), split, score, 1);
    if (!world().root()) {
      EXPECT_TRUE(shared.empty());
      continue;
    }
    const host::Metrics alone = host::evaluate(split, score, 1);
    ASSERT_FALSE(alone.empty());
    EXPECT_EQ(shared, alone);  // the same users in the same order: the same means and intervals
    EXPECT_EQ(shared.at("eval_users"), 151);
  }
  // The shares cover the users once, in order.
  EXPECT_EQ(host::rank_share(151, 0, 2).end, host::rank_share(151, 1, 2).begin);
  EXPECT_EQ(host::rank_share(151, 1, 2).end, 151u);
  EXPECT_EQ(host::rank_share(3, 2, 4).begin, host::rank_share(3, 2, 4).end - 1);
}

// Row u of each id table on its owner: the bits the whole model's initialisation gives row u, MF's
// columns and the zeroed rows of users and items without positives included.
TEST_F(TwoRanks, ShardedInitialisationDrawsTheWholeModelsRows) {
  TrainingSet data = banded_training_set(41, 50);
  ASSERT_EQ(data.item_counts[48] + data.item_counts[49], 0u);
  const auto rank = static_cast<uint32_t>(world().rank()), ranks = static_cast<uint32_t>(world().size());
  for (const ModelKind kind : {ModelKind::kNeuMF, ModelKind::kMF, ModelKind::kMLP}) {
    ModelConfig config = config_of(data, kind);
    if (kind == ModelKind::kNeuMF) add_metadata(data, config);
    ModelParams whole = ModelParams::initialize(config, 5);
    ModelParams mine = ModelParams::initialize_shard(config, 5, rank, ranks);
    zero_untrained_rows(whole, data);
    zero_untrained_rows(mine, data);
    ASSERT_TRUE(mine.sharded());
    const std::vector<const Tensor*> want = std::as_const(whole).tensors(), got = std::as_const(mine).tensors();
    for (size_t t = 0; t < want.size(); ++t) {
      if (t >= ModelParams::kEmbeddingTables) {
        EXPECT_EQ(got[t]->values, want[t]->values) << want[t]->name;
        continue;
      }
      const uint64_t cols = want[t]->cols();
      ASSERT_EQ(got[t]->values.size(), mine.held_rows(want[t]->rows()) * cols) << want[t]->name;
      for (uint64_t l = 0; l * cols < got[t]->values.size(); ++l) {
        const auto row = want[t]->values.begin() + static_cast<int64_t>((l * ranks + rank) * cols);
        ASSERT_TRUE(std::equal(row, row + static_cast<int64_t>(cols), got[t]->values.begin() + static_cast<int64_t>(l * cols)))
            << want[t]->name << " row " << l * ranks + rank;
      }
    }
  }
}

// A fresh backend of several ranks holds about 1/N of the id tables, and gives the whole model
// back (state(), gathered) equal to the one-process initialisation.
TEST_F(TwoRanks, ShardedStartHoldsItsShareAndGathersTheWholeModel) {
  const TrainingSet data = banded_training_set(151, 97);
  TrainOptions options = options_of(LossKind::kBce, OptimizerKind::kAdam);
  options.comm = &world();
  const ModelConfig config = config_of(data, ModelKind::kNeuMF);
  auto backend = make_cpu_backend(data, options, fresh_state(world(), config, options.optimizer));
  const uint64_t tables = (151 + 97) * (7 + 9) * 3 * sizeof(float);
  const auto single = make_single_communicator();
  TrainOptions alone = options;
  alone.comm = single.get();
  const TrainState whole = TrainState::fresh(ModelParams::initialize(config, 3), options.optimizer);
  const uint64_t all = make_cpu_backend(data, alone, whole)->held_bytes();
  EXPECT_NEAR(static_cast<double>(all - backend->held_bytes()), tables * (1.0 - 1.0 / world().size()), tables * 0.02);
  const TrainState held = backend->held_state();
  EXPECT_LE(id_table_floats(held) * sizeof(float), tables / world().size() + 3 * 16 * sizeof(float));
  const TrainState gathered = backend->state();
  if (world().root()) {
    EXPECT_EQ(flatten(gathered), flatten(whole));
  }
}

// A state that holds another rank count's rows is refused, by several ranks and by one process.
TEST_F(TwoRanks, AStateShardedForOtherRanksIsRefused) {
  const TrainingSet data = banded_training_set(41, 50);
  TrainOptions options = options_of(LossKind::kBce, OptimizerKind::kSgd);
  const ModelConfig config = config_of(data, ModelKind::kNeuMF);
  const TrainState three = TrainState::fresh(ModelParams::initialize_shard(config, 3, 0, 3), options.optimizer);
  options.comm = &world();
  try {
    make_cpu_backend(data, options, three);
    ADD_FAILURE() << "a state of rank 0 of 3 trained on 2 ranks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the state holds the id rows of rank 0 of 3, this is rank"), std::string::npos)
        << e.what();
  }
  const auto single = make_single_communicator();
  options.comm = single.get();
  try {
    make_cpu_backend(data, options, three);
    ADD_FAILURE() << "a state of rank 0 of 3 trained in one process";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds only rank 0 of 3's id rows"), std::string::npos) << e.what();
  }
}

// A folder both ranks see: rank 0 names it.
std::filesystem::path shared_directory(const char* what) {
  uint64_t pid = world_communicator().root() ? static_cast<uint64_t>(getpid()) : 0;
  world_communicator().broadcast({reinterpret_cast<std::byte*>(&pid), sizeof(pid)}, 0);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tastebud_mpi_" + std::string(what) + "_" + std::to_string(pid));
  if (world_communicator().root()) std::filesystem::create_directories(dir);
  world_communicator().barrier();
  return dir;
}

std::string bytes_of(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// checkpoint.bin and model.bin streamed to rank 0 in blocks of rows are the files one process
// writes from the gathered state, byte for byte; a checkpoint read back by each rank holds its
// rows; training on from it gives the uninterrupted run's model.
TEST_F(TwoRanks, StreamedFilesAndShardedResume) {
  const TrainingSet data = banded_training_set(151, 97);
  TrainOptions options = options_of(LossKind::kBce, OptimizerKind::kAdam);
  options.comm = &world();
  const ModelConfig config = config_of(data, ModelKind::kNeuMF);
  const std::filesystem::path dir = shared_directory("files");
  const std::string extra = R"({"epochs_done":1})";  // as the header stores it
  auto backend = make_cpu_backend(data, options, fresh_state(world(), config, options.optimizer));
  backend->train_epoch(0, {});
  const TrainState held = backend->held_state();
  ASSERT_TRUE(held.params.sharded());
  // 100 bytes a block: a few rows each, the last block short.
  save_checkpoint(world(), held, extra, dir / "streamed.ckpt", 100);
  save_model(world(), held.params, dir / "streamed.bin", 100);
  const TrainState gathered = backend->state();
  if (world().root()) {
    save_checkpoint(gathered, extra, dir / "gathered.ckpt");
    save_model(gathered.params, dir / "gathered.bin");
    EXPECT_EQ(bytes_of(dir / "streamed.ckpt"), bytes_of(dir / "gathered.ckpt"));
    EXPECT_EQ(bytes_of(dir / "streamed.bin"), bytes_of(dir / "gathered.bin"));
    EXPECT_EQ(flatten(TrainState::fresh(load_model(dir / "streamed.bin"), options.optimizer)).size(), flatten(gathered).size());
  }
  world().barrier();
  // Each rank reads its rows back: the held state, bit for bit.
  std::string extra_back;
  TrainState part = load_checkpoint_shard(dir / "streamed.ckpt", &extra_back, world().rank(), world().size());
  EXPECT_EQ(extra_back, extra);
  EXPECT_EQ(part.step, held.step);
  EXPECT_EQ(flatten(part), flatten(held));
  // Resumed for a second epoch: the model of two uninterrupted epochs.
  auto resumed = make_cpu_backend(data, options, std::move(part));
  resumed->train_epoch(1, {});
  backend->train_epoch(1, {});
  const std::vector<float> a = flatten(resumed->state()), b = flatten(backend->state());
  if (world().root()) {
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  }
  // A damaged byte is refused on every rank.
  world().barrier();
  if (world().root()) {
    std::string bytes = bytes_of(dir / "streamed.ckpt");
    bytes[bytes.size() / 2] ^= 1;
    std::ofstream(dir / "damaged.ckpt", std::ios::binary) << bytes;
  }
  world().barrier();
  EXPECT_THROW(load_checkpoint_shard(dir / "damaged.ckpt", nullptr, world().rank(), world().size()), Error);
  world().barrier();
  if (world().root()) std::filesystem::remove_all(dir);
}

// Evaluation with the user tables sharded: each rank fetches its users' rows and all-gathers the
// item tables (never the whole user tables), and the metrics are one process's on the whole model,
// with and without metadata.
TEST_F(TwoRanks, ShardedEvaluationGivesTheOneProcessMetrics) {
  TrainingSet data = banded_training_set(151, 97);
  const auto rank = static_cast<uint32_t>(world().rank()), ranks = static_cast<uint32_t>(world().size());
  const auto single = make_single_communicator();
  for (const bool metadata : {false, true}) {
    ModelConfig config = config_of(data, ModelKind::kNeuMF);
    if (metadata) add_metadata(data, config);
    const ModelParams whole = ModelParams::initialize(config, 9);
    const ModelParams mine = ModelParams::initialize_shard(config, 9, rank, ranks);
    // A share of users: its rows only, and the whole item tables.
    const std::vector<uint32_t> users{150, 3, 4, 77};
    const ModelParams share = host::share_model(world(), mine, users);
    ASSERT_EQ(share.user_gmf.values.size(), users.size() * 7);
    ASSERT_EQ(share.user_mlp.values.size(), users.size() * 9);
    EXPECT_EQ(share.item_gmf.values, whole.item_gmf.values);
    EXPECT_EQ(share.item_mlp.values, whole.item_mlp.values);
    for (size_t k = 0; k < users.size(); ++k) {
      EXPECT_TRUE(std::equal(share.user_mlp.values.begin() + k * 9, share.user_mlp.values.begin() + (k + 1) * 9,
                             whole.user_mlp.values.begin() + users[k] * 9)) << users[k];
    }
    for (const auto protocol : {host::EvalProtocol::kLeaveOneOut, host::EvalProtocol::kHoldout}) {
      const host::Split split = split_of(data, protocol);
      const host::Metrics shared = host::evaluate_model(world(), split, mine, data.user_features, data.item_features, {}, 1);
      const host::Metrics alone = host::evaluate_model(*single, split, whole, data.user_features, data.item_features, {}, 1);
      if (!world().root()) continue;
      ASSERT_FALSE(alone.empty());
      EXPECT_EQ(shared, alone) << "metadata " << metadata;
    }
  }
}

// The CUDA backend on two ranks (its rank step, the id rows staged through the hosts' shards or
// moved between the GPUs' shards, dense gradients over NCCL or the host): against one CUDA process
// and against two CPU ranks, the same global batches within float rounding. Skips without a CUDA
// device (every rank asks, so all skip together).
TEST_F(TwoRanks, CudaRanksTrainTheOneProcessModel) {
  std::string reason;
  if (!every_rank_has_cuda(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
  const TrainingSet data = banded_training_set(151, 97);
  const auto single = make_single_communicator();
  // Adam's step is about lr * sign(g): a flipped near-zero gradient moves by up to 2 lr.
  for (const Case& c : {Case{LossKind::kBce, OptimizerKind::kSgd, ModelKind::kNeuMF, 1e-5},
                        Case{LossKind::kBpr, OptimizerKind::kSgd, ModelKind::kNeuMF, 1e-5},
                        Case{LossKind::kBce, OptimizerKind::kAdagrad, ModelKind::kGMF, 1e-5},
                        Case{LossKind::kBce, OptimizerKind::kSgd, ModelKind::kMLP, 1e-5},
                        Case{LossKind::kBce, OptimizerKind::kAdam, ModelKind::kMF, 1e-4}}) {
    const TrainOptions options = options_of(c.loss, c.optimizer);
    const TrainRun one = train(*single, data, options, c.kind, 2, nullptr, "cuda");
    const TrainRun cpu = train(world(), data, options, c.kind, 2, nullptr, "cpu");
    for (const RankExchange exchange : {RankExchange::kHost, RankExchange::kDevice}) {
      const char* where = exchange == RankExchange::kHost ? "host shards" : "device shards";
      TrainOptions ranked = options;
      ranked.rank_exchange = exchange;
      uint64_t held = 0;
      const TrainRun two = train(world(), data, ranked, c.kind, 2, &held, "cuda");
      EXPECT_GT(held, 0u) << where;
      for (size_t e = 0; e < one.losses.size(); ++e) {
        EXPECT_NEAR(two.losses[e], one.losses[e], 1e-5 * one.losses[e]) << where << ", epoch " << e;
        EXPECT_NEAR(two.losses[e], cpu.losses[e], 1e-4 * cpu.losses[e]) << where << ", epoch " << e;
      }
      EXPECT_EQ(two.state.step, one.state.step);
      if (!world().root()) continue;
      const std::vector<float> got = flatten(two.state);
      std::printf("[ ranks ] cuda %d ranks, %s: largest parameter difference vs 1 CUDA process %.3g, vs %d CPU ranks "
                  "%.3g\n",
                  world().size(), where, largest_difference(got, flatten(one.state)), world().size(),
                  largest_difference(got, flatten(cpu.state)));
      EXPECT_TRUE(near_all(got, flatten(one.state), c.tolerance, 1e-3)) << where << ": against one CUDA process";
      EXPECT_TRUE(near_all(got, flatten(cpu.state), c.tolerance, 1e-3)) << where << ": against two CPU ranks";
    }
  }
}

// Update mode trains in one process only: on several ranks it stops with a message that says so, in
// any build and on either device (the options are checked before the device).
TEST_F(TwoRanks, UpdateModeOnSeveralRanksIsRefused) {
  const TrainingSet plain = banded_training_set(41, 50);
  TrainOptions options = options_of(LossKind::kBce, OptimizerKind::kSgd);
  options.comm = &world();
  options.trainable_users.assign(plain.num_users, 1);
  for (const char* device : {"cpu", "cuda"}) {
    try {
      make_backend(device, plain, options,
                   TrainState::fresh(ModelParams::initialize(config_of(plain, ModelKind::kNeuMF), 23), options.optimizer),
                   nullptr);
      ADD_FAILURE() << "update mode on two " << device << " ranks was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("update mode"), std::string::npos) << e.what();
    }
  }
}

// SGD at learning rate 0.5 with the given L2 coefficient.
OptimizerParams plain_sgd(float l2) {
  OptimizerParams sgd;
  sgd.kind = OptimizerKind::kSgd;
  sgd.lr = 0.5f;
  sgd.l2 = l2;
  return sgd;
}

// The glue the CUDA backend's rank step calls (RankStep), checked on the host: each rank fetches the
// rows of its slice (some ids shared by both ranks), returns per-row gradients of the GMF rows and
// of the MLP input ([rows x 2e], the item half at column e), and the owners apply every rank's
// parts. With SGD and no L2 each touched row moves by -lr x its summed gradient.
TEST_F(TwoRanks, RankStepFetchesRowsAndReturnsBothSidesGradients) {
  const TrainingSet data = banded_training_set(151, 97);
  const ModelConfig config = config_of(data, ModelKind::kNeuMF);
  const OptimizerParams sgd = plain_sgd(0.0f);
  const TrainState whole = TrainState::fresh(ModelParams::initialize(config, 3), sgd);
  const int64_t f = config.factors, e = config.mlp_embedding(), rows = 4;
  auto users_of = [](int r) { return std::vector<uint32_t>{static_cast<uint32_t>(r), 5, 5, 150u - r}; };
  auto items_of = [](int r) { return std::vector<uint32_t>{static_cast<uint32_t>(r + 1), 3, 96, 3}; };
  auto grad = [](int r, int64_t k, int64_t j, int which) { return 0.01f * (k + 1) + 0.001f * j + 0.1f * r + which; };
  TrainState state = whole;
  RankStep step(world(), state);
  EXPECT_TRUE(state.params.user_gmf.values.empty() && state.params.item_mlp.values.empty());
  const int me = world().rank();
  const std::vector<uint32_t> users = users_of(me), items = items_of(me);
  step.fetch(users, items);
  for (int64_t k = 0; k < rows; ++k) {
    for (int64_t j = 0; j < f; ++j) {
      ASSERT_EQ(step.gmf_rows(0)[step.slots(0)[k] * f + j], whole.params.user_gmf.values[users[k] * f + j]) << k;
      ASSERT_EQ(step.gmf_rows(1)[step.slots(1)[k] * f + j], whole.params.item_gmf.values[items[k] * f + j]) << k;
    }
    for (int64_t j = 0; j < e; ++j) {
      ASSERT_EQ(step.mlp_rows(0)[step.slots(0)[k] * e + j], whole.params.user_mlp.values[users[k] * e + j]) << k;
      ASSERT_EQ(step.mlp_rows(1)[step.slots(1)[k] * e + j], whole.params.item_mlp.values[items[k] * e + j]) << k;
    }
  }
  EXPECT_EQ(step.fetched_ids(0), 3u);
  EXPECT_EQ(step.sum_loss(1.5 + me), 1.5 * world().size() + world().size() * (world().size() - 1) / 2.0);
  std::vector<float> user_gmf(rows * f), item_gmf(rows * f), mlp_input(rows * 2 * e);
  for (int64_t k = 0; k < rows; ++k) {
    for (int64_t j = 0; j < f; ++j) user_gmf[k * f + j] = grad(me, k, j, 0), item_gmf[k * f + j] = grad(me, k, j, 1);
    for (int64_t j = 0; j < 2 * e; ++j) mlp_input[k * 2 * e + j] = grad(me, k, j, 2);
  }
  step.update(user_gmf.data(), item_gmf.data(), mlp_input.data(), e, sgd, sgd.lr, 1.0f, nullptr);
  step.gather(state);
  if (!world().root()) return;
  TrainState want = whole;
  for (int r = 0; r < world().size(); ++r) {
    const std::vector<uint32_t> us = users_of(r), is = items_of(r);
    for (int64_t k = 0; k < rows; ++k) {
      for (int64_t j = 0; j < f; ++j) {
        want.params.user_gmf.values[us[k] * f + j] -= sgd.lr * grad(r, k, j, 0);
        want.params.item_gmf.values[is[k] * f + j] -= sgd.lr * grad(r, k, j, 1);
      }
      for (int64_t j = 0; j < e; ++j) {
        want.params.user_mlp.values[us[k] * e + j] -= sgd.lr * grad(r, k, j, 2);
        want.params.item_mlp.values[is[k] * e + j] -= sgd.lr * grad(r, k, e + j, 2);
      }
    }
  }
  EXPECT_TRUE(near_all(flatten(state), flatten(want), 1e-6, 1e-6));
  EXPECT_NE(state.params.item_mlp.values, whole.params.item_mlp.values);
}

// The rows both backends give each rank: whole chunks, in rank order, covering the batch once; a
// short batch leaves the first ranks none.
TEST(RankRows, ChunksOfTheBatchInRankOrder) {
  const uint32_t chunk = chunk_rows(700);
  ASSERT_EQ(chunk, 128u);
  EXPECT_EQ(rank_rows(700, chunk, 0, 2), (std::pair<int64_t, int64_t>(0, 384)));    // 3 of 6 chunks
  EXPECT_EQ(rank_rows(700, chunk, 1, 2), (std::pair<int64_t, int64_t>(384, 700)));  // 3, the last one short
  EXPECT_EQ(rank_rows(100, chunk, 0, 2), (std::pair<int64_t, int64_t>(0, 0)));
  EXPECT_EQ(rank_rows(100, chunk, 1, 2), (std::pair<int64_t, int64_t>(0, 100)));
  for (int size : {1, 3, 7}) {
    int64_t next = 0;
    for (int r = 0; r < size; ++r) {
      const auto [begin, end] = rank_rows(2 * 1000, chunk_rows(2 * 1000), r, size);
      EXPECT_EQ(begin, next) << "rank " << r << " of " << size;
      EXPECT_EQ(begin % 2, 0) << "a BPR pair split at rank " << r;
      next = end;
    }
    EXPECT_EQ(next, 2000) << size << " ranks";
  }
}

// The bookkeeping both shard stores share: a slice's ids by owner, each row's slot and each id's
// uses; one process asks itself for every id, in ascending order.
TEST(ShardRequest, IdsByOwnerWithEachRowsSlotAndEachIdsUses) {
  const std::vector<uint32_t> slice{5, 2, 7, 2, 4, 5, 5};
  const ShardRequest two = request_rows(slice, 2);
  EXPECT_EQ(two.ids, (std::vector<uint32_t>{2, 4, 5, 7}));  // rank 0's 2, 4, then rank 1's 5, 7
  EXPECT_EQ(two.per_owner, (std::vector<size_t>{2, 2}));
  EXPECT_EQ(two.slots, (std::vector<uint32_t>{2, 0, 3, 0, 1, 2, 2}));
  EXPECT_EQ(two.uses, (std::vector<uint32_t>{2, 1, 3, 1}));
  const ShardRequest three = request_rows(slice, 3);
  EXPECT_EQ(three.ids, (std::vector<uint32_t>{4, 7, 2, 5}));  // 4 % 3 = 7 % 3 = 1, 2 % 3 = 5 % 3 = 2
  EXPECT_EQ(three.per_owner, (std::vector<size_t>{0, 2, 2}));
  EXPECT_EQ(three.slots, (std::vector<uint32_t>{3, 2, 1, 2, 0, 3, 3}));
  const ShardRequest one = request_rows(slice, 1);
  EXPECT_EQ(one.ids, (std::vector<uint32_t>{2, 4, 5, 7}));
  EXPECT_TRUE(request_rows({}, 2).ids.empty());
}

// An owner's (id, uses) pairs from every rank, in rank order, grouped by id with each group's
// entries in rank order (the order the parts are summed in) and the uses summed for RowL2.
TEST(OwnerGroups, EntriesByIdInRankOrderWithTheirUsesSummed) {
  // rank 0 asked for 6 (used twice) and 2; rank 1 for 2 (three times), 4 and 6.
  const std::vector<uint32_t> heads{6, 2, 2, 1, 2, 3, 4, 1, 6, 1};
  const OwnerGroups g = group_owner_entries(heads, 2);
  EXPECT_EQ(g.order, (std::vector<uint32_t>{1, 2, 3, 0, 4}));
  EXPECT_EQ(g.starts, (std::vector<uint32_t>{0, 2, 3, 5}));
  EXPECT_EQ(g.ids, (std::vector<uint32_t>{2, 4, 6}));
  EXPECT_EQ(g.local, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(g.use_starts, (std::vector<uint32_t>{0, 4, 5, 8}));
  const OwnerGroups none = group_owner_entries({}, 2);
  EXPECT_TRUE(none.ids.empty());
  EXPECT_EQ(none.starts, (std::vector<uint32_t>{0}));
}

#ifdef TASTEBUD_WITH_CUDA
// The chosen device communicator (NCCL with a GPU per rank, else host-staged; rank 0 prints which)
// and the host-staged one. Collective.
std::vector<std::unique_ptr<DeviceCommunicator>> both_device_communicators() {
  Communicator& world = world_communicator();
  std::string which;
  std::vector<std::unique_ptr<DeviceCommunicator>> comms;
  comms.push_back(make_device_communicator(world, &which));
  comms.push_back(make_host_staged_communicator(world));
  if (world.root()) std::printf("[ ranks ] device communicator: %s\n", which.c_str());
  return comms;
}

// The device communicators of the CUDA rank step (CUDA builds, on a GPU): the chosen one (NCCL
// with a GPU per rank, else host-staged) and the host-staged one sum a device buffer to the same
// values on every rank; the host-staged all-gather fills every rank's block.
TEST_F(TwoRanks, DeviceCommunicatorsSumOnTheDevice) {
  std::string reason;
  if (!every_rank_has_cuda(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
  const int n = world().size(), me = world().rank();
  std::vector<std::unique_ptr<DeviceCommunicator>> comms = both_device_communicators();
  cuda::Stream stream;
  for (auto& comm : comms) {
    std::vector<float> values(1000);
    for (size_t k = 0; k < values.size(); ++k) values[k] = static_cast<float>(k) + 0.5f * me;
    cuda::DeviceBuffer<float> d_values = cuda::to_device(values, stream.get());
    comm->allreduce_sum(d_values.data(), values.size(), stream.get());
    stream.synchronize();
    const std::vector<float> got = d_values.download(stream.get());
    for (size_t k = 0; k < got.size(); ++k) {
      ASSERT_EQ(got[k], static_cast<float>(n * k) + 0.25f * n * (n - 1)) << "element " << k;
    }
  }
  std::vector<uint32_t> blocks(3 * n, 0);
  for (int j = 0; j < 3; ++j) blocks[3 * me + j] = 100 * me + j;
  cuda::DeviceBuffer<uint32_t> d_blocks = cuda::to_device(blocks, stream.get());
  comms[1]->allgather_in_place(d_blocks.data(), 3 * sizeof(uint32_t), stream.get());
  const std::vector<uint32_t> gathered = d_blocks.download(stream.get());
  for (int r = 0; r < n; ++r) {
    for (int j = 0; j < 3; ++j) EXPECT_EQ(gathered[3 * r + j], static_cast<uint32_t>(100 * r + j));
  }
}

// Both device communicators' alltoallv: rank m sends rank r (r + m + 1) values 1000 m + 100 r + j,
// so blocks differ in size by sender and receiver, and each rank receives its blocks in rank order.
TEST_F(TwoRanks, DeviceCommunicatorsExchangeBlocksOfEverySize) {
  std::string reason;
  if (!every_rank_has_cuda(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
  const int n = world().size(), me = world().rank();
  std::vector<std::unique_ptr<DeviceCommunicator>> comms = both_device_communicators();
  cuda::Stream stream;
  std::vector<uint32_t> send;
  std::vector<size_t> send_bytes(n), recv_bytes(n);
  for (int r = 0; r < n; ++r) {
    for (int j = 0; j < r + me + 1; ++j) send.push_back(1000 * me + 100 * r + j);
    send_bytes[r] = (r + me + 1) * sizeof(uint32_t);
    recv_bytes[r] = (me + r + 1) * sizeof(uint32_t);
  }
  size_t received = 0;
  for (size_t b : recv_bytes) received += b / sizeof(uint32_t);
  for (auto& comm : comms) {
    cuda::DeviceBuffer<uint32_t> d_send = cuda::to_device(send, stream.get());
    cuda::DeviceBuffer<uint32_t> d_recv(received);
    comm->alltoallv(d_send.data(), send_bytes, d_recv.data(), recv_bytes, stream.get());
    stream.synchronize();
    const std::vector<uint32_t> got = d_recv.download(stream.get());
    size_t at = 0;
    for (int r = 0; r < n; ++r) {
      for (int j = 0; j < me + r + 1; ++j, ++at) {
        ASSERT_EQ(got[at], static_cast<uint32_t>(1000 * r + 100 * me + j)) << "from rank " << r << ", value " << j;
      }
    }
  }
}

// The device-resident shards against the host ones, step by step: each rank fetches the rows of
// its slice (ids shared by both ranks, repeated within a slice), both stores get the same
// gradients and apply them, and the gathered tables agree. SGD with L2, so each row's uses count.
TEST_F(TwoRanks, DeviceShardsFetchAndUpdateAsTheHostShards) {
  std::string reason;
  if (!every_rank_has_cuda(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
  const TrainingSet data = banded_training_set(151, 97);
  const ModelConfig config = config_of(data, ModelKind::kNeuMF);
  const OptimizerParams sgd = plain_sgd(0.01f);
  const TrainState whole = TrainState::fresh(ModelParams::initialize(config, 3), sgd);
  const int64_t f = config.factors, e = config.mlp_embedding(), rows = 5;
  const int me = world().rank();
  const std::vector<uint32_t> users{static_cast<uint32_t>(me), 5, 5, 150u - me, 8};
  const std::vector<uint32_t> items{static_cast<uint32_t>(me + 1), 3, 96, 3, 3};
  std::vector<float> user_gmf(rows * f), item_gmf(rows * f), mlp_input(rows * 2 * e);
  for (size_t k = 0; k < user_gmf.size(); ++k) user_gmf[k] = 0.01f * k + 0.1f * me, item_gmf[k] = 0.02f * k - me;
  for (size_t k = 0; k < mlp_input.size(); ++k) mlp_input[k] = 0.005f * k + 0.3f * me;

  TrainState host_state = whole;
  RankStep host(world(), host_state);
  host.fetch(users, items);
  host.update(user_gmf.data(), item_gmf.data(), mlp_input.data(), e, sgd, sgd.lr, 0.25f, nullptr);
  host.gather(host_state);

  TrainState device_state = whole;
  RankStep staged(world(), device_state);
  auto comm = make_host_staged_communicator(world());
  cuda::Stream stream;
  DeviceIdShards shards(world(), *comm, config, 2 * rows, stream.get());
  shards.upload(staged.shards(), nullptr);
  shards.fetch(users, items);
  std::vector<float> fetched(rows * shards.width());  // at most one row per slice row
  cuda::copy_to_host(fetched.data(), shards.rows(0), fetched.size() * sizeof(float), stream.get());
  std::vector<uint32_t> slots(rows);
  cuda::copy_to_host(slots.data(), shards.slots(0), rows * sizeof(uint32_t), stream.get());
  for (int64_t k = 0; k < rows; ++k) {
    for (int64_t j = 0; j < f; ++j) {
      ASSERT_EQ(fetched[slots[k] * shards.width() + j], whole.params.user_gmf.values[users[k] * f + j]) << k;
    }
  }
  cuda::DeviceBuffer<float> d_user = cuda::to_device(user_gmf, stream.get());
  cuda::DeviceBuffer<float> d_item = cuda::to_device(item_gmf, stream.get());
  cuda::DeviceBuffer<float> d_mlp = cuda::to_device(mlp_input, stream.get());
  shards.update(0, d_user.data(), d_mlp.data(), 2 * e, 0, sgd, sgd.lr, 0.25f);
  shards.update(1, d_item.data(), d_mlp.data(), 2 * e, e, sgd, sgd.lr, 0.25f);
  shards.download(staged.shards());
  staged.gather(device_state);
  if (!world().root()) return;
  EXPECT_TRUE(near_all(flatten(device_state), flatten(host_state), 1e-6, 1e-6));
  EXPECT_NE(flatten(device_state), flatten(whole));
}
#endif

// The NCCL path (CUDA + MPI builds): a device buffer summed over the ranks (also one rank alone,
// run without mpirun on a machine with one GPU). Skips without NCCL or without a GPU per rank.
TEST(Nccl, SumsDeviceBuffers) {
  Communicator& world = world_communicator();
  std::vector<float> values(1000);
  for (size_t k = 0; k < values.size(); ++k) values[k] = static_cast<float>(k) + 0.5f * world.rank();
  std::string reason;
  if (!nccl_allreduce_on_devices(world, values, &reason)) GTEST_SKIP() << "NCCL: " << reason;
  const int n = world.size();
  for (size_t k = 0; k < values.size(); ++k) {
    ASSERT_EQ(values[k], static_cast<float>(n * k) + 0.25f * n * (n - 1)) << "element " << k;
  }
}

}  // namespace
}  // namespace tastebud
