// Imports of any size (issue 12): a bounded import whose data is far larger than its memory limit
// (sorted runs spilled, merged in several passes) writes the same bytes as an unbounded one, full
// and incremental; part files, globs and .gz files give the dataset of the concatenated plain CSV;
// a bad row in a part names that part and its line; damaged gzip data is a clear error.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/input_files.h"
#include "tastebud/error.h"
#include "run_cli.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kTinyLimit = uint64_t{64} << 10;  // 64 KiB: hundreds of rows per run
const std::string kHeader = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE,DEVICE_TYPE,DWELL,IMPRESSION\n";

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_bytes(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

void write_gzip(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// Rows in no order, with many exact duplicates (a small range of users, items and times) whose
// context values differ, so that which duplicate survives shows in the output; nulls; impressions.
std::vector<std::string> random_rows(size_t n, uint32_t seed, uint32_t users = 400,
                                     uint32_t items = 150, uint32_t times = 60) {
  std::mt19937 rng(seed);
  const char* events[] = {"view", "click", "purchase"};
  const char* devices[] = {"mobile", "desktop", "tv", ""};
  std::vector<std::string> rows;
  for (size_t r = 0; r < n; ++r) {
    std::string row = "u";
    row += std::to_string(rng() % users) + ",i" + std::to_string(rng() % items) + "," +
           std::to_string(1000 + rng() % times) + "," + events[rng() % 3] + ",";
    if (rng() % 3 != 0) row += std::to_string(rng() % 50) + ".5";
    row += std::string(",") + devices[rng() % 4] + ",";
    if (rng() % 2 == 0) row += std::to_string(rng() % 1000);
    row += ",";
    const uint32_t shown = rng() % 4;
    for (uint32_t k = 0; k < shown; ++k) {
      row += k ? "|i" : "i";
      row += std::to_string(rng() % 200);
    }
    rows.push_back(row + "\n");
  }
  return rows;
}

std::string csv_of(const std::vector<std::string>& rows, size_t begin, size_t end) {
  std::string text = kHeader;
  for (size_t r = begin; r < end; ++r) text += rows[r];
  return text;
}

// Two dataset directories hold the same files with the same bytes; meta.json is compared without
// its import history (the time of each import and the argument it was given).
::testing::AssertionResult same_dataset(const fs::path& a, const fs::path& b) {
  std::map<std::string, fs::path> files_a, files_b;
  for (const auto& e : fs::recursive_directory_iterator(a))
    if (e.is_regular_file()) files_a[fs::relative(e.path(), a).string()] = e.path();
  for (const auto& e : fs::recursive_directory_iterator(b))
    if (e.is_regular_file()) files_b[fs::relative(e.path(), b).string()] = e.path();
  for (const auto& [name, path] : files_a) {
    if (!files_b.contains(name)) return ::testing::AssertionFailure() << name << " only in " << a;
    std::string x = read_bytes(path), y = read_bytes(files_b[name]);
    if (name == "meta.json") {
      auto strip = [](const std::string& text) {
        auto json = nlohmann::ordered_json::parse(text);
        json.erase("imports");
        return json.dump();
      };
      x = strip(x);
      y = strip(y);
    }
    if (x != y) {
      size_t at = 0;
      while (at < std::min(x.size(), y.size()) && x[at] == y[at]) ++at;
      return ::testing::AssertionFailure() << name << " differs at byte " << at << " (sizes "
                                           << x.size() << ", " << y.size() << ")";
    }
  }
  for (const auto& [name, path] : files_b)
    if (!files_a.contains(name)) return ::testing::AssertionFailure() << name << " only in " << b;
  return ::testing::AssertionSuccess() << files_a.size() << " files";
}

class ImportBounded : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("tastebud_test_import_bounded_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  ImportReport import(const fs::path& interactions, const fs::path& out, uint64_t memory_limit,
                      ImportMode mode = ImportMode::Full) {
    ImportOptions o;
    o.interactions = interactions;
    o.out = out;
    o.mode = mode;
    o.memory_limit = memory_limit;
    o.block_size = 4096;
    return import_dataset(o);
  }

  std::string import_error(const fs::path& interactions) {
    try {
      import(interactions, root_ / "failed", 0);
    } catch (const Error& e) {
      EXPECT_FALSE(fs::exists(root_ / "failed"));
      return e.what();
    }
    ADD_FAILURE() << "no error importing " << interactions;
    return "";
  }

  fs::path root_;
};

TEST_F(ImportBounded, SpilledImportIsByteIdenticalToTheInMemoryOne) {
  const std::vector<std::string> rows = random_rows(20000, 7, 100, 30, 20);
  const fs::path csv = root_ / "in" / "interactions.csv";
  write_bytes(csv, csv_of(rows, 0, rows.size()));
  ASSERT_GT(fs::file_size(csv), 8 * kTinyLimit);

  const ImportReport unbounded = import(csv, root_ / "unbounded", 0);
  EXPECT_EQ(unbounded.runs_spilled, 0u);
  const ImportReport bounded = import(csv, root_ / "bounded", kTinyLimit);
  EXPECT_GT(bounded.runs_spilled, 10u);
  EXPECT_GT(bounded.merge_passes, 0u);  // more runs than one merge takes at this limit
  EXPECT_EQ(bounded.interactions, unbounded.interactions);
  EXPECT_GT(unbounded.duplicates, 100u);  // the data does exercise duplicates across runs
  EXPECT_EQ(bounded.duplicates, unbounded.duplicates);
  EXPECT_TRUE(same_dataset(root_ / "unbounded", root_ / "bounded"));
  // The spill files are gone with the temporary directory.
  for (const auto& e : fs::directory_iterator(root_)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << "left behind: " << e.path();
  }

  // The merged order is the dataset's order: (user, timestamp, item, event type), no exact repeats.
  const Dataset ds = Dataset::open(root_ / "bounded");
  const Interactions& x = ds.interactions;
  for (size_t r = 1; r < x.size(); ++r) {
    const auto a = std::tuple(x.user[r - 1], x.timestamp[r - 1], x.item[r - 1], x.event_type[r - 1]);
    const auto b = std::tuple(x.user[r], x.timestamp[r], x.item[r], x.event_type[r]);
    ASSERT_LT(a, b) << "row " << r;
  }
}

// Columns and runs are written with O_DIRECT; tmpfs refuses it and gets the same bytes through
// the page cache.
TEST_F(ImportBounded, FileSystemsWithoutDirectIoGetTheSameDataset) {
  const fs::path shm = "/dev/shm";
  ASSERT_TRUE(fs::is_directory(shm)) << "this test needs the tmpfs at /dev/shm (Linux mounts it everywhere)";
  const std::vector<std::string> rows = random_rows(6000, 21, 100, 30, 20);
  const fs::path csv = root_ / "in" / "interactions.csv";
  write_bytes(csv, csv_of(rows, 0, rows.size()));
  const fs::path there = shm / ("tastebud_test_import_bounded_" + std::to_string(::getpid()));
  fs::remove_all(there);
  import(csv, root_ / "here", kTinyLimit);
  const ImportReport report = import(csv, there / "ds", kTinyLimit);
  EXPECT_GT(report.runs_spilled, 5u);
  EXPECT_TRUE(same_dataset(root_ / "here", there / "ds"));
  fs::remove_all(there);
}

TEST_F(ImportBounded, IncrementalBoundedImportEqualsUnbounded) {
  const std::vector<std::string> rows = random_rows(16000, 11);
  // The second batch repeats some events of the first with other values: they replace them.
  std::vector<std::string> second(rows.begin() + 6000, rows.begin() + 9000);
  const std::vector<std::string> fresh = random_rows(8000, 12, 600);  // new users too
  second.insert(second.end(), fresh.begin(), fresh.end());
  const fs::path first_csv = root_ / "in" / "first.csv", second_csv = root_ / "in" / "second.csv";
  write_bytes(first_csv, csv_of(rows, 0, 10000));
  write_bytes(second_csv, csv_of(second, 0, second.size()));

  import(first_csv, root_ / "unbounded", 0);
  import(first_csv, root_ / "bounded", kTinyLimit);
  const ImportReport unbounded = import(second_csv, root_ / "unbounded", 0, ImportMode::Incremental);
  const ImportReport bounded = import(second_csv, root_ / "bounded", kTinyLimit, ImportMode::Incremental);
  EXPECT_GT(bounded.runs_spilled, 5u);
  EXPECT_GT(unbounded.duplicates, 1000u);
  EXPECT_EQ(bounded.duplicates, unbounded.duplicates);
  EXPECT_GT(bounded.new_users, 0u);
  EXPECT_TRUE(same_dataset(root_ / "unbounded", root_ / "bounded"));
}

TEST_F(ImportBounded, PartFilesGlobsAndGzipEqualTheConcatenatedCsv) {
  const std::vector<std::string> rows = random_rows(9000, 5);
  const fs::path whole = root_ / "whole.csv";
  write_bytes(whole, csv_of(rows, 0, rows.size()));
  // Four parts, in name order, each with the header; two compressed; plus files to ignore.
  const size_t cuts[] = {0, 1000, 4000, 4001, rows.size()};
  const fs::path parts = root_ / "export";
  for (int p = 0; p < 4; ++p) {
    const std::string text = csv_of(rows, cuts[p], cuts[p + 1]);
    const fs::path name = parts / ("part-0000" + std::to_string(p) + (p % 2 ? ".csv.gz" : ".csv"));
    if (p % 2) {
      write_gzip(name, text);
    } else {
      write_bytes(name, text);
    }
  }
  write_bytes(parts / "_SUCCESS", "");
  write_bytes(parts / ".part-00000.csv.crc", "junk");
  EXPECT_EQ(expand_input(parts).size(), 4u);

  import(whole, root_ / "from_whole", 0);
  import(parts, root_ / "from_directory", 0);
  EXPECT_TRUE(same_dataset(root_ / "from_whole", root_ / "from_directory"));
  import((parts / "part-*").string(), root_ / "from_glob", kTinyLimit);
  EXPECT_TRUE(same_dataset(root_ / "from_whole", root_ / "from_glob"));

  // One gzip file of the whole CSV, also bounded.
  write_gzip(root_ / "whole.csv.gz", read_bytes(whole));
  const ImportReport gz = import(root_ / "whole.csv.gz", root_ / "from_gzip", kTinyLimit);
  EXPECT_EQ(gz.interactions_bytes, fs::file_size(root_ / "whole.csv.gz"));
  EXPECT_TRUE(same_dataset(root_ / "from_whole", root_ / "from_gzip"));
}

TEST_F(ImportBounded, ABadRowInAPartNamesThatPartAndItsLine) {
  const std::vector<std::string> rows = random_rows(40, 3);
  const fs::path parts = root_ / "export";
  for (int p = 1; p <= 4; ++p) {
    std::string text = csv_of(rows, (p - 1) * 10, p * 10);
    if (p == 3) text += "u1,i1,soon,view,,mobile,,\n";  // line 12 of part 3
    write_bytes(parts / ("part-" + std::to_string(p) + ".csv"), text);
  }
  const std::string message = import_error(parts);
  EXPECT_NE(message.find((parts / "part-3.csv").string() + ":12: field 3 (TIMESTAMP)"), std::string::npos)
      << message;
  EXPECT_NE(message.find("\"soon\""), std::string::npos) << message;
}

TEST_F(ImportBounded, PartsMustShareTheFirstPartsHeader) {
  const std::vector<std::string> rows = random_rows(20, 3);
  const fs::path parts = root_ / "export";
  write_bytes(parts / "a.csv", csv_of(rows, 0, 10));
  std::string other = csv_of(rows, 10, 20);
  other.replace(0, 7, "USERID,");
  write_bytes(parts / "b.csv", other);
  const std::string message = import_error(parts);
  EXPECT_NE(message.find((parts / "b.csv").string() + ":1: the header"), std::string::npos) << message;
  EXPECT_NE(message.find("differs from the first part's"), std::string::npos) << message;

  write_bytes(root_ / "empty" / "readme.txt", "no parts here");
  EXPECT_NE(import_error(root_ / "empty").find("holds no part files"), std::string::npos);
  EXPECT_NE(import_error(root_ / "nowhere" / "part-*.csv").find("no file matches"), std::string::npos);
}

TEST_F(ImportBounded, DamagedGzipDataIsAClearError) {
  const std::vector<std::string> rows = random_rows(5000, 9);
  write_gzip(root_ / "good.csv.gz", csv_of(rows, 0, rows.size()));
  const std::string good = read_bytes(root_ / "good.csv.gz");
  ASSERT_GT(good.size(), 1000u);

  std::string corrupt = good;
  for (size_t i = good.size() / 2; i < good.size() / 2 + 64; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  write_bytes(root_ / "corrupt.csv.gz", corrupt);
  std::string message = import_error(root_ / "corrupt.csv.gz");
  EXPECT_NE(message.find((root_ / "corrupt.csv.gz").string() + ": corrupt gzip data"), std::string::npos)
      << message;

  write_bytes(root_ / "cut.csv.gz", good.substr(0, good.size() / 2));
  message = import_error(root_ / "cut.csv.gz");
  EXPECT_NE(message.find((root_ / "cut.csv.gz").string() + ": the gzip data is truncated"), std::string::npos)
      << message;

  write_bytes(root_ / "plain.csv.gz", csv_of(rows, 0, 10));
  message = import_error(root_ / "plain.csv.gz");
  EXPECT_NE(message.find((root_ / "plain.csv.gz").string() + ": not gzip data"), std::string::npos) << message;
}

using testing_cli::run_cli;

TEST_F(ImportBounded, CommandLineTakesAMemoryLimitAndPartDirectories) {
  const std::vector<std::string> rows = random_rows(3000, 4);
  write_bytes(root_ / "export" / "part-1.csv", csv_of(rows, 0, 1500));
  write_gzip(root_ / "export" / "part-2.csv.gz", csv_of(rows, 1500, 3000));
  std::string output;
  EXPECT_EQ(run_cli("import --interactions " + (root_ / "export").string() + " --out " +
                        (root_ / "ds").string() + " --memory-limit 16M --quiet",
                    &output),
            0)
      << output;
  EXPECT_NE(output.find("memory limit 16 MiB, sorted in memory"), std::string::npos) << output;
  EXPECT_EQ(Dataset::open(root_ / "ds").interactions.size() + 0u > 0u, true);

  EXPECT_EQ(run_cli("import --interactions " + (root_ / "export").string() + " --out " +
                        (root_ / "ds2").string() + " --memory-limit 64K",
                    &output),
            1);
  EXPECT_NE(output.find("--memory-limit 64K: below the smallest limit the command takes, 16M"),
            std::string::npos)
      << output;
  EXPECT_EQ(run_cli("import --interactions " + (root_ / "export").string() + " --out " +
                        (root_ / "ds2").string() + " --memory-limit lots",
                    &output),
            1);
  EXPECT_NE(output.find("--memory-limit lots: expected a size such as 256M or 2G"), std::string::npos)
      << output;
  EXPECT_FALSE(fs::exists(root_ / "ds2"));
}

// The peak resident set (bytes) of `tastebud ARGS` run to its end in a child.
uint64_t peak_rss_of(const std::vector<std::string>& args) {
  const pid_t child = testing_cli::spawn_cli(args, /*keep_stderr=*/true);
  int status = 0;
  struct rusage usage {};
  ::wait4(child, &status, 0, &usage);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << args[0];
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;
}

// The summary that `info` and import print reads the interaction columns with their pages handed
// back behind it: on a dataset of 2M interactions (about 60 MB of columns, 32 MB of them the
// columns it reads) it needs a few MB more than on a tiny one, not the columns' size. Compared with
// the same binary on a tiny dataset, so the baseline (sanitizers included) cancels out.
TEST_F(ImportBounded, TheSummaryDoesNotKeepTheColumnsResident) {
  // Generated and imported by the command line: a child's peak counts the test process it was
  // forked from, which must stay small.
  for (const auto& [name, size] : {std::pair{"big", "--users 100000 --items 20000 --interactions 2000000"},
                                   std::pair{"tiny", "--users 50 --items 20 --interactions 500"}}) {
    const fs::path csv = root_ / (std::string(name) + "_csv");
    std::string output;
    ASSERT_EQ(run_cli(fmt::format("generate --out {} {}", csv.string(), size), &output), 0) << output;
    ASSERT_EQ(run_cli(fmt::format("import --interactions {} --out {} --memory-limit 64M --quiet",
                                  (csv / "interactions.csv").string(), (root_ / name).string()),
                      &output),
              0)
        << output;
  }
  const uint64_t big_rss = peak_rss_of({"info", (root_ / "big").string()});
  const uint64_t tiny_rss = peak_rss_of({"info", (root_ / "tiny").string()});
  std::cout << "info: " << (big_rss >> 20) << " MiB on 2M interactions, " << (tiny_rss >> 20) << " MiB on 500\n";
  EXPECT_LT(big_rss, tiny_rss + (16u << 20)) << big_rss << " vs " << tiny_rss;
}

}  // namespace
}  // namespace tastebud::datasets
