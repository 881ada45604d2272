// CPU kernel micro-benchmarks and the whole training step, with bytes and FLOPs as counters.
#include <benchmark/benchmark.h>

#include <omp.h>

#include <numeric>
#include <random>
#include <vector>

#include "cpu/aligned.h"
#include "cpu/dense.h"
#include "cpu/embedding.h"
#include "cpu/sampler.h"
#include "tastebud/engine/sequence_trainer.h"
#include "tastebud/engine/trainer.h"
#include "tastebud/sampler_math.h"

namespace tastebud {
namespace {

void BM_SampleNegatives(benchmark::State& state) {
  const uint32_t num_items = 27000;
  std::vector<uint32_t> positives(static_cast<size_t>(state.range(0)));
  for (size_t k = 0; k < positives.size(); ++k) positives[k] = static_cast<uint32_t>(k * 7);
  const bool popularity = state.range(1) != 0;
  std::vector<double> weights(num_items);
  for (uint32_t i = 0; i < num_items; ++i) weights[i] = 1.0 / (i + 1);
  const auto table = cpu::AliasTable::build(weights);
  uint64_t draw = 0;
  for (auto _ : state) {
    for (int k = 0; k < 1024; ++k, ++draw) {
      benchmark::DoNotOptimize(draw_negative(1, RandomStream::kNegatives, 0, draw, positives.data(),
                                             positives.size(), num_items,
                                             popularity ? table.probability.data() : nullptr,
                                             popularity ? table.alias.data() : nullptr));
    }
  }
  state.SetItemsProcessed(state.iterations() * 1024);
}
BENCHMARK(BM_SampleNegatives)->ArgsProduct({{20, 500}, {0, 1}})->ArgNames({"positives", "popularity"});

void BM_GatherRows(benchmark::State& state) {
  const int64_t width = state.range(0), rows = 4096, table_rows = 138000;
  std::vector<float> table(table_rows * width, 1.0f);
  cpu::AlignedVector<float> out(rows * width);
  std::vector<uint32_t> ids(rows);
  std::mt19937 rng(1);
  for (auto& id : ids) id = rng() % table_rows;
  for (auto _ : state) {
    cpu::gather_rows(table.data(), width, ids, out.data(), width, 0);
    benchmark::ClobberMemory();
  }
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * rows * width * 8,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GatherRows)->Arg(8)->Arg(32)->Arg(64);

void BM_DenseForwardBackward(benchmark::State& state) {
  const int64_t rows = state.range(0), in = state.range(1), out = state.range(2);
  cpu::AlignedVector<float> x(rows * in, 0.5f), w(in * out, 0.01f), b(out, 0.1f), y(rows * out),
      dy(rows * out, 0.1f), dw(in * out), db(out), dx(rows * in);
  for (auto _ : state) {
    cpu::dense_forward<float>(x.data(), rows, in, w.data(), b.data(), out, true, y.data());
    cpu::dense_backward<float>(x.data(), y.data(), dy.data(), rows, in, w.data(), out, true, dw.data(),
                               db.data(), dx.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * 6.0 * rows * in * out,
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DenseForwardBackward)->Args({64, 64, 32})->Args({256, 64, 32})->Args({1024, 512, 256});

// The whole CPU training step: samples per second at the paper's model size.
void BM_TrainStep(benchmark::State& state) {
  const uint32_t users = 6000, items = 3000, per_user = 16;
  TrainingSet data;
  data.num_users = users;
  data.num_items = items;
  std::mt19937 rng(2);
  for (uint32_t u = 0; u < users; ++u) {
    std::vector<uint32_t> mine;
    while (mine.size() < per_user) mine.push_back(rng() % items);
    std::sort(mine.begin(), mine.end());
    mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
    for (uint32_t i : mine) {
      data.user.push_back(u);
      data.item.push_back(i);
    }
  }
  data.finalize();
  TrainOptions options;
  options.batch_size = static_cast<uint32_t>(state.range(0));
  options.threads = static_cast<uint32_t>(state.range(1));
  ModelConfig config;
  config.num_users = users;
  config.num_items = items;
  auto backend = make_cpu_backend(data, options, TrainState::fresh(ModelParams::initialize(config, 1), options.optimizer));
  uint32_t epoch = 0;
  uint64_t samples = 0;
  for (auto _ : state) samples += backend->train_epoch(epoch++, {}).samples;
  state.counters["samples/s"] = benchmark::Counter(static_cast<double>(samples), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TrainStep)->ArgsProduct({{256, 2048}, {1, 2}})->ArgNames({"batch", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();

// The sequence model's CPU training step (engine/sequence_trainer.h) at its defaults (hidden 64,
// 2 blocks, 1 head, 128 sequences a step, 1 negative): training positions per second over users
// whose histories run from 10 to 200 items.
void BM_SequenceTrainStep(benchmark::State& state) {
  const uint32_t users = 1024, items = 4000;
  SequenceSet data;
  data.num_items = items;
  data.offsets.push_back(0);
  std::mt19937 rng(3);
  for (uint32_t u = 0; u < users; ++u) {
    const uint32_t length = 10 + rng() % 191;
    for (uint32_t t = 0; t < length; ++t) {
      data.items.push_back(rng() % items);
      data.weights.push_back(1.0f);
    }
    data.offsets.push_back(data.items.size());
  }
  SequenceConfig config;
  config.num_items = items;
  config.max_sequence = static_cast<uint32_t>(state.range(0));
  SequenceTrainOptions options;
  options.optimizer.lr = 0.005f;
  options.threads = static_cast<uint32_t>(state.range(1));
  SequenceState start;
  start.params = SequenceParams::initialize(config, 1);
  SequenceTrainer trainer(data, options, std::move(start));
  uint32_t epoch = 0;
  uint64_t positions = 0;
  for (auto _ : state) positions += trainer.train_epoch(epoch++, {}).samples;
  state.counters["positions/s"] = benchmark::Counter(static_cast<double>(positions), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SequenceTrainStep)->ArgsProduct({{50, 200}, {1, 2}})->ArgNames({"max_sequence", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace tastebud

BENCHMARK_MAIN();
