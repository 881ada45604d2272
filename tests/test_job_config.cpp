// The batch job configuration (host/job_config.h): the service's shape read into a plain struct,
// the flags over it, and every kind of bad input named by its key, before the job writes anything.
#include <filesystem>
#include <fstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "host/job_config.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;

// The message parse_job_config throws for `text`, or "" when it parses.
std::string error_of(const std::string& text) {
  try {
    parse_job_config(text, "job.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

::testing::AssertionResult says(const std::string& message, const std::string& part) {
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << message << "' does not say '" << part << "'";
}

TEST(JobConfig, TheServicesShapeReadsIntoValues) {
  const JobConfig c = parse_job_config(R"j({
    "itemExplorationConfig": {"explorationWeight": "0.3", "explorationItemAgeCutOff": "30"},
    "rankingInfluence": {"POPULARITY": 0.2, "FRESHNESS": 0.5},
    "promotions": [{"name": "books-push", "percentPromotedItems": 20,
                    "filterExpression": "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN ($C)",
                    "filterValues": {"C": "\"books\""}}],
    "metadataColumns": {"ITEMS": ["GENRES", "PRICE"]}})j", "job.json");
  EXPECT_DOUBLE_EQ(c.exploration_weight_or_default(), 0.3);
  EXPECT_DOUBLE_EQ(c.exploration_age_cutoff_or_default(), 30);
  EXPECT_DOUBLE_EQ(c.popularity_influence, 0.2);
  EXPECT_DOUBLE_EQ(c.freshness_influence, 0.5);
  ASSERT_EQ(c.promotions.size(), 1u);
  EXPECT_EQ(c.promotions[0].name, "books-push");
  EXPECT_DOUBLE_EQ(c.promotions[0].percent, 20);
  EXPECT_EQ(c.promotions[0].filter_values.at("C"), "\"books\"");
  EXPECT_EQ(c.metadata_columns, (std::vector<std::string>{"GENRES", "PRICE"}));
  // Defaults: a configuration explores at the service's 0.3 with a 30-day cut-off; none at all,
  // not at all.
  const JobConfig empty = parse_job_config("{}", "job.json");
  EXPECT_DOUBLE_EQ(empty.exploration_weight_or_default(), 0.3);
  EXPECT_DOUBLE_EQ(empty.exploration_age_cutoff_or_default(), 30);
  EXPECT_TRUE(empty.shapes_answers());
  EXPECT_DOUBLE_EQ(JobConfig{}.exploration_weight_or_default(), 0.0);
  EXPECT_FALSE(JobConfig{}.shapes_answers());
}

TEST(JobConfig, EveryBadValueNamesTheFileTheKeyAndTheReason) {
  EXPECT_TRUE(says(error_of("{\"itemExplorationConfig\": "), "job.json: not JSON"));
  EXPECT_TRUE(says(error_of("[1, 2]"), "job.json: (top level): expected an object"));
  EXPECT_TRUE(says(error_of(R"({"explorationWeight": 0.3})"), "job.json: explorationWeight: unknown key"));
  EXPECT_TRUE(says(error_of(R"({"itemExplorationConfig": {"weight": 0.3}})"), "itemExplorationConfig.weight: unknown key"));
  EXPECT_TRUE(says(error_of(R"({"itemExplorationConfig": {"explorationWeight": "1.5"}})"),
                   "itemExplorationConfig.explorationWeight: \"1.5\" is out of range: expected 0 to 1"));
  EXPECT_TRUE(says(error_of(R"({"itemExplorationConfig": {"explorationWeight": "lots"}})"),
                   "itemExplorationConfig.explorationWeight: \"lots\" is not a number"));
  EXPECT_TRUE(says(error_of(R"({"itemExplorationConfig": {"explorationItemAgeCutOff": 0}})"),
                   "itemExplorationConfig.explorationItemAgeCutOff: must be more than 0 days"));
  EXPECT_TRUE(says(error_of(R"({"rankingInfluence": {"POPULARITY": -0.1}})"), "rankingInfluence.POPULARITY: -0.1 is out of range"));
  EXPECT_TRUE(says(error_of(R"({"rankingInfluence": {"PRICE": 0.1}})"), "rankingInfluence.PRICE: unknown key; expected one of POPULARITY, FRESHNESS"));
  const std::string promo = R"j({"name": "p", "percentPromotedItems": %, "filterExpression": "INCLUDE ItemID WHERE Items.X IN (\"a\")"})j";
  auto with_percent = [&](const std::string& percent) {
    std::string p = promo;
    p.replace(p.find('%'), 1, percent);
    return "{\"promotions\": [" + p + "]}";
  };
  EXPECT_EQ(error_of(with_percent("100")), "");
  EXPECT_TRUE(says(error_of(with_percent("101")), "promotions[0].percentPromotedItems: 101 is out of range: expected 1 to 100"));
  EXPECT_TRUE(says(error_of(with_percent("0")), "promotions[0].percentPromotedItems: 0 is out of range"));
  EXPECT_TRUE(says(error_of(R"({"promotions": [{"name": "p", "percentPromotedItems": 10, "filterExpression": "INCLUDE ItemID WHERE Items.X IN ("}]})"),
                   "promotions[0].filterExpression: filter: position"));
  EXPECT_TRUE(says(error_of(R"({"promotions": [{"name": "p", "percentPromotedItems": 10}]})"),
                   "promotions[0].filterExpression: a promotion needs a filter expression"));
  EXPECT_TRUE(says(error_of(R"j({"promotions": [{"percentPromotedItems": 10, "filterExpression": "INCLUDE ItemID WHERE Items.X IN (\"a\")"}]})j"),
                   "promotions[0].name: a promotion needs a name"));
  EXPECT_TRUE(says(error_of(R"({"promotions": [{"name": "p", "percent": 10}]})"), "promotions[0].percent: unknown key"));
  EXPECT_TRUE(says(error_of("{\"promotions\": [" + std::string(R"j({"name": "p", "percentPromotedItems": 60, "filterExpression": "INCLUDE ItemID WHERE Items.X IN (\"a\")"})j") +
                            "," + R"j({"name": "q", "percentPromotedItems": 60, "filterExpression": "INCLUDE ItemID WHERE Items.X IN (\"a\")"})j" + "]}"),
                   "promotions: the shares add up to 120%, more than 100%"));
  EXPECT_TRUE(says(error_of(R"({"metadataColumns": {"USERS": ["AGE"]}})"), "metadataColumns.USERS: unknown key"));
}

// Deep JSON is refused at parse time under every key, and a bad value is echoed shortened.
TEST(JobConfig, DeepOrHugeValuesAreRefusedBriefly) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  for (const char* key : {"promotions", "itemExplorationConfig", "metadataColumns", "filterValues"}) {
    const std::string message = error_of(fmt::format(R"({{"{}": {}}})", key, deep));
    EXPECT_TRUE(says(message, "job.json: JSON nested deeper than 64 levels")) << key;
  }
  std::string wide = "[";
  for (int k = 0; k < 20000; ++k) wide += "1,";
  wide += "1]";
  const std::string message = error_of(fmt::format(R"({{"itemExplorationConfig": {}}})", wide));
  EXPECT_TRUE(says(message, "itemExplorationConfig"));
  EXPECT_LT(message.size(), 400u) << message.size();
  // The parser's own echo ("last read: ...") keeps every blank since the token began: the fuzzer's
  // 500 newlines before a bad byte made a 4 KB message. It is cut to its last characters.
  const std::string blanks = error_of(std::string(500, '\n') + "\xf6\x84 tail");
  EXPECT_TRUE(says(blanks, "job.json: not JSON")) << blanks;
  EXPECT_TRUE(says(blanks, "last read: '...")) << blanks;
  EXPECT_LT(blanks.size(), 400u) << blanks.size();
}

// A promotion whose INCLUDE uses a $NAME its filterValues lack is refused up front (it would fail
// every line of the job).
TEST(JobConfig, APromotionFilterNeedsItsValues) {
  const std::string message = error_of(R"j({"promotions": [{"name": "p", "percentPromotedItems": 20,
      "filterExpression": "INCLUDE ItemID WHERE Items.GENRES IN ($G)", "filterValues": {"H": "\"x\""}}]})j");
  EXPECT_TRUE(says(message, "job.json: promotions[0].filterValues: has no value for $G")) << message;
  EXPECT_EQ(error_of(R"j({"promotions": [{"name": "p", "percentPromotedItems": 20,
      "filterExpression": "EXCLUDE ItemID WHERE Items.GENRES IN ($G)"}]})j"),
            "");  // an EXCLUDE without its values is skipped, as the service does
}

TEST(JobConfig, FlagsParseAndCheckTheirValues) {
  JobConfig c;
  parse_ranking_influence("POPULARITY=0.2,FRESHNESS=0.5", c);
  EXPECT_DOUBLE_EQ(c.popularity_influence, 0.2);
  EXPECT_DOUBLE_EQ(c.freshness_influence, 0.5);
  EXPECT_TRUE(c.shapes_answers());
  try {
    parse_ranking_influence("POPULARITY=2", c);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_TRUE(says(e.what(), "--ranking-influence: POPULARITY: \"2\" is out of range"));
  }
  EXPECT_THROW(parse_ranking_influence("POPULARITY", c), Error);
  EXPECT_THROW(parse_ranking_influence("COLOUR=0.1", c), Error);
  EXPECT_EQ(parse_metadata_columns("Items.GENRES,PRICE"), (std::vector<std::string>{"GENRES", "PRICE"}));
  EXPECT_THROW(parse_metadata_columns("Users.AGE"), Error);
  EXPECT_THROW(parse_metadata_columns("GENRES,"), Error);
}

// The command line stops on a bad configuration before it opens anything: no output file, the
// message names the file and the key, the exit status is 1.
TEST(JobConfig, ABadConfigurationStopsTheJobBeforeItWritesAnything) {
  const fs::path dir = fs::temp_directory_path() / ("tastebud-test-jobconfig-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "job.json") << R"({"itemExplorationConfig": {"explorationWeight": "3"}})";
  std::ofstream(dir / "q.jsonl") << "{\"userId\": \"u0\"}\n";
  const std::string command = std::string(TASTEBUD_BINARY) + " batch-infer --model " + (dir / "model").string() +
                              " --input " + (dir / "q.jsonl").string() + " --output " + (dir / "out.jsonl").string() +
                              " --job-config " + (dir / "job.json").string() + " > " + (dir / "log").string() + " 2>&1";
  const int status = std::system(command.c_str());
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::ifstream log(dir / "log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(says(text, (dir / "job.json").string()));
  EXPECT_TRUE(says(text, "itemExplorationConfig.explorationWeight"));
  EXPECT_FALSE(fs::exists(dir / "out.jsonl"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tastebud::host
