#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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

namespace tastebud::datasets {
namespace {

// The synthetic ml-100k (generate_movielens_100k): the MovieLens converter reads it, it has the
// requested sizes and ml-100k's guarantees, it is a pure function of the seed, and its metadata
// says something about taste.
struct SyntheticRating {
  uint32_t user, item, stars;
  int64_t time;
};

struct SyntheticMovieLens {
  std::vector<SyntheticRating> ratings;
  std::map<uint32_t, std::vector<std::string>> item_genres;  // item id -> genre names
  std::map<uint32_t, std::pair<int, std::string>> users;     // user id -> (age, gender)
};

std::vector<std::string> split_on(const std::string& line, char separator) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, separator)) fields.push_back(field);
  if (!line.empty() && line.back() == separator) fields.emplace_back();
  return fields;
}

SyntheticMovieLens read_synthetic(const fs::path& dir) {
  static const char* kGenres[19] = {
      "unknown",     "Action", "Adventure", "Animation", "Children's", "Comedy",  "Crime",
      "Documentary", "Drama",  "Fantasy",   "Film-Noir", "Horror",     "Musical", "Mystery",
      "Romance",     "Sci-Fi", "Thriller",  "War",       "Western"};
  SyntheticMovieLens data;
  std::ifstream ratings(dir / "u.data");
  std::string line;
  while (std::getline(ratings, line)) {
    const auto f = split_on(line, '\t');
    EXPECT_EQ(f.size(), 4u) << line;
    if (f.size() != 4) continue;
    data.ratings.push_back({static_cast<uint32_t>(std::stoul(f[0])),
                            static_cast<uint32_t>(std::stoul(f[1])),
                            static_cast<uint32_t>(std::stoul(f[2])), std::stoll(f[3])});
  }
  std::ifstream items(dir / "u.item", std::ios::binary);
  while (std::getline(items, line)) {
    const auto f = split_on(line, '|');
    EXPECT_EQ(f.size(), 24u) << line;
    if (f.size() != 24) continue;
    auto& genres = data.item_genres[static_cast<uint32_t>(std::stoul(f[0]))];
    for (int g = 0; g < 19; ++g) {
      if (f[5 + g] == "1") genres.push_back(kGenres[g]);
    }
  }
  std::ifstream users(dir / "u.user");
  while (std::getline(users, line)) {
    const auto f = split_on(line, '|');
    EXPECT_EQ(f.size(), 5u) << line;
    if (f.size() != 5) continue;
    data.users[static_cast<uint32_t>(std::stoul(f[0]))] = {std::stoi(f[1]), f[2]};
  }
  return data;
}

size_t count_lines(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  size_t lines = 0;
  std::string line;
  while (std::getline(in, line)) ++lines;
  return lines;
}

TEST_F(MovieLens, SyntheticMl100kHasTheRequestedShapeAndConverts) {
  MovieLens100kOptions options;
  options.users = 150;
  options.items = 400;
  options.ratings = 9000;
  options.seed = 3;
  const MovieLens100kFiles files = generate_movielens_100k(options, in());
  EXPECT_EQ(files.ratings, in() / "u.data");
  const SyntheticMovieLens data = read_synthetic(in());
  EXPECT_EQ(data.ratings.size(), 9000u);
  EXPECT_EQ(data.users.size(), 150u);
  EXPECT_EQ(data.item_genres.size(), 400u);

  std::map<uint32_t, uint32_t> per_user;
  std::set<std::pair<uint32_t, uint32_t>> pairs;
  std::set<uint32_t> rated_items;
  for (const SyntheticRating& r : data.ratings) {
    ++per_user[r.user];
    rated_items.insert(r.item);
    EXPECT_TRUE(pairs.insert({r.user, r.item}).second) << "user " << r.user << " item " << r.item;
    EXPECT_GE(r.stars, 1u);
    EXPECT_LE(r.stars, 5u);
    EXPECT_TRUE(data.users.count(r.user)) << r.user;
    EXPECT_TRUE(data.item_genres.count(r.item)) << r.item;
    // ml-100k's seven months, 1997-09-20 to 1998-04-22.
    EXPECT_GE(r.time, 874724710);
    EXPECT_LE(r.time, 893286638);
  }
  EXPECT_EQ(per_user.size(), 150u);
  for (const auto& [user, count] : per_user) EXPECT_GE(count, 20u) << "user " << user;
  EXPECT_EQ(rated_items.size(), 400u);  // as in ml-100k, every item has a rating
  for (const auto& [item, genres] : data.item_genres) {
    EXPECT_GE(genres.size(), 1u) << item;
    EXPECT_LE(genres.size(), 3u) << item;
  }

  const CsvFiles csv = convert_movielens(in(), out());
  EXPECT_EQ(count_lines(csv.interactions), 9001u);
  EXPECT_EQ(count_lines(csv.users), 151u);
  EXPECT_EQ(count_lines(csv.items), 401u);
  EXPECT_NE(read(csv.users).find(",M,"), std::string::npos);
}

TEST_F(MovieLens, SyntheticMl100kIsAPureFunctionOfTheSeed) {
  MovieLens100kOptions options;
  options.users = 100;
  options.items = 300;
  options.ratings = 6000;
  options.seed = 11;
  generate_movielens_100k(options, root_ / "a");
  generate_movielens_100k(options, root_ / "b");
  for (const char* name : {"u.data", "u.item", "u.user", "u.genre", "u.occupation"}) {
    const std::string a = read(root_ / "a" / name);
    EXPECT_FALSE(a.empty()) << name;
    EXPECT_EQ(a, read(root_ / "b" / name)) << name;
  }
  options.seed = 12;
  generate_movielens_100k(options, root_ / "c");
  EXPECT_NE(read(root_ / "a" / "u.data"), read(root_ / "c" / "u.data"));
  // Nothing but the five files: no temporary file is left behind.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(root_ / "a")) ++entries;
  EXPECT_EQ(entries, 5u);
}

TEST_F(MovieLens, SyntheticMl100kTasteDependsOnDemographics) {
  const MovieLens100kOptions defaults;  // ml-100k's sizes
  generate_movielens_100k(defaults, in());
  const SyntheticMovieLens data = read_synthetic(in());
  ASSERT_EQ(data.ratings.size(), 100000u);
  ASSERT_EQ(data.users.size(), 943u);
  ASSERT_EQ(data.item_genres.size(), 1682u);

  // Share of a group's ratings that go to items of a genre.
  const auto share = [&data](const std::string& genre, auto in_group) {
    uint64_t rated = 0, of_genre = 0;
    for (const SyntheticRating& r : data.ratings) {
      if (!in_group(data.users.at(r.user))) continue;
      ++rated;
      const auto& genres = data.item_genres.at(r.item);
      of_genre += std::find(genres.begin(), genres.end(), genre) != genres.end() ? 1 : 0;
    }
    return rated == 0 ? 0.0 : static_cast<double>(of_genre) / rated;
  };
  const auto women = [](const std::pair<int, std::string>& u) { return u.second == "F"; };
  const auto men = [](const std::pair<int, std::string>& u) { return u.second == "M"; };
  const auto under_25 = [](const std::pair<int, std::string>& u) { return u.first < 25; };
  const auto over_45 = [](const std::pair<int, std::string>& u) { return u.first >= 45; };
  EXPECT_GT(share("Romance", women), 1.3 * share("Romance", men));
  EXPECT_GT(share("Sci-Fi", men), 1.3 * share("Sci-Fi", women));
  EXPECT_GT(share("Action", under_25), 1.2 * share("Action", over_45));
  EXPECT_GT(share("War", over_45), 1.5 * share("War", under_25));

  // The rating follows taste too: ml-100k's histogram, skewed to 3 and 4 stars.
  uint64_t stars[6] = {};
  for (const SyntheticRating& r : data.ratings) ++stars[r.stars];
  EXPECT_GT(stars[4], stars[3]);
  EXPECT_GT(stars[3], stars[5]);
  EXPECT_GT(stars[2], stars[1]);
}

TEST_F(MovieLens, SyntheticMl100kRejectsImpossibleSizes) {
  MovieLens100kOptions options;
  options.users = 100;
  options.items = 300;
  options.ratings = 1999;  // fewer than 20 per user
  EXPECT_THROW(generate_movielens_100k(options, in()), Error);
  options.ratings = 100 * 300;  // every user rating every item
  EXPECT_THROW(generate_movielens_100k(options, in()), Error);
  options.items = 10;  // fewer items than the 20 ratings each user needs
  options.ratings = 2000;
  EXPECT_THROW(generate_movielens_100k(options, in()), Error);
  EXPECT_FALSE(fs::exists(in() / "u.data"));
}

TEST_F(MovieLens, GenerateCommandWritesTheMl100kLayout) {
  const fs::path dir = root_ / "ml";
  const std::string command = std::string(TASTEBUD_BINARY) +
                              " generate --layout movielens-100k --users 60 --items 200 "
                              "--interactions 3000 --seed 5 --out " +
                              dir.string() + " > " + (root_ / "log").string() + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << read(root_ / "log");
  EXPECT_EQ(count_lines(dir / "u.data"), 3000u);
  EXPECT_EQ(count_lines(dir / "u.user"), 60u);
  EXPECT_EQ(count_lines(dir / "u.item"), 200u);
  EXPECT_FALSE(fs::exists(dir / "interactions.csv"));

  const std::string shop_flag =
      std::string(TASTEBUD_BINARY) + " generate --layout movielens-100k --clusters 4 --out " +
      (root_ / "ml2").string() + " > " + (root_ / "log2").string() + " 2>&1";
  EXPECT_NE(std::system(shop_flag.c_str()), 0);
  EXPECT_NE(read(root_ / "log2").find("--layout shop"), std::string::npos) << read(root_ / "log2");
}

}  // namespace
}  // namespace tastebud::datasets
