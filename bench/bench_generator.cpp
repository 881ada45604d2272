// Synthetic-shop generation speed: rows and bytes per second of the three CSV files, by thread
// count. The output goes to the temp directory (usually page cache), so this measures generation
// and formatting, not the disk.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "tastebud/datasets/sources.h"

namespace {

namespace fs = std::filesystem;

void BM_GenerateShop(benchmark::State& state) {
  tastebud::datasets::GeneratorOptions options;
  options.interactions = static_cast<uint64_t>(state.range(0));
  options.users = static_cast<uint32_t>(options.interactions / 145);  // MovieLens-20M's ratio
  options.items = options.users / 5;
  options.threads = static_cast<uint32_t>(state.range(1));
  const fs::path dir =
      fs::temp_directory_path() / ("tastebud_bench_generator_" + std::to_string(::getpid()));
  uint64_t bytes = 0;
  for (auto _ : state) {
    const auto files = tastebud::datasets::generate_shop(options, dir);
    bytes =
        fs::file_size(files.interactions) + fs::file_size(files.users) + fs::file_size(files.items);
  }
  fs::remove_all(dir);
  state.SetBytesProcessed(static_cast<int64_t>(bytes * state.iterations()));
  state.counters["rows/s"] = benchmark::Counter(
      static_cast<double>(options.interactions * state.iterations()), benchmark::Counter::kIsRate);
  state.counters["MB"] = static_cast<double>(bytes) / 1e6;
}

BENCHMARK(BM_GenerateShop)
    ->ArgNames({"interactions", "threads"})
    ->Args({1'000'000, 1})
    ->Args({1'000'000, 2})
    ->Args({5'000'000, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
