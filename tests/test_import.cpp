// Import end to end: encoding (dense ids, sort, duplicates, CSR, multi-valued and null fields,
// text), the round trip through Dataset::open, incremental mode, the summary, every bad input of
// the issue (message names file, line and field; no dataset directory appears or changes) and the
// command line.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "tastebud/datasets/columns.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/encode.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/schema.h"
#include "tastebud/datasets/summary.h"
#include "tastebud/directory_lock.h"
#include "tastebud/error.h"
#include "run_cli.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;

uint32_t index_of(const StringTable& table, std::string_view id) {
  for (uint32_t i = 0; i < table.size(); ++i)
    if (table[i] == id) return i;
  ADD_FAILURE() << "no id " << id;
  return UINT32_MAX;
}

std::vector<std::string> strings_of(const CategoricalField& field, uint32_t row) {
  std::vector<std::string> out;
  for (uint64_t k = field.offsets[row]; k < field.offsets[row + 1]; ++k) {
    out.emplace_back(field.vocabulary[field.values[k]]);
  }
  return out;
}

std::vector<std::string> strings_of(const ContextField& field, uint64_t row) {
  if (field.values[row] == kNullContext) return {};
  return {std::string(field.vocabulary[field.values[row]])};
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string fmt_row(int batch, int row) {
  return "b" + std::to_string(batch) + "u" + std::to_string(row % 500) + ",i" + std::to_string(row % 300) + "," +
         std::to_string(1000 + row) + "\n";
}

class Import : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("tastebud_test_import_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "in");
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path write(const std::string& name, const std::string& text) {
    const fs::path path = root_ / "in" / name;
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out << text;
    return path;
  }
  fs::path out() const { return root_ / "data" / "shop"; }

  ImportOptions options(bool users = false, bool items = false) const {
    ImportOptions o;
    o.interactions = root_ / "in" / "interactions.csv";
    if (users) o.users = root_ / "in" / "users.csv";
    if (items) o.items = root_ / "in" / "items.csv";
    o.out = out();
    o.block_size = 5;  // every record straddles blocks
    return o;
  }

  // The import fails with a message holding every needle, and leaves nothing behind: no dataset,
  // no temporary directory, no parent directory it created.
  void expect_import_error(const ImportOptions& o, const std::vector<std::string>& needles) {
    try {
      import_dataset(o);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      for (const std::string& needle : needles) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
            << "message: " << e.what() << "\nlacks: " << needle;
      }
    }
    EXPECT_FALSE(fs::exists(root_ / "data")) << "the import left " << (root_ / "data");
    for (const auto& entry : fs::directory_iterator(root_)) {
      EXPECT_TRUE(entry.path().filename() == "in") << "left behind: " << entry.path();
    }
  }

  fs::path root_;
};

// ---- a small shop, every kind of field -----------------------------------------------------

void write_shop(Import& t, auto write) {
  write("interactions.csv",
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE,DEVICE_TYPE,IMPRESSION\r\n"
        "u2,i1,100,view,,mobile,i1|i2|i3\r\n"
        "u1,i2,50,click,1.5,desktop,\r\n"
        "u1,i1,60,purchase,4,,i1\r\n"
        "u2,i1,100,view,,tv,i1|i2|i3\r\n"  // a duplicate event: stored once, the later row wins
        "u2,i1,100,click,,tablet,\r\n"     // same user, item and time, another type: kept
        "u1,i3,40,view,0.5,mobile,\r\n");
  write("users.csv",
        "\xEF\xBB\xBFUSER_ID,GENDER,AGE\n"
        "u1,F,34\n"
        "u3,M,\n");  // a user without interactions
  write("items.csv",
        "ITEM_ID,GENRES,PRICE,DESCRIPTION,CREATION_TIMESTAMP\n"
        "i1,Action|Crime,9.99,\"A fast, loud \"\"film\"\"\",1600000000\n"
        "i4,Drama,,\"Quiet\ndrama\",\n");  // a cold item
}

TEST_F(Import, EncodesSortsDeduplicatesAndRoundTrips) {
  write_shop(*this, [&](auto name, auto text) { write(name, text); });
  const ImportReport report = import_dataset(options(true, true));
  EXPECT_EQ(report.rows_read, 6u);
  EXPECT_EQ(report.interactions, 5u);
  EXPECT_EQ(report.duplicates, 1u);
  EXPECT_EQ(report.users, 3u);
  EXPECT_EQ(report.items, 4u);

  const Dataset ds = Dataset::open(out());
  ASSERT_EQ(ds.num_users(), 3u);
  ASSERT_EQ(ds.num_items(), 4u);  // i1..i4: i3 comes from an interaction, i4 from Items only
  const uint32_t u1 = index_of(ds.user_ids, "u1"), u2 = index_of(ds.user_ids, "u2"),
                 u3 = index_of(ds.user_ids, "u3");
  const uint32_t i1 = index_of(ds.item_ids, "i1"), i2 = index_of(ds.item_ids, "i2"),
                 i3 = index_of(ds.item_ids, "i3"), i4 = index_of(ds.item_ids, "i4");
  const uint32_t view = index_of(ds.event_types, "view"), click = index_of(ds.event_types, "click"),
                 purchase = index_of(ds.event_types, "purchase");
  EXPECT_EQ(ds.event_types.size(), 3u);

  const Interactions& in = ds.interactions;
  ASSERT_EQ(in.size(), 5u);
  ASSERT_EQ(in.user_offsets.size(), 4u);
  // CSR: each user's rows are one slice, sorted by (timestamp, item, event type).
  EXPECT_EQ(in.user_offsets[u3 + 1] - in.user_offsets[u3], 0u);
  const uint64_t a = in.user_offsets[u1];
  ASSERT_EQ(in.user_offsets[u1 + 1] - a, 3u);
  EXPECT_EQ(std::vector<int64_t>(in.timestamp.begin() + a, in.timestamp.begin() + a + 3),
            (std::vector<int64_t>{40, 50, 60}));
  EXPECT_EQ(in.item[a], i3);
  EXPECT_EQ(in.item[a + 1], i2);
  EXPECT_EQ(in.item[a + 2], i1);
  EXPECT_EQ(in.event_type[a + 1], click);
  EXPECT_EQ(in.event_type[a + 2], purchase);
  EXPECT_FLOAT_EQ(in.event_value[a], 0.5f);
  EXPECT_FLOAT_EQ(in.event_value[a + 2], 4.0f);
  const uint64_t b = in.user_offsets[u2];
  ASSERT_EQ(in.user_offsets[u2 + 1] - b, 2u);
  EXPECT_EQ(in.user[b], u2);
  EXPECT_EQ(in.event_type[b], std::min(view, click));
  EXPECT_EQ(in.event_type[b + 1], std::max(view, click));
  EXPECT_TRUE(std::isnan(in.event_value[b]));  // empty EVENT_VALUE is null
  for (uint64_t r = 0; r < in.size(); ++r) {
    EXPECT_GE(r, in.user_offsets[in.user[r]]);
    EXPECT_LT(r, in.user_offsets[in.user[r] + 1]);
  }

  // Context: single-valued, null when empty; the duplicate's later row ("tv") won.
  ASSERT_EQ(in.context.size(), 1u);
  EXPECT_EQ(in.context[0].name, "DEVICE_TYPE");
  EXPECT_EQ(strings_of(in.context[0], a), std::vector<std::string>{"mobile"});
  EXPECT_EQ(strings_of(in.context[0], a + 2), std::vector<std::string>{});
  const uint64_t b_view = in.event_type[b] == view ? b : b + 1;
  EXPECT_EQ(strings_of(in.context[0], b_view), std::vector<std::string>{"tv"});

  // Impressions as item indices.
  ASSERT_EQ(in.impression_offsets.size(), 6u);
  EXPECT_EQ(std::vector<uint32_t>(in.impression_items.begin() + in.impression_offsets[b_view],
                                  in.impression_items.begin() + in.impression_offsets[b_view + 1]),
            (std::vector<uint32_t>{i1, i2, i3}));
  EXPECT_EQ(in.impression_offsets[a + 3] - in.impression_offsets[a + 2], 1u);

  // Users: categorical and numerical, null where empty; u2 has no row.
  ASSERT_EQ(ds.users.has_row.size(), 3u);
  EXPECT_EQ(ds.users.has_row[u1], 1);
  EXPECT_EQ(ds.users.has_row[u2], 0);
  EXPECT_EQ(ds.users.has_row[u3], 1);
  ASSERT_EQ(ds.users.categorical.size(), 1u);
  EXPECT_EQ(strings_of(ds.users.categorical[0], u1), std::vector<std::string>{"F"});
  EXPECT_EQ(strings_of(ds.users.categorical[0], u2), std::vector<std::string>{});
  ASSERT_EQ(ds.users.numerical.size(), 1u);
  EXPECT_EQ(ds.users.numerical[0].name, "AGE");
  EXPECT_FLOAT_EQ(ds.users.numerical[0].values[u1], 34.0f);
  EXPECT_TRUE(std::isnan(ds.users.numerical[0].values[u3]));
  EXPECT_TRUE(std::isnan(ds.users.numerical[0].values[u2]));

  // Items: multi-valued genres, price, textual tokens, creation time; i4 is cold.
  EXPECT_EQ(ds.items.has_row[i1], 1);
  EXPECT_EQ(ds.items.has_row[i2], 0);
  EXPECT_EQ(strings_of(ds.items.categorical[0], i1), (std::vector<std::string>{"Action", "Crime"}));
  EXPECT_EQ(strings_of(ds.items.categorical[0], i4), std::vector<std::string>{"Drama"});
  EXPECT_FLOAT_EQ(ds.items.numerical[0].values[i1], 9.99f);
  ASSERT_EQ(ds.items.textual.size(), 1u);
  const TextualField& text = ds.items.textual[0];
  EXPECT_EQ(std::vector<uint32_t>(text.tokens.begin() + text.offsets[i1],
                                  text.tokens.begin() + text.offsets[i1 + 1]),
            (std::vector<uint32_t>{text_token_hash("a"), text_token_hash("fast"),
                                   text_token_hash("loud"), text_token_hash("film")}));
  EXPECT_EQ(text.offsets[i4 + 1] - text.offsets[i4], 2u);
  ASSERT_EQ(ds.items.creation_timestamp.size(), 4u);
  EXPECT_EQ(ds.items.creation_timestamp[i1], 1600000000);
  EXPECT_EQ(ds.items.creation_timestamp[i4], INT64_MIN);

  // The inferred schemas are saved for review and reuse.
  ASSERT_FALSE(ds.items_schema.empty());
  const Schema items = parse_schema(ds.items_schema, DatasetKind::Items, "items");
  EXPECT_TRUE(items.find("DESCRIPTION")->textual);
  EXPECT_EQ(items.find("PRICE")->type, FieldType::Double);
  const Schema users = parse_schema(ds.users_schema, DatasetKind::Users, "users");
  EXPECT_EQ(users.find("AGE")->type, FieldType::Long);
  EXPECT_TRUE(fs::exists(out() / "schema" / "interactions.json"));

  const DatasetSummary s = summarize(ds);
  EXPECT_EQ(s.cold_items, 1u);
  EXPECT_EQ(s.users_below_two, 1u);
  EXPECT_EQ(s.users_with_two_or_more, 2u);
  EXPECT_EQ(s.users_with_metadata, 2u);
  EXPECT_EQ(s.items_with_metadata, 2u);
  ASSERT_EQ(s.warnings.size(), 2u);
  EXPECT_NE(s.warnings[0].find("only 5 interactions"), std::string::npos);
  const std::string summary = format_summary(ds);
  EXPECT_NE(summary.find("cold (no interactions)   1"), std::string::npos) << summary;
  EXPECT_NE(summary.find("DESCRIPTION"), std::string::npos) << summary;
  EXPECT_NE(summary.find("warning: only 2 users have 2 or more"), std::string::npos) << summary;
}

// Random events with many duplicates against a reference built with std::set.
TEST_F(Import, RandomEventsMatchAReferenceSortAndDedupe) {
  std::mt19937 rng(3);
  std::string csv = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\n";
  std::map<std::string, uint32_t> user_index, item_index, type_index;
  using Event = std::tuple<uint32_t, int64_t, uint32_t, uint32_t>;
  std::set<Event> expected;
  const char* types[] = {"view", "click", "cart"};
  for (int r = 0; r < 20000; ++r) {
    const std::string user = "user" + std::to_string(rng() % 300);
    const std::string item = "item" + std::to_string(rng() % 150);
    const int64_t ts = 1'600'000'000 + rng() % 40;
    const std::string type = types[rng() % 3];
    csv += user + "," + item + "," + std::to_string(ts) + "," + type + "\n";
    const uint32_t u = user_index.emplace(user, user_index.size()).first->second;
    const uint32_t i = item_index.emplace(item, item_index.size()).first->second;
    const uint32_t t = type_index.emplace(type, type_index.size()).first->second;
    expected.emplace(u, ts, i, t);
  }
  write("interactions.csv", csv);
  ImportOptions o = options();
  o.block_size = 4096;
  const ImportReport report = import_dataset(o);
  EXPECT_EQ(report.interactions, expected.size());
  EXPECT_EQ(report.duplicates, 20000 - expected.size());

  const Dataset ds = Dataset::open(out());
  const Interactions& in = ds.interactions;
  ASSERT_EQ(in.size(), expected.size());
  size_t r = 0;
  for (const auto& [u, ts, i, t] : expected) {
    ASSERT_EQ(ds.user_ids[in.user[r]], ds.user_ids[u]);
    EXPECT_EQ(in.user[r], u);
    EXPECT_EQ(in.timestamp[r], ts);
    EXPECT_EQ(in.item[r], i);
    EXPECT_EQ(in.event_type[r], t);
    ++r;
  }
  for (uint32_t u = 0; u < ds.num_users(); ++u) {
    for (uint64_t k = in.user_offsets[u]; k < in.user_offsets[u + 1]; ++k) EXPECT_EQ(in.user[k], u);
  }
  EXPECT_TRUE(in.impression_offsets.empty());
}

TEST_F(Import, MinimalInteractionsWithoutEventType) {
  write("interactions.csv", "user_id,item_id,timestamp\nu1,i1,5\nu1,i1,5\n");
  import_dataset(options());
  const Dataset ds = Dataset::open(out());
  EXPECT_EQ(ds.interactions.size(), 1u);
  ASSERT_EQ(ds.event_types.size(), 1u);
  EXPECT_EQ(ds.event_types[0], "");
  EXPECT_TRUE(std::isnan(ds.interactions.event_value[0]));
  EXPECT_TRUE(ds.interactions.context.empty());
  EXPECT_EQ(ds.users.has_row.size(), 1u);
  EXPECT_TRUE(ds.users_schema.empty());
}

// ---- schemas given in --schema-dir ---------------------------------------------------------

TEST_F(Import, GivenSchemaAllowsMissingNullableColumnsAndRejectsUnknownOnes) {
  write("schema/interactions.json", R"({"type":"record","name":"Interactions","fields":[
      {"name":"USER_ID","type":"string"},{"name":"ITEM_ID","type":"string"},
      {"name":"TIMESTAMP","type":"long"},{"name":"EVENT_VALUE","type":["null","float"]},
      {"name":"LOCATION","type":["null","string"],"categorical":true}],"version":"1.0"})");
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP,LOCATION\nu1,i1,5,Paris\n");
  ImportOptions o = options();
  o.schema_dir = root_ / "in" / "schema";
  import_dataset(o);
  const Dataset ds = Dataset::open(out());
  EXPECT_TRUE(std::isnan(ds.interactions.event_value[0]));
  EXPECT_EQ(strings_of(ds.interactions.context[0], 0), std::vector<std::string>{"Paris"});
  fs::remove_all(root_ / "data");

  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP,EXTRA\nu1,i1,5,x\n");
  expect_import_error(o, {"interactions.csv:1:", "field 4 (EXTRA)", "not in the schema",
                          "schema/interactions.json"});

  // A non-nullable schema field that the CSV lacks.
  write("schema/interactions.json", R"({"type":"record","fields":[
      {"name":"USER_ID","type":"string"},{"name":"ITEM_ID","type":"string"},
      {"name":"TIMESTAMP","type":"long"},{"name":"EVENT_TYPE","type":"string"}]})");
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,5\n");
  expect_import_error(o, {"interactions.csv:1:", "field EVENT_TYPE", "required column is missing"});
}

TEST_F(Import, SavedSchemaCanBeReused) {
  write_shop(*this, [&](auto name, auto text) { write(name, text); });
  import_dataset(options(true, true));
  ImportOptions o = options(true, true);
  o.schema_dir = out() / "schema";
  o.out = root_ / "data" / "again";
  import_dataset(o);
  EXPECT_EQ(Dataset::open(o.out).interactions.size(), 5u);
}

// ---- replacing and adding ------------------------------------------------------------------

TEST_F(Import, FullImportOverExistingDatasetNeedsOverwrite) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,5\n");
  import_dataset(options());
  const std::string before = read_file(out() / "meta.json");
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,5\nu2,i2,6\n");
  try {
    import_dataset(options());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("`overwrite`"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(out() / "meta.json"), before);
  ImportOptions o = options();
  o.overwrite = true;
  import_dataset(o);
  EXPECT_EQ(Dataset::open(out()).interactions.size(), 2u);
  for (const auto& entry : fs::directory_iterator(out().parent_path())) {
    EXPECT_EQ(entry.path().filename(), "shop") << "left behind: " << entry.path();
  }

  // --overwrite never removes a directory that is not a dataset.
  fs::create_directories(root_ / "notes");
  write("../notes/keep.txt", "mine");
  o.out = root_ / "notes";
  try {
    import_dataset(o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a tastebud dataset"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(root_ / "notes" / "keep.txt"));
}

TEST_F(Import, IncrementalKeepsIdsReplacesRecordsAndMergesEvents) {
  write("interactions.csv",
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu1,i1,10,view\nu1,i2,20,view\nu2,i1,30,view\n");
  write("items.csv", "ITEM_ID,GENRES\ni1,A\ni2,B\n");
  write("users.csv", "USER_ID,GENDER\nu1,F\n");
  import_dataset(options(true, true));
  std::vector<std::string> users_before, items_before;
  {
    const Dataset ds = Dataset::open(out());
    for (uint32_t u = 0; u < ds.num_users(); ++u) users_before.emplace_back(ds.user_ids[u]);
    for (uint32_t i = 0; i < ds.num_items(); ++i) items_before.emplace_back(ds.item_ids[i]);
  }

  write("interactions.csv",
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\n"
        "u3,i3,40,view\n"    // a new user and a new item
        "u1,i1,10,view\n"    // already there: stored once
        "u2,i2,50,click\n");  // a new event type
  write("items.csv", "ITEM_ID,GENRES\ni2,C|D\ni5,A\n");  // i2 replaced, i5 new and cold
  write("users.csv", "USER_ID,GENDER\nu1,M\n");
  ImportOptions o = options(true, true);
  o.mode = ImportMode::Incremental;
  const ImportReport report = import_dataset(o);
  EXPECT_EQ(report.new_users, 1u);
  EXPECT_EQ(report.new_items, 2u);
  EXPECT_EQ(report.interactions, 5u);
  EXPECT_EQ(report.duplicates, 1u);

  const Dataset ds = Dataset::open(out());
  for (uint32_t u = 0; u < users_before.size(); ++u) EXPECT_EQ(ds.user_ids[u], users_before[u]);
  for (uint32_t i = 0; i < items_before.size(); ++i) EXPECT_EQ(ds.item_ids[i], items_before[i]);
  EXPECT_EQ(ds.user_ids[2], "u3");
  EXPECT_EQ(ds.num_items(), 4u);
  const uint32_t i1 = index_of(ds.item_ids, "i1"), i2 = index_of(ds.item_ids, "i2"),
                 i5 = index_of(ds.item_ids, "i5");
  const CategoricalField& genres = ds.items.categorical[0];
  EXPECT_EQ(strings_of(genres, i1), std::vector<std::string>{"A"});
  EXPECT_EQ(strings_of(genres, i2), (std::vector<std::string>{"C", "D"}));
  EXPECT_EQ(strings_of(genres, i5), std::vector<std::string>{"A"});
  EXPECT_EQ(genres.vocabulary[0], "A");  // vocabulary indices are stable too
  EXPECT_EQ(genres.vocabulary[1], "B");
  EXPECT_EQ(strings_of(ds.users.categorical[0], index_of(ds.user_ids, "u1")),
            std::vector<std::string>{"M"});
  EXPECT_EQ(ds.event_types[0], "view");
  EXPECT_EQ(ds.event_types[1], "click");
  EXPECT_EQ(summarize(ds).cold_items, 1u);

  // An incremental batch with only items: the interactions stay.
  write("items.csv", "ITEM_ID,GENRES\ni6,B\n");
  o.interactions.clear();
  o.users.clear();
  import_dataset(o);
  const Dataset after = Dataset::open(out());
  EXPECT_EQ(after.interactions.size(), 5u);
  EXPECT_EQ(after.num_items(), 5u);
  EXPECT_EQ(after.users.has_row[index_of(after.user_ids, "u1")], 1);
}

// The modes of every entry under `dir` (relative name -> permission bits).
std::map<std::string, unsigned> modes_under(const fs::path& dir) {
  std::map<std::string, unsigned> modes{{".", static_cast<unsigned>(fs::status(dir).permissions())}};
  for (const auto& e : fs::recursive_directory_iterator(dir))
    modes[fs::relative(e.path(), dir).string()] = static_cast<unsigned>(e.status().permissions());
  return modes;
}

// An incremental import rebuilds the directory: the owner's 700/600 stay, and a new file is 600.
TEST_F(Import, IncrementalKeepsTheOwnersModes) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu1,i1,10,view\nu2,i2,20,view\n");
  import_dataset(options());
  for (const auto& e : fs::recursive_directory_iterator(out()))
    fs::permissions(e.path(), e.is_directory() ? fs::perms::owner_all : fs::perms::owner_read | fs::perms::owner_write);
  fs::permissions(out(), fs::perms::owner_all);
  write("items.csv", "ITEM_ID,GENRES\ni1,A\n");  // new columns: files the old dataset lacked
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu3,i3,40,view\n");
  ImportOptions o = options(false, true);
  o.mode = ImportMode::Incremental;
  import_dataset(o);
  for (const auto& [name, mode] : modes_under(out())) {
    const bool dir = fs::is_directory(out() / name);
    EXPECT_EQ(mode, static_cast<unsigned>(dir ? 0700 : 0600)) << name;
  }
}

// What is not the dataset's inside its directory (a model trained into it, notes) would go with
// the directory an import replaces: refused up front, naming it, and everything stays.
TEST_F(Import, AnImportRefusesToReplaceWhatIsNotTheDatasets) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu1,i1,10,view\nu2,i2,20,view\n");
  import_dataset(options());
  fs::create_directories(out() / "model");
  std::ofstream(out() / "model" / "model.bin") << "a model";
  ImportOptions o = options();
  o.mode = ImportMode::Incremental;
  for (bool incremental : {true, false}) {
    o.mode = incremental ? ImportMode::Incremental : ImportMode::Full;
    o.overwrite = !incremental;
    try {
      import_dataset(o);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("holds model, which is not part of the dataset"), std::string::npos)
          << e.what();
    }
    EXPECT_TRUE(fs::exists(out() / "model" / "model.bin"));
    EXPECT_EQ(Dataset::open(out()).interactions.size(), 2u);
  }
}

// A header of 100,000 columns is refused at once, naming the file and the count.
TEST_F(Import, AHeaderOfTooManyColumnsIsRefused) {
  std::string header = "USER_ID,ITEM_ID,TIMESTAMP", row = "u1,i1,10";
  for (int c = 0; c < 100000; ++c) {
    header += ",C" + std::to_string(c);
    row += ",x";
  }
  write("interactions.csv", header + "\n" + row + "\n");
  expect_import_error(options(), {"interactions.csv:1: the header has 100003 columns; at most 1000"});
}

// Four bad bytes in an index column (an item, a user, a vocabulary index) are an Error naming the
// column on open, and `info`, `delete-users` and an incremental import exit 1 instead of crashing.
TEST_F(Import, DamagedIndexColumnsAreRefusedOnOpen) {
  write("interactions.csv",
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,DEVICE_TYPE\nu1,i1,10,view,tv\nu2,i2,20,view,\n");
  write("gone.csv", "USER_ID\nu1\n");
  for (const char* column : {"interactions.item", "interactions.user", "interactions.context.0.values"}) {
    fs::remove_all(out());
    import_dataset(options());
    {
      std::fstream f(out() / (std::string(column) + ".col"), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(sizeof(ColumnHeader) + 4);  // the second row's value
      f.write("\x7f\xff\xff\xff", 4);
    }
    try {
      Dataset::open(out());
      ADD_FAILURE() << column;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(column) + ".col: element 1 is 4294967167, not below"),
                std::string::npos)
          << e.what();
    }
    std::string output;
    EXPECT_EQ(testing_cli::run_cli("info " + out().string(), &output), 1) << output;
    EXPECT_EQ(testing_cli::run_cli(fmt::format("delete-users --data {} --users {}", out().string(),
                                               (root_ / "in" / "gone.csv").string()),
                                   &output),
              1)
        << output;
    EXPECT_EQ(testing_cli::run_cli(fmt::format("import --mode incremental --interactions {} --out {}",
                                               (root_ / "in" / "interactions.csv").string(), out().string()),
                                   &output),
              1)
        << output;
    EXPECT_NE(output.find("the column is damaged"), std::string::npos) << output;
  }
}

// Every column records its CRC-32; `info --verify` recomputes them and names a damaged column that
// the open's bounds checks cannot see (a timestamp).
TEST_F(Import, InfoVerifyFindsADamagedColumn) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu1,i1,10,view\nu2,i2,20,view\n");
  import_dataset(options());
  std::string output;
  ASSERT_EQ(testing_cli::run_cli("info --verify " + out().string(), &output), 0) << output;
  EXPECT_NE(output.find("verified: every column's CRC-32 matches"), std::string::npos) << output;
  {
    std::fstream f(out() / "interactions.timestamp.col", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(sizeof(ColumnHeader) + 1);
    f.write("\x55", 1);
  }
  EXPECT_EQ(testing_cli::run_cli("info " + out().string(), &output), 0) << output;
  EXPECT_EQ(testing_cli::run_cli("info --verify " + out().string(), &output), 1) << output;
  EXPECT_NE(output.find("corrupt: " + (out() / "interactions.timestamp.col").string()), std::string::npos)
      << output;
}

TEST_F(Import, FailedIncrementalLeavesTheDatasetAsItWas) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,10\n");
  import_dataset(options());
  const std::string before = read_file(out() / "meta.json");
  ImportOptions o = options();
  o.mode = ImportMode::Incremental;
  for (const std::string& bad : {std::string("USER_ID,ITEM_ID,TIMESTAMP\nu2,i2,soon\n"),
                                 std::string("USER_ID,ITEM_ID,TIMESTAMP,NEW_COLUMN\nu2,i2,5,x\n")}) {
    write("interactions.csv", bad);
    EXPECT_THROW(import_dataset(o), Error);
    EXPECT_EQ(read_file(out() / "meta.json"), before);
    EXPECT_EQ(Dataset::open(out()).num_users(), 1u);
    for (const auto& entry : fs::directory_iterator(out().parent_path())) {
      EXPECT_EQ(entry.path().filename(), "shop") << "left behind: " << entry.path();
    }
  }
}

// Two incremental imports into one dataset once both exited 0 while one batch vanished (issue 15):
// a writer now holds the dataset's lock, and a second one stops and names the first.
TEST_F(Import, SecondWriterOfADatasetStopsAndNamesTheFirst) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,10\n");
  import_dataset(options());
  ImportOptions o = options();
  o.mode = ImportMode::Incremental;
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu2,i2,20\n");
  {
    const DirectoryLock held(out(), "the test");
    try {
      import_dataset(o);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("in use by PID " + std::to_string(::getpid())), std::string::npos) << e.what();
    }
    o.mode = ImportMode::Full;
    o.overwrite = true;
    EXPECT_THROW(import_dataset(o), Error);
    o.mode = ImportMode::Incremental;
  }
  EXPECT_EQ(Dataset::open(out()).num_users(), 1u);
  import_dataset(o);  // the lock is gone with its holder
  EXPECT_EQ(Dataset::open(out()).num_users(), 2u);
  // Nothing but the dataset stays beside it: the lock file goes with the lock.
  for (const auto& entry : fs::directory_iterator(out().parent_path())) EXPECT_EQ(entry.path().filename(), "shop");
}

// Two incremental imports at once, in two processes: each either lands or stops with "in use";
// no batch is lost without an error.
TEST_F(Import, ConcurrentIncrementalImportsLoseNothingSilently) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu0,i0,1\n");
  import_dataset(options());
  std::vector<std::string> batches;
  for (int b = 0; b < 2; ++b) {
    std::string text = "USER_ID,ITEM_ID,TIMESTAMP\n";
    for (int r = 0; r < 20000; ++r) text += fmt_row(b, r);
    batches.push_back(write("batch" + std::to_string(b) + ".csv", text).string());
  }
  pid_t children[2];
  for (int b = 0; b < 2; ++b) {
    children[b] = ::fork();
    if (children[b] == 0) {
      ImportOptions o = options();
      o.mode = ImportMode::Incremental;
      o.interactions = batches[b];
      o.block_size = 1 << 16;
      int code = 0;
      try {
        import_dataset(o);
      } catch (const Error& e) {
        code = std::string(e.what()).find("in use by") != std::string::npos ? 3 : 4;
      }
      ::_exit(code);
    }
  }
  int landed = 0;
  for (pid_t child : children) {
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    const int code = WEXITSTATUS(status);
    EXPECT_TRUE(code == 0 || code == 3) << code;
    landed += code == 0;
  }
  EXPECT_GE(landed, 1);
  EXPECT_EQ(Dataset::open(out()).interactions.size(), 1u + 20000u * landed);
}

// The header checks are linear (issue 15: 100,000 columns once took minutes to check): a header of
// 100,001 columns whose last repeats the first fails at once, naming the column.
TEST_F(Import, WideHeaderChecksAreLinear) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,10\n");
  std::string header = "ITEM_ID", row = "i1";
  for (int c = 0; c < 100000; ++c) {
    header += ",C" + std::to_string(c);
    row += ",1";
  }
  write("items.csv", header + ",c0\n" + row + ",1\n");
  expect_import_error(options(false, true), {"items.csv:1: field 100002 (c0): the column name appears twice"});
}

// What a killed import left beside the dataset (its temporary directory, named with its PID) goes
// with the next import; a live process's temporary stays.
TEST_F(Import, NextImportRemovesTemporariesOfDeadImports) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,10\n");
  fs::create_directories(out().parent_path());
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const fs::path stale = out().parent_path() / (".shop.tmp-" + std::to_string(dead) + "-0-123");
  const fs::path live = out().parent_path() / (".shop.tmp-" + std::to_string(::getppid()) + "-0-123");
  fs::create_directories(stale / "schema");
  fs::create_directories(live);
  import_dataset(options());
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  fs::remove_all(live);
}

// ---- bad input -----------------------------------------------------------------------------

struct BadInput {
  const char* what;
  std::string interactions;
  std::string items;  // empty: no items file
  std::vector<std::string> needles;
};

TEST_F(Import, EveryBadInputNamesFileLineAndFieldAndLeavesNoDataset) {
  const std::string head = "USER_ID,ITEM_ID,TIMESTAMP\n";
  const std::string good = head + "u1,i1,100\n";
  const std::vector<BadInput> cases = {
      {"missing required column", "USER_ID,ITEM_ID\nu1,i1\n", "",
       {"interactions.csv:1:", "field TIMESTAMP", "required column is missing"}},
      {"timestamp not an integer", head + "u1,i1,100\nu1,i2,yesterday\n", "",
       {"interactions.csv:3:", "field 3 (TIMESTAMP)", "expected an integer", "yesterday"}},
      {"timestamp with a fraction", head + "u1,i1,1.5e9\n", "",
       {"interactions.csv:2:", "field 3 (TIMESTAMP)", "expected an integer"}},
      {"too few fields", head + "u1,i1\n", "",
       {"interactions.csv:2:", "field 3 (TIMESTAMP)", "missing", "2 fields"}},
      {"too many fields", head + "u1,i1,100,extra\n", "",
       {"interactions.csv:2:", "field 4", "unexpected extra field"}},
      {"unterminated quote", head + "u1,\"i1,100\nu2,i2,200\n", "",
       {"interactions.csv:2:", "field 2 (ITEM_ID)", "unterminated quoted field"}},
      {"empty file", "", "", {"interactions.csv:1:", "the file is empty"}},
      {"header without rows", head, "", {"interactions.csv:2:", "header but no data rows"}},
      {"NUL byte", head + std::string("u\0x,i1,100\n", 11), "",
       {"interactions.csv:2:", "field 1 (USER_ID)", "NUL byte"}},
      {"invalid UTF-8", head + "u1,i\xff,100\n", "",
       {"interactions.csv:2:", "field 2 (ITEM_ID)", "invalid UTF-8"}},
      {"NaN", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_VALUE\nu1,i1,100,1\nu1,i1,101,nan\n", "",
       {"interactions.csv:3:", "field 4 (EVENT_VALUE)", "not a finite number"}},
      {"infinity", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_VALUE\nu1,i1,100,-Infinity\n", "",
       {"interactions.csv:2:", "field 4 (EVENT_VALUE)", "not a finite number"}},
      {"beyond float", "USER_ID,ITEM_ID,TIMESTAMP,EVENT_VALUE\nu1,i1,100,1e50\n", "",
       {"interactions.csv:2:", "field 4 (EVENT_VALUE)", "not a finite number"}},
      {"empty user id", head + ",i1,100\n", "", {"interactions.csv:2:", "field 1 (USER_ID)", "empty id"}},
      // Timestamps outside 1970..2100 (issue 15: INT64_MIN imported, then recipes overflowed).
      {"timestamp INT64_MIN", head + "u1,i1,100\nu1,i2,-9223372036854775808\n", "",
       {"interactions.csv:3:", "field 3 (TIMESTAMP)", "before 1970"}},
      {"negative timestamp", head + "u1,i1,-5\n", "", {"interactions.csv:2:", "field 3 (TIMESTAMP)", "before 1970"}},
      {"millisecond timestamp", head + "u1,i1,1700000000123\n", "",
       {"interactions.csv:2:", "field 3 (TIMESTAMP)", "looks like milliseconds", "divide by 1000"}},
      {"far-future timestamp", head + "u1,i1,9000000000000000\n", "",
       {"interactions.csv:2:", "field 3 (TIMESTAMP)", "after 2100"}},
      {"millisecond creation timestamp", good, "ITEM_ID,CREATION_TIMESTAMP\ni1,1700000000123\n",
       {"items.csv:2:", "field 2 (CREATION_TIMESTAMP)", "looks like milliseconds"}},
      {"item with an empty id", good, "ITEM_ID,GENRES\ni1,a\n,b\n",
       {"items.csv:3:", "field 1 (ITEM_ID)", "empty id"}},
      {"NaN in item metadata", good, "ITEM_ID,PRICE\ni1,1\ni2,NaN\n",
       {"items.csv:3:", "field 2 (PRICE)", "not a finite number"}},
      {"empty items file", good, "\n", {"items.csv:1:", "the file is empty"}},
      {"items without ITEM_ID", good, "ID,GENRES\ni1,a\n",
       {"items.csv:1:", "field ITEM_ID", "required column is missing"}},
      {"text after a closing quote", head + "\"u1\"x,i1,100\n", "",
       {"interactions.csv:2:", "field 1 (USER_ID)", "after the closing quote"}},
  };
  for (const BadInput& c : cases) {
    SCOPED_TRACE(c.what);
    write("interactions.csv", c.interactions);
    if (!c.items.empty()) write("items.csv", c.items);
    expect_import_error(options(false, !c.items.empty()), c.needles);
  }
}

TEST_F(Import, MaxBadRowsSkipsAndReportsUpToN) {
  write("interactions.csv",
        "USER_ID,ITEM_ID,TIMESTAMP\n"
        "u1,i1,100\n"
        "u_bad,i_bad,never\n"
        "u2,i2\n"
        "u2,i2,200\n");
  ImportOptions o = options();
  o.max_bad_rows = 1;
  std::vector<std::string> reported;
  o.on_bad_row = [&](const std::string& m) { reported.push_back(m); };
  expect_import_error(o, {"interactions.csv:4:", "field 3 (TIMESTAMP)", "`max_bad_rows` 1"});

  reported.clear();
  o.max_bad_rows = 2;
  const ImportReport report = import_dataset(o);
  EXPECT_EQ(report.bad_rows_skipped, 2u);
  EXPECT_EQ(report.interactions, 2u);
  ASSERT_EQ(reported.size(), 2u);
  EXPECT_NE(reported[0].find("interactions.csv:3: field 3 (TIMESTAMP)"), std::string::npos);
  EXPECT_NE(reported[1].find("interactions.csv:4: field 3 (TIMESTAMP): missing"), std::string::npos);
  // A skipped row leaves no trace: its ids got no index.
  const Dataset ds = Dataset::open(out());
  EXPECT_EQ(ds.num_users(), 2u);
  EXPECT_EQ(ds.num_items(), 2u);
}

// ---- reading a damaged dataset -------------------------------------------------------------

TEST_F(Import, OpenRejectsDamagedColumns) {
  write("interactions.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,5\nu2,i1,6\n");
  import_dataset(options());
  const fs::path column = out() / "interactions.item.col";
  const std::string good = read_file(column);
  auto expect_open_error = [&](const std::string& needle) {
    try {
      Dataset::open(out());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("interactions.item.col"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::string bad = good;
  bad[0] = 'X';
  std::ofstream(column, std::ios::binary) << bad;
  expect_open_error("bad magic number");
  bad = good;
  bad[8] = 9;  // column format version
  std::ofstream(column, std::ios::binary) << bad;
  expect_open_error("version 9");
  std::ofstream(column, std::ios::binary) << good.substr(0, good.size() - 2);
  expect_open_error("does not match");
  std::ofstream(column, std::ios::binary) << good;
  EXPECT_EQ(Dataset::open(out()).interactions.size(), 2u);
}

// ---- the command line ----------------------------------------------------------------------

struct CommandResult {
  int status;
  std::string out, err;
};

CommandResult run_tastebud(const fs::path& dir, const std::string& args) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string command = std::string(TASTEBUD_BINARY) + " " + args + " > " + out.string() +
                              " 2> " + err.string();
  const int status = std::system(command.c_str());
  CommandResult run{WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(out), read_file(err)};
  fs::remove(out);
  fs::remove(err);
  return run;
}

TEST_F(Import, CommandLineImportInfoAndErrors) {
  write_shop(*this, [&](auto name, auto text) { write(name, text); });
  const fs::path in = root_ / "in";
  CommandResult run = run_tastebud(root_, "import --interactions " + (in / "interactions.csv").string() +
                                    " --users " + (in / "users.csv").string() + " --items " +
                                    (in / "items.csv").string() + " --out " + out().string());
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_NE(run.out.find("imported 5 interactions"), std::string::npos) << run.out;

  run = run_tastebud(root_, "info " + out().string());
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_NE(run.out.find("interactions               5"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("warning:"), std::string::npos) << run.out;

  // A second full import without --overwrite fails and says what to do.
  run = run_tastebud(root_, "import --interactions " + (in / "interactions.csv").string() +
                                " --out " + out().string());
  EXPECT_NE(run.status, 0);
  EXPECT_NE(run.err.find("--overwrite"), std::string::npos) << run.err;

  write("bad.csv", "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,later\n");
  const fs::path other = root_ / "other";
  run = run_tastebud(root_, "import --interactions " + (in / "bad.csv").string() + " --out " +
                                other.string());
  EXPECT_NE(run.status, 0);
  EXPECT_NE(run.err.find("bad.csv:2: field 3 (TIMESTAMP)"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(other));

  run = run_tastebud(root_, "import --interactions " + (in / "bad.csv").string() + " --out " +
                                other.string() + " --max-bad-rows 5");
  EXPECT_NE(run.status, 0);  // every row was bad: no data rows left is fine, but 0 interactions
  run = run_tastebud(root_, "import --help");
  EXPECT_EQ(run.status, 0);
  EXPECT_NE(run.out.find("--max-bad-rows"), std::string::npos);
  EXPECT_NE(run.out.find("--schema-dir"), std::string::npos);
  run = run_tastebud(root_, "info --help");
  EXPECT_EQ(run.status, 0);
  EXPECT_NE(run.out.find("DATASET_DIR"), std::string::npos);
}

}  // namespace
}  // namespace tastebud::datasets
