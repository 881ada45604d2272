#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "host/commands.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

struct GenerateArgs {
  datasets::GeneratorOptions options;
  std::string out_dir;
};

void run_generate(const GenerateArgs& args) {
  const auto start = std::chrono::steady_clock::now();
  const datasets::CsvFiles files = datasets::generate_shop(args.options, args.out_dir);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const auto& o = args.options;
  uint64_t total_bytes = 0;
  const auto report = [&total_bytes](const std::filesystem::path& path, uint64_t rows) {
    const uint64_t bytes = std::filesystem::file_size(path);
    total_bytes += bytes;
    fmt::print("wrote {}: {} rows, {:.1f} MB\n", path.string(), rows, bytes / 1e6);
  };
  report(files.interactions, o.interactions);
  report(files.users, o.users);
  report(files.items, o.items);
  fmt::print(
      "generated {} users, {} items ({} clusters, {:.0f}% cold), seed {}, in {:.2f} s "
      "({:.0f} MB/s)\n",
      o.users, o.items, o.clusters, 100.0 * o.cold_item_share, o.seed, seconds,
      total_bytes / 1e6 / std::max(seconds, 1e-9));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand(
      "generate",
      "Write a synthetic shop (interactions.csv, users.csv, items.csv in the Personalize layout) "
      "with latent taste clusters, a long tail, a view/cart/purchase funnel and trending items");
  auto& o = args->options;
  cmd->add_option("--users", o.users, "Number of users")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--items", o.items, "Number of items")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--interactions", o.interactions,
                  "Number of rows in interactions.csv (views, carts and purchases together)")
      ->capture_default_str();
  cmd->add_option("--clusters", o.clusters, "Number of latent taste clusters")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  cmd->add_option("--cold-items", o.cold_item_share,
                  "Share of items listed in items.csv that get no interactions (0 to 1)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", o.seed, "Random seed; the same seed writes the same files")
      ->capture_default_str();
  cmd->add_option("--threads", o.threads,
                  "Worker threads (0: all cores); does not change the output")
      ->capture_default_str();
  cmd->add_option("--out", args->out_dir, "Directory to write the three CSV files into (created)")
      ->required();
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace tastebud::host
