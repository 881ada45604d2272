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
  std::string layout = "shop";
  // Set when the flag was given: the movielens-100k layout has its own defaults (ml-100k's sizes).
  bool users_given = false, items_given = false, interactions_given = false;
  bool shop_only_given = false;  // --clusters, --cold-items, --impressions or --device-effect
};

void run_generate_movielens(const GenerateArgs& args) {
  if (args.shop_only_given) {
    throw Error(
        "generate: --clusters, --cold-items, --impressions and --device-effect apply to --layout "
        "shop only");
  }
  datasets::MovieLens100kOptions o;
  if (args.users_given) o.users = args.options.users;
  if (args.items_given) o.items = args.options.items;
  if (args.interactions_given) o.ratings = args.options.interactions;
  o.seed = args.options.seed;
  const auto start = std::chrono::steady_clock::now();
  const datasets::MovieLens100kFiles files = datasets::generate_movielens_100k(o, args.out_dir);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto report = [](const std::filesystem::path& path, uint64_t rows) {
    fmt::print("wrote {}: {} rows, {:.1f} MB\n", path.string(), rows,
               std::filesystem::file_size(path) / 1e6);
  };
  report(files.ratings, o.ratings);
  report(files.items, o.items);
  report(files.users, o.users);
  fmt::print(
      "generated a synthetic dataset in the ml-100k layout (not the real MovieLens ratings): {} "
      "users, {} items, {} ratings, seed {}, in {:.2f} s; import it with `tastebud import "
      "--movielens {}`\n",
      o.users, o.items, o.ratings, o.seed, seconds, args.out_dir);
}

void run_generate(const GenerateArgs& args) {
  if (args.layout == "movielens-100k") {
    run_generate_movielens(args);
    return;
  }
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
  std::string signals;
  if (o.impressions > 0) signals += fmt::format(", {} impressions per row", o.impressions);
  if (o.device_effect > 0.0) signals += fmt::format(", device effect {:g}", o.device_effect);
  fmt::print(
      "generated {} users, {} items ({} clusters, {:.0f}% cold{}), seed {}, in {:.2f} s "
      "({:.0f} MB/s)\n",
      o.users, o.items, o.clusters, 100.0 * o.cold_item_share, signals, o.seed, seconds,
      total_bytes / 1e6 / std::max(seconds, 1e-9));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand(
      "generate",
      "Write a synthetic shop (interactions.csv, users.csv, items.csv in the Personalize layout) "
      "with latent taste clusters, a long tail, a view/cart/purchase funnel and trending items; "
      "or, with --layout movielens-100k, synthetic ratings in the ml-100k layout (u.data, u.item, "
      "u.user) whose taste depends on genres and demographics");
  auto& o = args->options;
  cmd->add_option("--layout", args->layout,
                  "shop (Personalize-layout CSVs) or movielens-100k (u.data, u.item, u.user; "
                  "defaults 943 users, 1682 items, 100000 ratings, at least 20 per user)")
      ->capture_default_str()
      ->check(CLI::IsMember({"shop", "movielens-100k"}));
  auto* users = cmd->add_option("--users", o.users, "Number of users")
                    ->capture_default_str()
                    ->check(CLI::PositiveNumber);
  auto* items = cmd->add_option("--items", o.items, "Number of items")
                    ->capture_default_str()
                    ->check(CLI::PositiveNumber);
  auto* interactions =
      cmd->add_option("--interactions", o.interactions,
                      "Number of rows in interactions.csv (views, carts and purchases together); "
                      "movielens-100k: number of ratings")
          ->capture_default_str();
  auto* clusters = cmd->add_option("--clusters", o.clusters, "Number of latent taste clusters")
                       ->capture_default_str()
                       ->check(CLI::Range(1u, 65536u));
  auto* cold_items =
      cmd->add_option("--cold-items", o.cold_item_share,
                      "Share of items listed in items.csv that get no interactions (0 to 1)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 1.0));
  auto* impressions =
      cmd->add_option("--impressions", o.impressions,
                      "Add an IMPRESSION column: this many items shown with each interaction "
                      "(popular items, a random category's, a few of the user's own), never the "
                      "row's item; 0: no column")
          ->capture_default_str()
          ->check(CLI::Range(0u, datasets::kMaxGeneratorImpressions));
  auto* device_effect =
      cmd->add_option("--device-effect", o.device_effect,
                      "Let DEVICE_TYPE shift which items an event goes to: each item suits one "
                      "device and a suitable item is exp(S) times as likely; 0: no effect")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 20.0));
  cmd->add_option("--seed", o.seed, "Random seed; the same seed writes the same files")
      ->capture_default_str();
  cmd->add_option("--threads", o.threads,
                  "Worker threads (0: all cores); does not change the output")
      ->capture_default_str();
  cmd->add_option("--out", args->out_dir, "Directory to write the three CSV files into (created)")
      ->required();
  cmd->callback(
      [args, users, items, interactions, clusters, cold_items, impressions, device_effect] {
        args->users_given = users->count() > 0;
        args->items_given = items->count() > 0;
        args->interactions_given = interactions->count() > 0;
        args->shop_only_given = clusters->count() > 0 || cold_items->count() > 0 ||
                                impressions->count() > 0 || device_effect->count() > 0;
        run_generate(*args);
      });
}

}  // namespace tastebud::host
