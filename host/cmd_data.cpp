#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/core.h>

#include "host/commands.h"
#include "host/progress.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/datasets/summary.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;

struct ImportArgs {
  std::string interactions, users, items, schema_dir, out, movielens;
  std::string mode = "full";
  std::string memory_limit;  // empty: the library's default
  bool overwrite = false;
  uint64_t max_bad_rows = 0;
  bool quiet = false;
};

// A scratch directory for converted MovieLens CSVs, removed however the import ends.
class ScratchDir {
 public:
  ScratchDir() {
    path_ = fs::temp_directory_path() / fmt::format("tastebud-movielens-{}", ::getpid());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// "256M", "2G", "512K", "1048576" (bytes); K, M, G, T are powers of 1024, an optional trailing
// "B" or "iB" is allowed.
uint64_t parse_memory_limit(const std::string& text) {
  constexpr uint64_t kFloor = uint64_t{16} << 20;
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  std::string unit = text.substr(digits);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.ends_with("IB")) unit.resize(unit.size() - 2);
  else if (unit.size() > 1 && unit.ends_with("B")) unit.resize(unit.size() - 1);
  else if (unit == "B") unit.clear();
  const std::string units = "KMGT";
  const size_t power = unit.empty() ? 0 : units.find(unit) + 1;
  if (digits == 0 || digits > 15 || unit.size() > 1 || power == 0) {
    throw Error(fmt::format("import: --memory-limit {}: expected a size such as 256M or 2G (K, M, G, "
                            "T: powers of 1024)",
                            text));
  }
  const uint64_t number = std::stoull(text.substr(0, digits));
  if (number > (UINT64_MAX >> (10 * power))) {
    throw Error(fmt::format("import: --memory-limit {}: too large", text));
  }
  const uint64_t bytes = number << (10 * power);
  if (bytes < kFloor) {
    throw Error(fmt::format("import: --memory-limit {}: below the smallest limit the command takes, "
                            "16M",
                            text));
  }
  return bytes;
}

void run_import(const ImportArgs& args) {
  datasets::ImportOptions options;
  if (!args.memory_limit.empty()) options.memory_limit = parse_memory_limit(args.memory_limit);
  options.interactions = args.interactions;
  options.users = args.users;
  options.items = args.items;
  options.schema_dir = args.schema_dir;
  options.out = args.out;
  options.mode = args.mode == "incremental" ? datasets::ImportMode::Incremental
                                            : datasets::ImportMode::Full;
  options.overwrite = args.overwrite;
  options.max_bad_rows = args.max_bad_rows;
  ProgressLine progress("MB", true);
  options.on_bad_row = [&](const std::string& message) {
    progress.clear();
    std::fprintf(stderr, "tastebud: skipped bad row: %s\n", message.c_str());
  };
  options.on_progress = [&](uint64_t read, uint64_t total) {
    progress.update("import", total > 0 ? static_cast<double>(read) / total : -1.0, read / 1e6);
  };

  std::unique_ptr<ScratchDir> scratch;
  if (!args.movielens.empty()) {
    scratch = std::make_unique<ScratchDir>();
    const datasets::CsvFiles files = datasets::convert_movielens(args.movielens, scratch->path());
    options.interactions = files.interactions;
    options.users = files.users;
    options.items = files.items;
  }
  if (options.interactions.empty() && options.mode == datasets::ImportMode::Full) {
    throw Error("import: give the interactions file (--interactions FILE) or a MovieLens directory "
                "(--movielens DIR)");
  }

  const datasets::ImportReport report = datasets::import_dataset(options);
  progress.clear();
  const double mb = report.interactions_bytes / 1e6;
  fmt::print("imported {} interactions ({} read, {} duplicates dropped, {} bad rows skipped), "
             "{} users ({} new), {} items ({} new) into {} in {:.2f} s ({:.0f} MB/s of "
             "interactions)\n",
             report.interactions, report.rows_read, report.duplicates, report.bad_rows_skipped,
             report.users, report.new_users, report.items, report.new_items, args.out,
             report.seconds, mb / std::max(report.seconds, 1e-9));
  fmt::print("  read and encode {:.2f} s, sort {:.2f} s, write {:.2f} s; memory limit {} MiB, {}\n",
             report.read_seconds, report.sort_seconds, report.write_seconds,
             report.memory_limit >> 20,
             report.runs_spilled == 0
                 ? std::string("sorted in memory")
                 : fmt::format("{} sorted runs spilled ({:.0f} MB) and merged", report.runs_spilled,
                               report.bytes_spilled / 1e6));
  if (!args.quiet) {
    fmt::print("{}", datasets::format_summary(datasets::Dataset::open(args.out)));
  }
}

}  // namespace

void add_data_commands(CLI::App& app) {
  auto args = std::make_shared<ImportArgs>();
  auto* import = app.add_subcommand(
      "import",
      "Encode Personalize-layout CSV exports (interactions, users, items) into a dataset directory "
      "of memory-mappable columns");
  // Each input is a file, a directory of part files or a quoted glob; the library checks it.
  auto* interactions = import->add_option(
      "--interactions", args->interactions,
      "Interactions CSV: USER_ID, ITEM_ID, TIMESTAMP (Unix seconds), optional EVENT_TYPE, "
      "EVENT_VALUE, IMPRESSION and contextual columns. A file, a directory of part files (*.csv, "
      "*.csv.gz; read in name order, one shared header) or a quoted glob ('parts/part-*.csv.gz'); "
      ".gz files are decompressed");
  import->add_option("--users", args->users,
                     "Users CSV: USER_ID and metadata columns (file, directory or glob, as "
                     "--interactions)");
  import->add_option("--items", args->items,
                     "Items CSV: ITEM_ID, metadata columns, optional CREATION_TIMESTAMP and one "
                     "textual column (file, directory or glob, as --interactions)");
  import->add_option("--schema-dir", args->schema_dir,
                     "Directory with Avro-record schemas interactions.json, users.json, items.json "
                     "(each optional; a missing one is inferred, and every schema used is saved in "
                     "DATASET_DIR/schema/ for review and reuse)")
      ->check(CLI::ExistingDirectory);
  auto* movielens = import->add_option(
      "--movielens", args->movielens,
      "A MovieLens directory (100K, 1M, 20M or latest layout) to import instead of CSV exports");
  movielens->check(CLI::ExistingDirectory);
  movielens->excludes(interactions);
  import->add_option("--mode", args->mode,
                     "full: build the dataset from these files; incremental: add them to the "
                     "existing dataset (known ids keep their indices, a record with a known id "
                     "replaces the old one)")
      ->capture_default_str()
      ->check(CLI::IsMember({"full", "incremental"}));
  import->add_option("--out", args->out, "Dataset directory to write")->required();
  import->add_flag("--overwrite", args->overwrite,
                   "Full mode: replace an existing dataset at --out (it stays intact until the new "
                   "one is complete)");
  import->add_option("--max-bad-rows", args->max_bad_rows,
                     "Skip up to this many bad rows, reporting each on stderr, before failing")
      ->capture_default_str();
  import->add_option("--memory-limit", args->memory_limit,
                     "Memory the import may use for its rows, e.g. 256M or 2G (default: a quarter "
                     "of physical memory). Beyond it the sort spills sorted runs to disk beside "
                     "--out and merges them; the dataset is the same whatever the limit. At least "
                     "16M");
  import->add_flag("--quiet", args->quiet, "Print only the one-line report, not the summary");
  import->callback([args] { run_import(*args); });

  auto dir = std::make_shared<std::string>();
  auto* info = app.add_subcommand(
      "info", "Print a dataset's counts, schemas and warnings where it is too small to learn from");
  info->add_option("DATASET_DIR", *dir, "Dataset directory written by `tastebud import`")
      ->required()
      ->check(CLI::ExistingDirectory);
  auto verify = std::make_shared<bool>(false);
  info->add_flag("--verify", *verify,
                 "Also recompute every column's CRC-32 (reads the whole dataset); exit 1 naming a "
                 "damaged column");
  info->callback([dir, verify] {
    const datasets::Dataset dataset = datasets::Dataset::open(*dir);
    if (*verify) datasets::verify_columns(*dir);
    fmt::print("{}", datasets::format_summary(dataset));
    if (*verify) fmt::print("verified: every column's CRC-32 matches\n");
  });
}

}  // namespace tastebud::host
