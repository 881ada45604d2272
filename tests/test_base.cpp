// The base target (base/): the atomic writer, the directory swap, stale temporaries, the directory
// lock, checksums.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tastebud/atomic_file.h"
#include "tastebud/checksum.h"
#include "tastebud/directory_lock.h"
#include "tastebud/directory_swap.h"
#include "tastebud/error.h"
#include "host/parameter_words.h"

namespace tastebud {
namespace {

namespace fs = std::filesystem;

class Base : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tastebud_test_base_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  size_t entries() const { return std::distance(fs::directory_iterator(dir_), fs::directory_iterator()); }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  fs::path dir_;
};

TEST_F(Base, AtomicFileAppearsOnlyWhenCommitted) {
  {
    AtomicFile file(dir_ / "out.txt");
    file.write("half");
    EXPECT_EQ(entries(), 1u);  // the temporary
    EXPECT_FALSE(fs::exists(dir_ / "out.txt"));
  }
  EXPECT_EQ(entries(), 0u);  // dropped without commit: nothing left
  write_file_atomically(dir_ / "out.txt", "whole");
  EXPECT_EQ(read(dir_ / "out.txt"), "whole");
  write_file_atomically(dir_ / "out.txt", "replaced");
  EXPECT_EQ(read(dir_ / "out.txt"), "replaced");
  EXPECT_EQ(entries(), 1u);
  // A directory as the target, or a missing directory, is refused before anything is written.
  fs::create_directories(dir_ / "sub");
  try {
    write_file_atomically(dir_ / "sub", "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_file_atomically(dir_ / "missing" / "x", "x"), Error);
  // A leftover that carries this process's name (a killed process with the same PID) is replaced.
  const fs::path next = temporary_name(dir_ / "again.txt");
  const std::string name = next.filename().string();
  const std::string counter = name.substr(name.rfind('-') + 1);
  const fs::path same = dir_ / (name.substr(0, name.rfind('-') + 1) + std::to_string(std::stoul(counter) + 1));
  std::ofstream(same) << "stale";
  write_file_atomically(dir_ / "again.txt", "fresh");
  EXPECT_EQ(read(dir_ / "again.txt"), "fresh");
}

// A file replaced through AtomicFile keeps its mode (a 600 file does not become 644).
TEST_F(Base, AReplacedFileKeepsItsMode) {
  const fs::path path = dir_ / "private.json";
  write_file_atomically(path, "old");
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  write_file_atomically(path, "new");
  EXPECT_EQ(fs::status(path).permissions(), fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(Base, StaleTemporariesOfDeadProcessesOnly) {
  EXPECT_EQ(temporary_owner(".model.bin.tmp-123-0"), 123);
  EXPECT_EQ(temporary_owner(".shop.tmp-77-3-999"), 77);
  EXPECT_EQ(temporary_owner(".shop.old-77-3-999"), 77);
  EXPECT_EQ(temporary_owner("checkpoint.bin.tmp4242"), 4242);
  EXPECT_EQ(temporary_owner(".out.jsonl.tmp-55"), 55);
  for (const char* name : {"model.bin", ".shop.lock", "notes.tmp", "a.tmp-x", "report.tmp-12abc", "shop.old-5", "notes.tmp-2024"})
    EXPECT_EQ(temporary_owner(name), 0) << name;
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string d = std::to_string(dead), live = std::to_string(::getppid());
  fs::create_directories(dir_ / (".ds.tmp-" + d + "-0-1") / "schema");
  std::ofstream(dir_ / ("checkpoint.bin.tmp" + d)) << "x";
  std::ofstream(dir_ / (".model.bin.tmp-" + live + "-0")) << "x";
  std::ofstream(dir_ / "model.bin") << "x";
  EXPECT_EQ(remove_stale_temporaries(dir_), 2u);
  EXPECT_EQ(entries(), 2u);
  EXPECT_TRUE(fs::exists(dir_ / (".model.bin.tmp-" + live + "-0")));
}

// A populated directory is exchanged for the one built beside it: the new files under the old
// name, the old directory gone, the old modes kept, nothing left beside it.
TEST_F(Base, DirectoryReplacementExchangesAPopulatedDirectory) {
  fs::create_directories(dir_ / "ds" / "schema");
  std::ofstream(dir_ / "ds" / "meta.json") << "old";
  std::ofstream(dir_ / "ds" / "gone.col") << "old";
  std::ofstream(dir_ / "ds" / "schema" / "items.json") << "old";
  fs::permissions(dir_ / "ds", fs::perms::owner_all);
  {
    DirectoryReplacement replacement(dir_ / "ds");
    EXPECT_EQ(replacement.path().parent_path(), dir_);
    EXPECT_EQ(temporary_owner(replacement.path().filename().string()), ::getpid());
    fs::create_directories(replacement.path() / "schema");
    std::ofstream(replacement.path() / "meta.json") << "new";
    std::ofstream(replacement.path() / "schema" / "items.json") << "new";
    replacement.commit();
  }
  EXPECT_EQ(read(dir_ / "ds" / "meta.json"), "new");
  EXPECT_EQ(read(dir_ / "ds" / "schema" / "items.json"), "new");
  EXPECT_FALSE(fs::exists(dir_ / "ds" / "gone.col"));
  EXPECT_EQ(fs::status(dir_ / "ds").permissions(), fs::perms::owner_all);
  EXPECT_EQ(entries(), 1u);
  // A target that does not exist yet is created the same way.
  {
    DirectoryReplacement replacement(dir_ / "fresh");
    std::ofstream(replacement.path() / "meta.json") << "first";
    replacement.commit();
  }
  EXPECT_EQ(read(dir_ / "fresh" / "meta.json"), "first");
  EXPECT_EQ(entries(), 2u);
}

// What a killed writer left beside the target goes when the next one starts: its half-built
// directory, and where it died between the fallback's two renames, its old copy is put back.
TEST_F(Base, DirectoryReplacementCleansWhatAKilledWriterLeft) {
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string d = std::to_string(dead);
  fs::create_directories(dir_ / (".ds.tmp-" + d + "-0") / "schema");
  fs::create_directories(dir_ / (".ds.old-" + d + "-1"));
  std::ofstream(dir_ / (".ds.old-" + d + "-1") / "meta.json") << "old";
  {
    DirectoryReplacement replacement(dir_ / "ds");
    EXPECT_EQ(read(dir_ / "ds" / "meta.json"), "old");  // the killed fallback's old copy, back
    EXPECT_EQ(entries(), 2u);                          // ds and this writer's temporary
  }
  EXPECT_EQ(entries(), 1u);
  EXPECT_EQ(read(dir_ / "ds" / "meta.json"), "old");
}

// The fallback where the file system refuses RENAME_EXCHANGE: the new directory under the name,
// the old one where the new one was built (for the caller to remove), nothing else left.
TEST_F(Base, TheFallbackRenamesTheOldAsideAndTheNewIn) {
  fs::create_directories(dir_ / "ds");
  std::ofstream(dir_ / "ds" / "meta.json") << "old";
  fs::create_directories(dir_ / ".ds.tmp-1-0");
  std::ofstream(dir_ / ".ds.tmp-1-0" / "meta.json") << "new";
  replace_by_two_renames(dir_ / ".ds.tmp-1-0", dir_ / "ds");
  EXPECT_EQ(read(dir_ / "ds" / "meta.json"), "new");
  EXPECT_EQ(read(dir_ / ".ds.tmp-1-0" / "meta.json"), "old");
  EXPECT_EQ(entries(), 2u);
  // A build that is not there: the target stays as it was, and the old copy goes back.
  EXPECT_THROW(replace_by_two_renames(dir_ / ".ds.tmp-1-9", dir_ / "ds"), Error);
  EXPECT_EQ(read(dir_ / "ds" / "meta.json"), "new");
  EXPECT_EQ(entries(), 2u);
}

// A build that fails (an exception before commit) leaves the target as it was and nothing beside.
TEST_F(Base, DirectoryReplacementThatFailsLeavesTheTargetUntouched) {
  fs::create_directories(dir_ / "ds");
  std::ofstream(dir_ / "ds" / "meta.json") << "old";
  try {
    DirectoryReplacement replacement(dir_ / "ds");
    std::ofstream(replacement.path() / "meta.json") << "half";
    throw Error("the build failed");
  } catch (const Error&) {
  }
  EXPECT_EQ(read(dir_ / "ds" / "meta.json"), "old");
  EXPECT_EQ(entries(), 1u);
}

// A symlink switched by replace_symlink points to the new target; no temporary link is left.
TEST_F(Base, ReplaceSymlinkSwitchesTheLink) {
  fs::create_directories(dir_ / "versions" / "000001");
  fs::create_directories(dir_ / "versions" / "000002");
  replace_symlink(dir_ / "current", fs::path("versions") / "000001");
  EXPECT_EQ(fs::read_symlink(dir_ / "current"), fs::path("versions") / "000001");
  replace_symlink(dir_ / "current", fs::path("versions") / "000002");
  EXPECT_EQ(fs::read_symlink(dir_ / "current"), fs::path("versions") / "000002");
  EXPECT_EQ(entries(), 2u);
}

TEST_F(Base, DirectoryLockIsExclusiveAndLeavesNothing) {
  {
    const DirectoryLock first(dir_ / "ds", "the first");
    EXPECT_TRUE(fs::exists(DirectoryLock::lock_file(dir_ / "ds")));
    try {
      const DirectoryLock second(dir_ / "ds/", "the second");
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("in use by PID " + std::to_string(::getpid())), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("the second"), std::string::npos) << e.what();
    }
    const DirectoryLock other(dir_ / "other", "another directory");
  }
  EXPECT_EQ(entries(), 0u);
  const DirectoryLock again(dir_ / "ds", "a later writer");
}

TEST(Checksum, TrailerRoundTripsAndNamesTheFile) {
  std::string bytes = "payload";
  append_checksum(bytes);
  EXPECT_EQ(bytes.size(), 7 + kChecksumTrailerBytes);
  EXPECT_EQ(checked_payload(bytes, "f.bin"), "payload");
  EXPECT_EQ(crc32_of("123456789"), 0xCBF43926u);  // the CRC-32 check value
  bytes[2] ^= 1;
  try {
    checked_payload(bytes, "f.bin");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt: f.bin"), std::string::npos) << e.what();
  }
  EXPECT_THROW(checked_payload("short", "f.bin"), Error);
}

// Library messages name parameters; each front end says them its own way (host/parameter_words.h).
TEST(ParameterWords, EachFrontEndSaysTheParameterItsOwnWay) {
  const std::string message = "`device=cuda`: lower `batch_size` or use `device=cpu`; see `tastebud import`";
  EXPECT_EQ(host::in_flag_words(message), "--device cuda: lower --batch-size or use --device cpu; see `tastebud import`");
  EXPECT_EQ(host::in_python_words(message),
            "device=\"cuda\": lower batch_size= or use device=\"cpu\"; see `tastebud import`");
}

TEST(ParameterWords, OtherBacktickedTextAndStrayBackticksStayAsTheyAre) {
  EXPECT_EQ(host::in_flag_words("use `Popularity` or `a b` and `x=` then `"), "use `Popularity` or `a b` and `x=` then `");
  EXPECT_EQ(host::in_flag_words("no parameters here"), "no parameters here");
  EXPECT_EQ(host::in_flag_words("`max_bad_rows`"), "--max-bad-rows");
}

}  // namespace
}  // namespace tastebud
