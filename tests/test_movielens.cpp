#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/error.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;

class MovieLens : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("tastebud_test_movielens_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "in");
  }
  void TearDown() override { fs::remove_all(root_); }

  void write(const std::string& name, const std::string& text) {
    std::ofstream out(root_ / "in" / name, std::ios::binary);
    out << text;
  }
  static std::string read(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }
  fs::path in() const { return root_ / "in"; }
  fs::path out() const { return root_ / "out"; }

  // The message of the Error that converting throws ("" when it does not throw).
  std::string conversion_error() {
    try {
      convert_movielens(in(), out());
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  // ml-100k: tab-separated ratings, `|` metadata, Latin-1 titles, 19 genre flags.
  void write_100k() {
    write("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n");
    write("u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n");
    write(
        "u.item",
        "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
        "0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "2|Mis\xe9rables, Les (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0\n"
        "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n");
  }

  fs::path root_;
};

TEST_F(MovieLens, Converts100k) {
  write_100k();
  const CsvFiles files = convert_movielens(in(), out());
  EXPECT_EQ(files.interactions, out() / "interactions.csv");
  EXPECT_EQ(files.users, out() / "users.csv");
  EXPECT_EQ(files.items, out() / "items.csv");
  EXPECT_EQ(read(files.interactions),
            "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n"
            "196,242,881250949,rating,3\n"
            "186,302,891717742,rating,3\n"
            "22,377,878887116,rating,1\n");
  EXPECT_EQ(read(files.users),
            "USER_ID,AGE,GENDER,OCCUPATION\n"
            "1,24,M,technician\n"
            "2,53,F,other\n");
  EXPECT_EQ(read(files.items),
            "ITEM_ID,DESCRIPTION,GENRES\n"
            "1,Toy Story (1995),Animation|Children's|Comedy\n"
            "2,\"Misérables, Les (1995)\",Drama|Musical\n"
            "267,unknown,\n");
}

TEST_F(MovieLens, Converts1m) {
  write("ratings.dat",
        "1::1193::5::978300760\r\n1::661::3::978302109\r\n2::1357::5::978298709\r\n");
  write("users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n");
  write("movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "73::Mis\xe9rables, Les (1995)::Drama|Musical\n");
  const CsvFiles files = convert_movielens(in(), out());
  EXPECT_EQ(read(files.interactions),
            "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n"
            "1,1193,978300760,rating,5\n"
            "1,661,978302109,rating,3\n"
            "2,1357,978298709,rating,5\n");
  EXPECT_EQ(read(files.users),
            "USER_ID,AGE,GENDER,OCCUPATION\n"
            "1,1,F,K-12 student\n"
            "2,56,M,self-employed\n");
  EXPECT_EQ(read(files.items),
            "ITEM_ID,DESCRIPTION,GENRES\n"
            "1,Toy Story (1995),Animation|Children's|Comedy\n"
            "73,\"Misérables, Les (1995)\",Drama|Musical\n");
}

TEST_F(MovieLens, Converts20mAndLatest) {
  write("ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n2,3,0.5,"
        "974820889\n");
  write("movies.csv",
        "\xEF\xBB\xBFmovieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        "11,\"American President, The (1995)\",Comedy|Drama|Romance\n"
        "12,\"Dracula: Dead and Loving It (1995)\",Comedy|Horror\n"
        "13,\"The \"\"Great\"\" Escape, Sort Of (2015)\",(no genres listed)\n"
        "14,Amélie (2001),Comedy|Romance\n");
  write("tags.csv", "userId,movieId,tag,timestamp\n");
  const CsvFiles files = convert_movielens(in(), out());
  EXPECT_TRUE(files.users.empty());
  EXPECT_FALSE(fs::exists(out() / "users.csv"));
  EXPECT_EQ(read(files.interactions),
            "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n"
            "1,2,1112486027,rating,3.5\n"
            "1,29,1112484676,rating,4\n"
            "2,3,974820889,rating,0.5\n");
  EXPECT_EQ(read(files.items),
            "ITEM_ID,DESCRIPTION,GENRES\n"
            "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
            "11,\"American President, The (1995)\",Comedy|Drama|Romance\n"
            "12,Dracula: Dead and Loving It (1995),Comedy|Horror\n"
            "13,\"The \"\"Great\"\" Escape, Sort Of (2015)\",\n"
            "14,Amélie (2001),Comedy|Romance\n");
}

TEST_F(MovieLens, FindsTheLayoutInsideAnUnpackedArchive) {
  write_100k();
  fs::create_directories(root_ / "parent");
  fs::rename(in(), root_ / "parent" / "ml-100k");
  const CsvFiles files = convert_movielens(root_ / "parent", out());
  EXPECT_NE(read(files.interactions).find("196,242,881250949,rating,3\n"), std::string::npos);
}

TEST_F(MovieLens, RatingsAloneGiveInteractionsOnly) {
  write("ratings.dat", "1::1193::5::978300760\n");
  const CsvFiles files = convert_movielens(in(), out());
  EXPECT_TRUE(files.users.empty());
  EXPECT_TRUE(files.items.empty());
  EXPECT_TRUE(fs::exists(files.interactions));
}

TEST_F(MovieLens, RejectsADirectoryWithoutALayout) {
  write("notes.txt", "nothing here\n");
  const std::string message = conversion_error();
  EXPECT_NE(message.find("u.data"), std::string::npos) << message;
  EXPECT_NE(message.find("ratings.csv"), std::string::npos) << message;
  EXPECT_THROW(convert_movielens(root_ / "missing", out()), Error);
}

TEST_F(MovieLens, BadRatingNamesFileLineAndField) {
  write("u.data", "196\t242\t3\t881250949\n186\t302\tthree\t891717742\n");
  const std::string message = conversion_error();
  EXPECT_NE(message.find("u.data:2"), std::string::npos) << message;
  EXPECT_NE(message.find("field 3 (rating)"), std::string::npos) << message;
  EXPECT_NE(message.find("three"), std::string::npos) << message;
  // Nothing is left behind, not even a temporary file.
  EXPECT_TRUE(!fs::exists(out()) || fs::is_empty(out()));
}

TEST_F(MovieLens, BadTimestampAndNonFiniteRatingAreRejected) {
  write("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,11124860.5\n");
  std::string message = conversion_error();
  EXPECT_NE(message.find("ratings.csv:2: field 4 (timestamp): expected an integer"),
            std::string::npos)
      << message;
  write("ratings.csv", "userId,movieId,rating,timestamp\n1,2,nan,1112486027\n");
  message = conversion_error();
  EXPECT_NE(message.find("field 3 (rating): expected a finite number"), std::string::npos)
      << message;
}

TEST_F(MovieLens, WrongFieldCountIsRejected) {
  write("ratings.dat", "1::1193::5::978300760\n1::661::3\n");
  const std::string message = conversion_error();
  EXPECT_NE(message.find("ratings.dat:2: expected 4 fields, found 3"), std::string::npos)
      << message;
}

TEST_F(MovieLens, BadMetadataIsRejectedAndNoFileIsWritten) {
  write_100k();
  write("u.item",
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|x\n");
  const std::string message = conversion_error();
  EXPECT_NE(message.find("u.item:1: field 24 (Western)"), std::string::npos) << message;
  // Interactions converted fine, but no file is committed while another one failed.
  EXPECT_TRUE(!fs::exists(out()) || fs::is_empty(out()));

  write_100k();
  write("u.user", "1|twenty|M|technician|85711\n");
  EXPECT_NE(conversion_error().find("u.user:1: field 2 (age)"), std::string::npos);
}

TEST_F(MovieLens, BadCsvQuotingAndHeadersAreRejected) {
  write("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n");
  write("movies.csv", "movieId,title,genres\n11,\"American President, The (1995),Comedy\n");
  std::string message = conversion_error();
  EXPECT_NE(message.find("movies.csv:2: field 2 (title): expected a closing quote"),
            std::string::npos)
      << message;

  write("movies.csv", "movieId,name,genres\n1,Toy Story (1995),Comedy\n");
  message = conversion_error();
  EXPECT_NE(message.find("movies.csv:1: field 2 (title)"), std::string::npos) << message;

  write("ratings.csv", "");
  message = conversion_error();
  EXPECT_NE(message.find("ratings.csv"), std::string::npos) << message;
  EXPECT_NE(message.find("empty"), std::string::npos) << message;
}

TEST_F(MovieLens, BadOccupationCodeIsRejected) {
  write("ratings.dat", "1::1193::5::978300760\n");
  write("users.dat", "1::F::1::27::48067\n");
  const std::string message = conversion_error();
  EXPECT_NE(message.find("users.dat:1: field 4 (Occupation)"), std::string::npos) << message;
}

}  // namespace
}  // namespace tastebud::datasets

namespace tastebud::datasets {
namespace {

// `tastebud import --movielens DIR` end to end: the converted files land in a dataset, and a bad
// line stops the import with the file and line and leaves no dataset.
TEST_F(MovieLens, ImportCommandBuildsADataset) {
  write("ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n2,2,0.5,974820889\n");
  write("movies.csv", "movieId,title,genres\n2,Jumanji (1995),Adventure|Children\n29,\"City of Lost Children, The (1995)\",Drama\n");
  const fs::path dataset = root_ / "dataset";
  const std::string command = std::string(TASTEBUD_BINARY) + " import --movielens " + in().string() +
                              " --out " + dataset.string() + " > " + (root_ / "log").string() + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << read(root_ / "log");
  const Dataset d = Dataset::open(dataset);
  EXPECT_EQ(d.num_users(), 2u);
  EXPECT_EQ(d.num_items(), 2u);
  EXPECT_EQ(d.interactions.size(), 3u);
  ASSERT_EQ(d.event_types.size(), 1u);
  EXPECT_EQ(d.event_types[0], "rating");
  float sum = 0;
  for (float v : d.interactions.event_value) sum += v;
  EXPECT_FLOAT_EQ(sum, 8.0f);

  write("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,four,1112484676\n");
  const fs::path bad = root_ / "bad-dataset";
  const std::string failing = std::string(TASTEBUD_BINARY) + " import --movielens " + in().string() +
                              " --out " + bad.string() + " > " + (root_ / "bad.log").string() + " 2>&1";
  EXPECT_NE(std::system(failing.c_str()), 0);
  const std::string message = read(root_ / "bad.log");
  EXPECT_NE(message.find("ratings.csv:3"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(bad));
}

}  // namespace
}  // namespace tastebud::datasets
