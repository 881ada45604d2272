// The CSV reader on every RFC 4180 case at every block size, value parsing, text hashing and
// schemas (parsing, checking, inference).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <fmt/format.h>

#include "tastebud/datasets/csv.h"
#include "tastebud/datasets/encode.h"
#include "tastebud/datasets/schema.h"
#include "tastebud/error.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;
using Rows = std::vector<std::vector<std::string>>;

class Csv : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("tastebud_test_csv_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path write(const std::string& text, const std::string& name = "data.csv") {
    const fs::path path = root_ / name;
    std::ofstream out(path, std::ios::binary);
    out << text;
    return path;
  }

  // Every record of the file, read with the given block size.
  static Rows read_all(const fs::path& path, size_t block_size, std::vector<uint64_t>* lines = nullptr) {
    CsvReader reader(path, block_size);
    CsvRecord record;
    Rows rows;
    while (reader.next(record)) {
      rows.emplace_back(record.fields.begin(), record.fields.end());
      if (lines != nullptr) lines->push_back(record.line);
    }
    return rows;
  }

  // The same records whatever the block size: 1 byte (every boundary), odd sizes, the default.
  void expect_rows(const std::string& text, const Rows& expected,
                   const std::vector<uint64_t>& expected_lines = {}) {
    const fs::path path = write(text);
    for (size_t block : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}, size_t{8} << 20}) {
      std::vector<uint64_t> lines;
      EXPECT_EQ(read_all(path, block, &lines), expected) << "block size " << block;
      if (!expected_lines.empty()) {
        EXPECT_EQ(lines, expected_lines) << "block size " << block;
      }
    }
  }

  fs::path root_;
};

TEST_F(Csv, PlainFields) {
  expect_rows("a,b,c\n1,2,3\n", {{"a", "b", "c"}, {"1", "2", "3"}}, {1, 2});
}

TEST_F(Csv, LastLineWithoutNewline) { expect_rows("a,b\n1,2", {{"a", "b"}, {"1", "2"}}); }

TEST_F(Csv, EmptyFields) {
  expect_rows("a,,c\n,\n,,\n", {{"a", "", "c"}, {"", ""}, {"", "", ""}});
  expect_rows("a,b,", {{"a", "b", ""}});
}

TEST_F(Csv, QuotedFieldsWithCommas) {
  expect_rows("\"a,b\",c\n\"x\",\"\"\n", {{"a,b", "c"}, {"x", ""}});
}

TEST_F(Csv, DoubledQuotesAreEscapes) {
  expect_rows("\"he said \"\"hi\"\"\",x\n\"\"\"\",\"a\"\"\"\n",
              {{"he said \"hi\"", "x"}, {"\"", "a\""}});
}

TEST_F(Csv, NewlinesInsideQuotes) {
  expect_rows("id,text\n1,\"line one\nline two\"\n2,\"a\r\nb\"\n3,x\n",
              {{"id", "text"}, {"1", "line one\nline two"}, {"2", "a\r\nb"}, {"3", "x"}},
              {1, 2, 4, 6});
}

TEST_F(Csv, CrLfLineEnds) {
  expect_rows("a,b\r\n1,\"2\"\r\n3,4", {{"a", "b"}, {"1", "2"}, {"3", "4"}});
  expect_rows("a,b\r\n1,2\r", {{"a", "b"}, {"1", "2"}});
}

TEST_F(Csv, LoneCarriageReturnIsData) { expect_rows("a\rb,c\n", {{"a\rb", "c"}}); }

TEST_F(Csv, ByteOrderMarkIsSkipped) {
  expect_rows("\xEF\xBB\xBFUSER_ID,ITEM_ID\nu,i\n", {{"USER_ID", "ITEM_ID"}, {"u", "i"}});
  expect_rows("\xEF\xBB\xBF", {});
}

TEST_F(Csv, BlankLinesAreSkipped) {
  expect_rows("a,b\n\n1,2\r\n\r\n\n3,4\n\n", {{"a", "b"}, {"1", "2"}, {"3", "4"}}, {1, 3, 6});
}

TEST_F(Csv, EmptyFileHasNoRecords) { expect_rows("", {}); }

TEST_F(Csv, Utf8PassesThrough) {
  expect_rows("naïve,日本語,😀\n", {{"naïve", "日本語", "😀"}});
}

// Random records with every special character, written the RFC 4180 way and read back.
TEST_F(Csv, RandomRecordsRoundTrip) {
  std::mt19937 rng(7);
  const std::string alphabet = "ab,\"\n\r x|é";
  Rows expected;
  std::string text;
  for (int r = 0; r < 300; ++r) {
    const int fields = 1 + static_cast<int>(rng() % 5);
    std::vector<std::string> row;
    for (int f = 0; f < fields; ++f) {
      std::string value;
      const int length = static_cast<int>(rng() % 8);
      for (int k = 0; k < length; ++k) {
        const size_t pick = rng() % (alphabet.size() - 1);
        if (alphabet[pick] == '\xc3') {
          value += "é";
        } else if (alphabet[pick] != '\xa9') {
          value += alphabet[pick];
        }
      }
      // A lone empty field would be a blank line, which carries no record.
      if (fields == 1 && value.empty()) value.push_back('z');
      row.push_back(value);
      const bool quote = value.find_first_of(",\"\n\r") != std::string::npos || rng() % 4 == 0;
      if (f > 0) text += ',';
      if (quote) {
        text += '"';
        for (char c : value) {
          if (c == '"') text += '"';
          text += c;
        }
        text += '"';
      } else {
        text += value;
      }
    }
    text += rng() % 2 ? "\r\n" : "\n";
    expected.push_back(row);
  }
  expect_rows(text, expected);
}

TEST_F(Csv, UnterminatedQuoteNamesTheLineWhereItStarts) {
  const fs::path path = write("USER_ID,ITEM_ID\nu1,\"i1\nu2,i2\n");
  for (size_t block : {size_t{1}, size_t{8} << 20}) {
    CsvReader reader(path, block);
    reader.set_field_names({"USER_ID", "ITEM_ID"});
    CsvRecord record;
    ASSERT_TRUE(reader.next(record));
    try {
      reader.next(record);
      FAIL() << "no error";
    } catch (const BadRow&) {
      FAIL() << "an unterminated quote must not be skippable";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("data.csv:2: field 2 (ITEM_ID): unterminated quoted"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST_F(Csv, TextAfterClosingQuoteIsABadRowAndReadingGoesOn) {
  const fs::path path = write("a,b\n\"x\"y,z\n1,2\n");
  CsvReader reader(path, 3);
  CsvRecord record;
  ASSERT_TRUE(reader.next(record));
  try {
    reader.next(record);
    FAIL() << "no error";
  } catch (const BadRow& e) {
    EXPECT_NE(std::string(e.what()).find("data.csv:2: field 1: unexpected 'y' after the closing quote"),
              std::string::npos)
        << e.what();
  }
  ASSERT_TRUE(reader.next(record));
  EXPECT_EQ(record.line, 3u);
  EXPECT_EQ(record.fields, (std::vector<std::string_view>{"1", "2"}));
}

TEST_F(Csv, NulByteIsABadRowNamingLineAndField) {
  const fs::path path = write(std::string("a,b\nok,fine\nx,y\0z\nlast,row\n", 26));
  for (size_t block : {size_t{1}, size_t{5}, size_t{8} << 20}) {
    CsvReader reader(path, block);
    reader.set_field_names({"a", "b"});
    CsvRecord record;
    ASSERT_TRUE(reader.next(record));
    ASSERT_TRUE(reader.next(record));
    try {
      reader.next(record);
      FAIL() << "no error";
    } catch (const BadRow& e) {
      EXPECT_NE(std::string(e.what()).find("data.csv:3: field 2 (b): NUL byte"), std::string::npos)
          << e.what();
    }
    ASSERT_TRUE(reader.next(record));
    EXPECT_EQ(record.fields[0], "last");
  }
}

TEST_F(Csv, InvalidUtf8IsABadRowNamingLineAndField) {
  // A Latin-1 "é" (0xE9) where UTF-8 was promised, in a quoted field on its second line.
  const fs::path path = write("a,b\nx,\"first\nsecond \xE9t\xE9\"\n");
  CsvReader reader(path, 4);
  CsvRecord record;
  ASSERT_TRUE(reader.next(record));
  try {
    reader.next(record);
    FAIL() << "no error";
  } catch (const BadRow& e) {
    EXPECT_NE(std::string(e.what()).find("data.csv:3: field 2: invalid UTF-8"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(reader.next(record));
}

TEST(Utf8, AcceptsValidAndRejectsMalformed) {
  size_t bad = 0;
  EXPECT_TRUE(is_clean_utf8("plain ascii", &bad));
  EXPECT_TRUE(is_clean_utf8("\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80", &bad));
  EXPECT_FALSE(is_clean_utf8("ab\xC3", &bad));  // truncated sequence
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(is_clean_utf8("\xC0\xAF", &bad));          // overlong '/'
  EXPECT_FALSE(is_clean_utf8("\xED\xA0\x80", &bad));      // a UTF-16 surrogate
  EXPECT_FALSE(is_clean_utf8("\xF4\x90\x80\x80", &bad));  // past U+10FFFF
  EXPECT_FALSE(is_clean_utf8("\x80", &bad));              // a lone continuation byte
  EXPECT_FALSE(is_clean_utf8(std::string_view("a\0b", 3), &bad));
  EXPECT_EQ(bad, 1u);
}

TEST(Numbers, IntegersAreStrict) {
  int64_t v = 0;
  EXPECT_TRUE(parse_int64("1700000000", &v));
  EXPECT_EQ(v, 1700000000);
  EXPECT_TRUE(parse_int64(" -5 ", &v));
  EXPECT_EQ(v, -5);
  EXPECT_TRUE(parse_int64("+7", &v));
  EXPECT_EQ(v, 7);
  for (const char* bad : {"", "1.5", "1e9", "abc", "12abc", "99999999999999999999", "--1"}) {
    EXPECT_FALSE(parse_int64(bad, &v)) << bad;
  }
}

TEST(Numbers, FloatsRejectNonFinite) {
  float v = 0;
  EXPECT_EQ(parse_float("4.5", &v), NumberParse::Ok);
  EXPECT_EQ(v, 4.5f);
  EXPECT_EQ(parse_float("-1e3", &v), NumberParse::Ok);
  EXPECT_EQ(v, -1000.0f);
  EXPECT_EQ(parse_float("+2", &v), NumberParse::Ok);
  EXPECT_EQ(parse_float("1e-60", &v), NumberParse::Ok);
  EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(parse_float(" ", &v), NumberParse::Empty);
  for (const char* bad : {"nan", "NaN", "inf", "-Infinity", "1e39", "1e400"}) {
    EXPECT_EQ(parse_float(bad, &v), NumberParse::NotFinite) << bad;
  }
  for (const char* bad : {"abc", "1.2.3", "4,5", "0x10"}) {
    EXPECT_EQ(parse_float(bad, &v), NumberParse::NotANumber) << bad;
  }
}

TEST(Numbers, Booleans) {
  bool b = false;
  EXPECT_TRUE(parse_bool("TRUE", &b));
  EXPECT_TRUE(b);
  EXPECT_TRUE(parse_bool("0", &b));
  EXPECT_FALSE(b);
  EXPECT_FALSE(parse_bool("yes", &b));
}

TEST(TextTokens, Fnv1aOfLowerCasedTokens) {
  // FNV-1a 32 of "a" is 0xe40c292c.
  EXPECT_EQ(text_token_hash("a"), 0xe40c292cu % kTextHashBuckets);
  EXPECT_EQ(text_token_hash("Hello"), text_token_hash("hello"));
  std::vector<uint32_t> tokens;
  for_each_text_token("Hello, WORLD! héllo--x", [&](uint32_t h) { tokens.push_back(h); });
  EXPECT_EQ(tokens, (std::vector<uint32_t>{text_token_hash("hello"), text_token_hash("world"),
                                           text_token_hash("héllo"), text_token_hash("x")}));
  for (uint32_t t : tokens) EXPECT_LT(t, kTextHashBuckets);
}

TEST(IdMapTest, DenseIndicesInFirstSeenOrderAcrossRehashes) {
  IdMap map;
  for (int i = 0; i < 5000; ++i) EXPECT_EQ(map.insert("id" + std::to_string(i)), static_cast<uint32_t>(i));
  for (int i = 0; i < 5000; ++i) EXPECT_EQ(map.insert("id" + std::to_string(i)), static_cast<uint32_t>(i));
  EXPECT_EQ(map.size(), 5000u);
  EXPECT_EQ(map[42], "id42");
  EXPECT_EQ(map.find("id4999"), 4999u);
  EXPECT_FALSE(map.find("nope").has_value());
  EXPECT_EQ(map.insert(""), 5000u);
  IdMap copy(StringTable(map.offsets(), map.bytes()));
  EXPECT_EQ(copy.find("id7"), 7u);
  EXPECT_EQ(copy.insert("new"), 5001u);
}

// ---- schemas -------------------------------------------------------------------------------

TEST(SchemaTest, ParsesAvroRecordWithUnionsAndFlags) {
  const Schema s = parse_schema(R"({
    "type": "record", "name": "Items", "namespace": "com.shop",
    "fields": [
      {"name": "ITEM_ID", "type": "string"},
      {"name": "GENRES", "type": ["null", "string"], "categorical": true},
      {"name": "PRICE", "type": "float"},
      {"name": "DESCRIPTION", "type": ["null", "string"], "textual": true},
      {"name": "CREATION_TIMESTAMP", "type": "long"}
    ],
    "version": "1.0"})",
                                DatasetKind::Items, "items.json");
  ASSERT_EQ(s.fields.size(), 5u);
  EXPECT_EQ(s.name_space, "com.shop");
  const SchemaField* genres = s.find("genres");
  ASSERT_NE(genres, nullptr);
  EXPECT_TRUE(genres->nullable);
  EXPECT_TRUE(genres->categorical);
  EXPECT_EQ(field_role(DatasetKind::Items, *genres), FieldRole::Categorical);
  EXPECT_EQ(field_role(DatasetKind::Items, *s.find("DESCRIPTION")), FieldRole::Textual);
  EXPECT_EQ(field_role(DatasetKind::Items, *s.find("PRICE")), FieldRole::Numerical);
  EXPECT_EQ(field_role(DatasetKind::Items, *s.find("CREATION_TIMESTAMP")),
            FieldRole::CreationTimestamp);
  // Written back and parsed again, it is the same schema.
  const Schema again = parse_schema(schema_to_json(s), DatasetKind::Items, "again");
  ASSERT_EQ(again.fields.size(), s.fields.size());
  for (size_t i = 0; i < s.fields.size(); ++i) {
    EXPECT_EQ(again.fields[i].name, s.fields[i].name);
    EXPECT_EQ(again.fields[i].type, s.fields[i].type);
    EXPECT_EQ(again.fields[i].nullable, s.fields[i].nullable);
    EXPECT_EQ(again.fields[i].textual, s.fields[i].textual);
  }
}

void expect_schema_error(const std::string& json, DatasetKind kind, const std::string& needle) {
  try {
    parse_schema(json, kind, "s.json");
    ADD_FAILURE() << "no error for " << json;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(SchemaTest, RejectsWhatTheImportCannotUse) {
  const std::string head = R"({"type":"record","name":"Interactions","fields":[)";
  expect_schema_error("{", DatasetKind::Interactions, "s.json: not valid JSON");
  // Wrong member types and numbers no double holds once came out as "internal error" (issue 15).
  expect_schema_error(R"({"type":7})", DatasetKind::Interactions, "s.json: \"type\" must be a string");
  expect_schema_error(R"({"type":"record","name":7,"fields":[]})", DatasetKind::Interactions,
                      "s.json: \"name\" must be a string, not 7");
  expect_schema_error(R"({"type":"record","fields":[{"name":"USER_ID","type":"string","categorical":"yes"}]})",
                      DatasetKind::Interactions, "s.json: field USER_ID: \"categorical\" must be true or false");
  expect_schema_error(R"({"type":"record","fields":[{"name":"USER_ID","type":"string","textual":1e999}]})",
                      DatasetKind::Interactions, "s.json: not valid JSON");
  expect_schema_error(R"({"type":"enum"})", DatasetKind::Interactions, "expected an Avro record");
  expect_schema_error(head + R"({"name":"USER_ID","type":"string"},{"name":"ITEM_ID","type":"string"}]})",
                      DatasetKind::Interactions, "s.json: field TIMESTAMP: required field is missing");
  expect_schema_error(head + R"({"name":"USER_ID","type":"string"},{"name":"ITEM_ID","type":"string"},
                      {"name":"TIMESTAMP","type":"string"}]})",
                      DatasetKind::Interactions, "field TIMESTAMP: expected type \"long\"");
  expect_schema_error(head + R"({"name":"USER_ID","type":{"type":"map"}}]})",
                      DatasetKind::Interactions, "field USER_ID: unsupported type");
  expect_schema_error(
      R"({"type":"record","fields":[{"name":"ITEM_ID","type":"string"},
         {"name":"A","type":"string","textual":true},{"name":"B","type":"string","textual":true}]})",
      DatasetKind::Items, "field B: Items may have at most one textual field");
  expect_schema_error(
      R"({"type":"record","fields":[{"name":"USER_ID","type":"string"},
         {"name":"BIO","type":"string","textual":true}]})",
      DatasetKind::Users, "field BIO: only Items may have a textual field");
  expect_schema_error(R"({"type":"record","fields":[{"name":"USER_ID","type":["null","string"]}]})",
                      DatasetKind::Users, "field USER_ID: a required field cannot be nullable");
}

TEST(SchemaTest, InfersTypesFromNamesAndValues) {
  const Schema s = infer_schema(
      DatasetKind::Items,
      {"ITEM_ID", "PRICE", "STOCK", "ON_SALE", "GENRES", "CREATION_TIMESTAMP", "DESCRIPTION", "EMPTY"},
      {{"i1", "9.99", "3", "true", "Action|Crime", "1700000000", "A short one", ""},
       {"i2", "", "4", "false", "Drama", "1700000001", "Another", ""}});
  check_schema(s, DatasetKind::Items, "inferred");
  EXPECT_EQ(s.find("ITEM_ID")->type, FieldType::String);
  EXPECT_FALSE(s.find("ITEM_ID")->nullable);
  EXPECT_EQ(s.find("PRICE")->type, FieldType::Double);
  EXPECT_TRUE(s.find("PRICE")->nullable);
  EXPECT_EQ(s.find("STOCK")->type, FieldType::Long);
  EXPECT_EQ(s.find("ON_SALE")->type, FieldType::Boolean);
  EXPECT_TRUE(s.find("GENRES")->categorical);
  EXPECT_EQ(s.find("CREATION_TIMESTAMP")->type, FieldType::Long);
  EXPECT_TRUE(s.find("DESCRIPTION")->textual);
  EXPECT_EQ(s.find("EMPTY")->type, FieldType::String);

  const Schema in = infer_schema(DatasetKind::Interactions,
                                 {"USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE",
                                  "DEVICE_TYPE"},
                                 {{"u", "i", "1", "click", "", "mobile"}});
  check_schema(in, DatasetKind::Interactions, "inferred");
  EXPECT_EQ(in.find("TIMESTAMP")->type, FieldType::Long);
  EXPECT_EQ(in.find("EVENT_VALUE")->type, FieldType::Float);
  EXPECT_TRUE(in.find("EVENT_VALUE")->nullable);
  EXPECT_EQ(field_role(DatasetKind::Interactions, *in.find("EVENT_TYPE")), FieldRole::EventType);
  EXPECT_EQ(field_role(DatasetKind::Interactions, *in.find("DEVICE_TYPE")), FieldRole::Categorical);
}

TEST(SchemaTest, LongFreeTextBecomesTheTextualField) {
  const std::string text = "a long description of the item with many words in it for sure";
  const Schema s = infer_schema(DatasetKind::Items, {"ITEM_ID", "BLURB", "NOTES"},
                                {{"i1", text, text}, {"i2", text, text}});
  EXPECT_TRUE(s.find("BLURB")->textual);
  EXPECT_FALSE(s.find("NOTES")->textual);  // at most one
  EXPECT_TRUE(s.find("NOTES")->categorical);
}

// MovieLens-like titles (distinct, a few words, over 10 characters) are the textual field; ids and
// codes that are just as unique but have no spaces, short genre labels that repeat, and a column
// of too few rows to tell stay categorical.
TEST(SchemaTest, MostlyUniqueStringsOfWordsBecomeTheTextualField) {
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < 40; ++i) {
    const std::string n = std::to_string(i);
    rows.push_back({"i" + n, "SKU-000" + n + "-XL-BLUE", "Movie Number " + n + " (1995)", i % 2 ? "Comedy" : "Drama",
                    "Big Red Apple " + n});
  }
  const Schema s = infer_schema(DatasetKind::Items, {"ITEM_ID", "CODE", "TITLE", "GENRES", "SHORT"}, rows);
  check_schema(s, DatasetKind::Items, "inferred");
  EXPECT_TRUE(s.find("TITLE")->textual);
  EXPECT_FALSE(s.find("TITLE")->categorical);
  EXPECT_TRUE(s.find("CODE")->categorical);  // unique but no spaces
  EXPECT_TRUE(s.find("GENRES")->categorical);
  EXPECT_TRUE(s.find("SHORT")->categorical);  // the second such column: at most one textual field
  EXPECT_EQ(s.find("ITEM_ID")->type, FieldType::String);
  EXPECT_FALSE(s.find("ITEM_ID")->textual);

  // Short strings of words ("Red 7", under 10 characters) and repeated titles stay categorical.
  std::vector<std::vector<std::string>> short_rows, repeated;
  for (int i = 0; i < 40; ++i) {
    short_rows.push_back({fmt::format("i{}", i), fmt::format("Red {}", i)});
    repeated.push_back({fmt::format("i{}", i), fmt::format("Movie Number {} (1995)", i % 10)});
  }
  EXPECT_TRUE(infer_schema(DatasetKind::Items, {"ITEM_ID", "TITLE"}, short_rows).find("TITLE")->categorical);
  EXPECT_TRUE(infer_schema(DatasetKind::Items, {"ITEM_ID", "TITLE"}, repeated).find("TITLE")->categorical);
  // 19 sampled values: too few to call unique.
  rows.resize(19);
  EXPECT_TRUE(infer_schema(DatasetKind::Items, {"ITEM_ID", "CODE", "TITLE", "GENRES", "SHORT"}, rows)
                  .find("TITLE")->categorical);
  // Users may not have a textual field: their unique names stay categorical.
  std::vector<std::vector<std::string>> users;
  for (int i = 0; i < 40; ++i) users.push_back({fmt::format("u{}", i), fmt::format("Ada Lovelace the {}", i)});
  EXPECT_TRUE(infer_schema(DatasetKind::Users, {"USER_ID", "NAME"}, users).find("NAME")->categorical);
}

// Long free text wins over an earlier column of unique titles, and a DESCRIPTION by name over both.
TEST(SchemaTest, LongTextAndNamedDescriptionWinOverTitles) {
  const std::string text = "a long description of the item with many words in it for sure";
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < 30; ++i) rows.push_back({fmt::format("i{}", i), fmt::format("Movie Number {}", i), text});
  const Schema s = infer_schema(DatasetKind::Items, {"ITEM_ID", "TITLE", "BLURB"}, rows);
  EXPECT_TRUE(s.find("BLURB")->textual);
  EXPECT_TRUE(s.find("TITLE")->categorical);
  const Schema named = infer_schema(DatasetKind::Items, {"ITEM_ID", "TITLE", "DESCRIPTION"}, rows);
  EXPECT_TRUE(named.find("DESCRIPTION")->textual);
  EXPECT_TRUE(named.find("TITLE")->categorical);
}

}  // namespace
}  // namespace tastebud::datasets
