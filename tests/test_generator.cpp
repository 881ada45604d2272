#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/error.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kWindowStart = 1780272000;  // 2026-06-01T00:00:00Z
constexpr int64_t kWindowSeconds = 180 * 86400;

fs::path scratch_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() /
                       ("tastebud_test_generator_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  return dir;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A small RFC 4180 reader for one line: quoted fields, "" escapes. Returns false on a malformed
// line (a stray quote or an unterminated quoted field).
bool split_csv_line(const std::string& line, std::vector<std::string>& fields) {
  fields.clear();
  std::string field;
  size_t i = 0;
  for (;;) {
    field.clear();
    if (i < line.size() && line[i] == '"') {
      ++i;
      for (;;) {
        if (i >= line.size()) return false;
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += line[i++];
      }
      if (i < line.size() && line[i] != ',') return false;
    } else {
      while (i < line.size() && line[i] != ',') {
        if (line[i] == '"') return false;
        field += line[i++];
      }
    }
    fields.push_back(field);
    if (i >= line.size()) return true;
    ++i;
  }
}

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

Table read_csv(const fs::path& path) {
  Table table;
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> fields;
  bool first = true;
  while (std::getline(in, line)) {
    EXPECT_TRUE(split_csv_line(line, fields)) << path << ": " << line;
    if (first) {
      table.header = fields;
      first = false;
    } else {
      EXPECT_EQ(fields.size(), table.header.size()) << path << ": " << line;
      table.rows.push_back(fields);
    }
  }
  return table;
}

struct Event {
  std::string user, item;
  int64_t time;
  std::string type, value, device;
};

// One generated shop, shared by the statistical tests (generating it once keeps them fast).
class GeneratedShop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    options_.users = 2000;
    options_.items = 1000;
    options_.interactions = 120000;
    options_.clusters = 16;  // the default
    options_.cold_item_share = 0.2;
    options_.seed = 7;
    options_.threads = 2;
    dir_ = scratch_dir("shop");
    files_ = generate_shop(options_, dir_);
    interactions_ = new Table(read_csv(files_.interactions));
    items_ = new Table(read_csv(files_.items));
    users_ = new Table(read_csv(files_.users));
    for (const auto& row : interactions_->rows) {
      events_.push_back({row[0], row[1], std::stoll(row[2]), row[3], row[4], row[5]});
    }
    for (const auto& row : items_->rows) item_rows_[row[0]] = &row;
  }
  static void TearDownTestSuite() {
    delete interactions_;
    delete items_;
    delete users_;
    events_.clear();
    item_rows_.clear();
    fs::remove_all(dir_);
  }

  static const std::string& category(const std::string& item) { return (*item_rows_.at(item))[1]; }

  static inline GeneratorOptions options_;
  static inline fs::path dir_;
  static inline CsvFiles files_;
  static inline Table* interactions_ = nullptr;
  static inline Table* items_ = nullptr;
  static inline Table* users_ = nullptr;
  static inline std::vector<Event> events_;
  static inline std::unordered_map<std::string, const std::vector<std::string>*> item_rows_;
};

TEST_F(GeneratedShop, WritesHeadersAndExactRowCounts) {
  EXPECT_EQ(files_.interactions, dir_ / "interactions.csv");
  EXPECT_EQ(files_.users, dir_ / "users.csv");
  EXPECT_EQ(files_.items, dir_ / "items.csv");
  EXPECT_EQ(interactions_->header,
            (std::vector<std::string>{"USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE",
                                      "EVENT_VALUE", "DEVICE_TYPE"}));
  EXPECT_EQ(items_->header, (std::vector<std::string>{"ITEM_ID", "CATEGORY_L1", "GENRES", "PRICE",
                                                      "DESCRIPTION", "CREATION_TIMESTAMP"}));
  EXPECT_EQ(users_->header, (std::vector<std::string>{"USER_ID", "AGE", "GENDER", "MEMBERSHIP"}));
  EXPECT_EQ(interactions_->rows.size(), options_.interactions);
  EXPECT_EQ(items_->rows.size(), options_.items);
  EXPECT_EQ(users_->rows.size(), options_.users);
  EXPECT_EQ(items_->rows.front()[0], "i0");
  EXPECT_EQ(users_->rows.back()[0], "u1999");
  // No temporary files left behind.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 3u);
}

// The optional signals are off by default: no IMPRESSION column (and the other tests pin the rest).
TEST_F(GeneratedShop, HasNoImpressionColumnByDefault) {
  EXPECT_EQ(std::find(interactions_->header.begin(), interactions_->header.end(), "IMPRESSION"),
            interactions_->header.end());
  for (const auto& row : interactions_->rows) ASSERT_EQ(row.size(), 6u);
}

TEST_F(GeneratedShop, ItemPopularityHasALongTail) {
  std::map<std::string, size_t> count;
  for (const Event& e : events_) ++count[e.item];
  std::vector<size_t> counts;
  for (const auto& [item, n] : count) counts.push_back(n);
  std::sort(counts.rbegin(), counts.rend());
  const size_t top = options_.items / 10;
  size_t top_events = 0;
  for (size_t i = 0; i < top; ++i) top_events += counts[i];
  EXPECT_GT(static_cast<double>(top_events) / events_.size(), 0.4)
      << "the top 10% of items should hold a large share of the interactions";
  EXPECT_LT(counts.back() * 20, counts.front());
}

TEST_F(GeneratedShop, FunnelNarrowsFromViewToPurchase) {
  std::map<std::string, size_t> by_type;
  for (const Event& e : events_) ++by_type[e.type];
  EXPECT_EQ(by_type.size(), 3u);
  EXPECT_GT(by_type["view"], 2 * by_type["cart"]);
  EXPECT_GT(by_type["cart"], by_type["purchase"]);
  EXPECT_GT(by_type["purchase"], events_.size() / 50);

  // A purchase carries the item's price; views and carts have no value. Every cart and purchase
  // follows a view of the same item by the same user.
  std::map<std::pair<std::string, std::string>, int64_t> first_view;
  for (const Event& e : events_) {
    if (e.type == "view") {
      auto [it, inserted] = first_view.try_emplace({e.user, e.item}, e.time);
      if (!inserted) it->second = std::min(it->second, e.time);
    }
  }
  for (const Event& e : events_) {
    if (e.type == "purchase") {
      EXPECT_EQ(e.value, (*item_rows_.at(e.item))[3]);
    } else {
      EXPECT_EQ(e.value, "");
    }
    if (e.type != "view") {
      const auto it = first_view.find({e.user, e.item});
      ASSERT_NE(it, first_view.end()) << e.user << " " << e.type << " " << e.item;
      EXPECT_LT(it->second, e.time);
    }
  }
}

TEST_F(GeneratedShop, UsersStayMostlyInTheirClusters) {
  // CATEGORY_L1 names the item's cluster (one category per cluster up to 16 clusters).
  std::map<std::string, std::map<std::string, size_t>> per_user;
  for (const Event& e : events_) ++per_user[e.user][category(e.item)];
  double share_sum = 0;
  size_t users = 0;
  for (const auto& [user, categories] : per_user) {
    std::vector<size_t> counts;
    size_t total = 0;
    for (const auto& [name, n] : categories) {
      counts.push_back(n);
      total += n;
    }
    if (total < 20) continue;
    std::sort(counts.rbegin(), counts.rend());
    share_sum += static_cast<double>(counts[0] + (counts.size() > 1 ? counts[1] : 0)) / total;
    ++users;
  }
  ASSERT_GT(users, 500u);
  EXPECT_GT(share_sum / users, 0.8) << "users' two main categories should dominate their events";
}

// The point of the shop: a recommender that reads user history must beat popularity by far.
// Leave-last-out HR@25 of the most popular items against the most popular items of the
// categories in the user's history.
TEST_F(GeneratedShop, HistoryBeatsPopularityByAWideMargin) {
  std::map<std::string, std::vector<const Event*>> by_user;
  for (const Event& e : events_) by_user[e.user].push_back(&e);
  std::map<std::string, size_t> popularity;
  for (const auto& [user, events] : by_user) {
    for (size_t i = 0; i + 1 < events.size(); ++i) ++popularity[events[i]->item];
  }
  std::vector<std::pair<size_t, std::string>> ranked;
  for (const auto& [item, n] : popularity) ranked.push_back({n, item});
  std::sort(ranked.rbegin(), ranked.rend());
  std::set<std::string> top_popular;
  std::map<std::string, std::vector<std::string>> top_by_category;
  for (const auto& [n, item] : ranked) {
    if (top_popular.size() < 25) top_popular.insert(item);
    auto& list = top_by_category[category(item)];
    if (list.size() < 25) list.push_back(item);
  }
  size_t tested = 0, popular_hits = 0, history_hits = 0;
  for (const auto& [user, events] : by_user) {
    if (events.size() < 5) continue;
    const std::string& held_out = events.back()->item;
    std::map<std::string, size_t> categories;
    for (size_t i = 0; i + 1 < events.size(); ++i) ++categories[category(events[i]->item)];
    std::vector<std::pair<size_t, std::string>> ordered;
    for (const auto& [name, n] : categories) ordered.push_back({n, name});
    std::sort(ordered.rbegin(), ordered.rend());
    std::set<std::string> recommended;
    for (const auto& [n, name] : ordered) {
      const size_t take = std::max<size_t>(1, 25 * n / (events.size() - 1));
      const auto& list = top_by_category[name];
      for (size_t k = 0; k < std::min(take, list.size()) && recommended.size() < 25; ++k) {
        recommended.insert(list[k]);
      }
    }
    ++tested;
    popular_hits += top_popular.count(held_out);
    history_hits += recommended.count(held_out);
  }
  ASSERT_GT(tested, 500u);
  EXPECT_GT(history_hits, 2 * popular_hits)
      << "history HR@25 " << double(history_hits) / tested << ", popularity HR@25 "
      << double(popular_hits) / tested;
}

TEST_F(GeneratedShop, ColdItemsHaveNoInteractions) {
  std::set<std::string> seen;
  for (const Event& e : events_) seen.insert(e.item);
  const size_t cold = static_cast<size_t>(options_.cold_item_share * options_.items);
  // Cold items are the newest arrivals; a few warm items far down the tail may also go unseen.
  size_t unseen = 0, unseen_new = 0;
  for (const auto& row : items_->rows) {
    if (seen.count(row[0]) == 0) {
      ++unseen;
      unseen_new += std::stoll(row[5]) >= kWindowStart + kWindowSeconds - 30 * 86400;
    }
  }
  EXPECT_GE(unseen_new, cold);
  EXPECT_LE(unseen, cold + options_.items / 100);
}

TEST_F(GeneratedShop, TimestampsSpanTheWindowAndFollowItemCreation) {
  int64_t first = INT64_MAX, last = INT64_MIN;
  for (const Event& e : events_) {
    first = std::min(first, e.time);
    last = std::max(last, e.time);
    // An item is never seen before it exists (launches appear inside the window).
    ASSERT_GE(e.time, std::stoll((*item_rows_.at(e.item))[5])) << e.item;
  }
  EXPECT_GE(first, kWindowStart);
  EXPECT_LT(last, kWindowStart + kWindowSeconds);
  EXPECT_GT(last - first, kWindowSeconds * 95 / 100);

  // Popularity drifts: items launched in the last 15 days are most of the 20 items whose
  // interactions grew fastest from the 15 days before, which is what "trending now" must find.
  constexpr int64_t kPeriod = 15 * 86400;
  const int64_t last_start = kWindowStart + kWindowSeconds - kPeriod;
  std::map<std::string, int64_t> growth;
  for (const auto& row : items_->rows) growth[row[0]] = 0;
  for (const Event& e : events_) {
    if (e.time >= last_start) ++growth[e.item];
    if (e.time >= last_start - kPeriod && e.time < last_start) --growth[e.item];
  }
  std::vector<std::pair<int64_t, std::string>> ranked;
  for (const auto& [item, g] : growth) ranked.push_back({-g, item});
  std::sort(ranked.begin(), ranked.end());
  size_t launched = 0;
  for (size_t i = 0; i < 20; ++i) {
    launched += std::stoll((*item_rows_.at(ranked[i].second))[5]) >= last_start - 86400;
  }
  EXPECT_GE(launched, 10u) << "of the 20 fastest-growing items";
}

TEST_F(GeneratedShop, MetadataIsValidAndFollowsTheClusters) {
  const std::set<std::string> devices = {"mobile", "desktop", "tablet"};
  for (const Event& e : events_) ASSERT_EQ(devices.count(e.device), 1u) << e.device;

  const std::set<std::string> memberships = {"basic", "silver", "gold", "platinum"};
  for (const auto& row : users_->rows) {
    const int age = std::stoi(row[1]);
    EXPECT_GE(age, 16);
    EXPECT_LE(age, 85);
    EXPECT_TRUE(row[2] == "F" || row[2] == "M") << row[2];
    EXPECT_EQ(memberships.count(row[3]), 1u) << row[3];
  }

  size_t with_comma = 0, with_quote = 0;
  std::map<std::string, std::map<std::string, size_t>> genres_by_category;
  for (const auto& row : items_->rows) {
    const std::string& genres = row[2];
    const size_t values = 1 + std::count(genres.begin(), genres.end(), '|');
    EXPECT_GE(values, 1u);
    EXPECT_LE(values, 3u);
    EXPECT_GT(std::stod(row[3]), 0.0);
    EXPECT_FALSE(row[4].empty());
    with_comma += row[4].find(',') != std::string::npos;
    with_quote += row[4].find('"') != std::string::npos;
    std::stringstream split(genres);
    std::string genre;
    while (std::getline(split, genre, '|')) ++genres_by_category[row[1]][genre];
  }
  EXPECT_GT(with_comma, 10u) << "descriptions should exercise quoting";
  EXPECT_GT(with_quote, 10u) << "descriptions should exercise quote escaping";
  // Genres follow the category: each category's three most common genres cover most of it.
  EXPECT_EQ(genres_by_category.size(), options_.clusters);
  for (const auto& [name, genres] : genres_by_category) {
    std::vector<size_t> counts;
    size_t total = 0;
    for (const auto& [genre, n] : genres) {
      counts.push_back(n);
      total += n;
    }
    std::sort(counts.rbegin(), counts.rend());
    EXPECT_GT(static_cast<double>(counts[0] + counts[1] + counts[2]) / total, 0.6) << name;
  }
}

// Quoted DESCRIPTION fields hold commas and doubled quotes; the raw lines show the escaping.
TEST_F(GeneratedShop, DescriptionsAreQuotedPerRfc4180) {
  std::ifstream in(files_.items);
  std::string line;
  std::getline(in, line);
  std::vector<std::string> fields;
  size_t quoted = 0;
  while (std::getline(in, line)) {
    ASSERT_TRUE(split_csv_line(line, fields)) << line;
    ASSERT_EQ(fields.size(), 6u) << line;
    const std::string& description = fields[4];
    const bool needs_quotes = description.find_first_of(",\"") != std::string::npos;
    if (needs_quotes) {
      ++quoted;
      std::string escaped = "\"";
      for (char c : description) {
        if (c == '"') escaped += '"';
        escaped += c;
      }
      escaped += "\",";
      EXPECT_NE(line.find(escaped), std::string::npos) << line;
    } else {
      EXPECT_EQ(line.find('"'), std::string::npos) << line;
    }
  }
  EXPECT_GT(quoted, 100u);
}

TEST(Generator, OutputDoesNotDependOnThreadCount) {
  GeneratorOptions options;
  options.users = 700;
  options.items = 300;
  options.interactions = 50000;  // several blocks of users
  options.cold_item_share = 0.1;
  options.seed = 42;
  std::string reference[3];
  for (const uint32_t threads : {1u, 2u, 3u, 8u}) {
    options.threads = threads;
    const fs::path dir = scratch_dir("threads_" + std::to_string(threads));
    const CsvFiles files = generate_shop(options, dir);
    const std::string texts[3] = {read_file(files.interactions), read_file(files.users),
                                  read_file(files.items)};
    for (int f = 0; f < 3; ++f) {
      if (threads == 1) {
        reference[f] = texts[f];
      } else {
        EXPECT_TRUE(texts[f] == reference[f])
            << "file " << f << " differs with " << threads << " threads";
      }
    }
    fs::remove_all(dir);
  }

  options.seed = 43;
  const fs::path dir = scratch_dir("other_seed");
  const CsvFiles files = generate_shop(options, dir);
  EXPECT_NE(read_file(files.interactions), reference[0]);
  fs::remove_all(dir);
}

std::vector<std::string> split_bars(const std::string& text) {
  std::vector<std::string> values;
  std::stringstream split(text);
  std::string value;
  while (std::getline(split, value, '|')) values.push_back(value);
  return values;
}

// Total variation distance between the item distributions of two devices' events.
double device_item_distance(const Table& interactions, const std::string& a, const std::string& b) {
  std::map<std::string, double> count_a, count_b;
  double total_a = 0, total_b = 0;
  for (const auto& row : interactions.rows) {
    if (row[5] == a) {
      ++count_a[row[1]];
      ++total_a;
    } else if (row[5] == b) {
      ++count_b[row[1]];
      ++total_b;
    }
  }
  std::set<std::string> items;
  for (const auto& [item, n] : count_a) items.insert(item);
  for (const auto& [item, n] : count_b) items.insert(item);
  double distance = 0;
  for (const std::string& item : items) {
    distance += std::abs(count_a[item] / total_a - count_b[item] / total_b);
  }
  return distance / 2;
}

TEST(Generator, ImpressionsListDistinctItemsShownAndNotActedOn) {
  GeneratorOptions options;
  options.users = 600;
  options.items = 400;
  options.interactions = 30000;
  options.cold_item_share = 0.1;
  options.seed = 5;
  options.threads = 2;
  const fs::path plain_dir = scratch_dir("impressions_off");
  const std::string plain = read_file(generate_shop(options, plain_dir).interactions);
  options.impressions = 12;
  const fs::path dir = scratch_dir("impressions");
  const CsvFiles files = generate_shop(options, dir);

  const Table interactions = read_csv(files.interactions);
  ASSERT_EQ(interactions.header,
            (std::vector<std::string>{"USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE",
                                      "EVENT_VALUE", "DEVICE_TYPE", "IMPRESSION"}));
  ASSERT_EQ(interactions.rows.size(), options.interactions);
  std::map<std::string, std::pair<std::string, int64_t>> items;  // id -> category, creation time
  for (const auto& row : read_csv(files.items).rows) items[row[0]] = {row[1], std::stoll(row[5])};

  // The events themselves are those of the shop without impressions.
  std::string without_column = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE,DEVICE_TYPE\n";
  std::map<std::string, std::set<std::string>> touched;
  std::map<std::string, std::map<std::string, size_t>> categories;  // user -> category -> events
  for (const auto& row : interactions.rows) {
    for (size_t f = 0; f < 6; ++f) without_column += row[f] + (f < 5 ? "," : "\n");
    touched[row[0]].insert(row[1]);
    ++categories[row[0]][items.at(row[1]).first];
    const std::vector<std::string> shown = split_bars(row[6]);
    ASSERT_EQ(shown.size(), options.impressions) << row[6];
    ASSERT_EQ(std::set<std::string>(shown.begin(), shown.end()).size(), shown.size()) << row[6];
    for (const std::string& item : shown) {
      ASSERT_NE(item, row[1]) << "a row's item is not among its impressions";
      ASSERT_EQ(items.count(item), 1u) << item;
      ASSERT_LE(items.at(item).second, std::stoll(row[2])) << item << " shown before it exists";
    }
  }
  EXPECT_TRUE(without_column == plain);

  // Shown and ignored items are mostly outside the user's taste: the user's two main categories
  // hold about 90% of their events, and fewer of their ignored impressions than of the catalog.
  double ignored_in_taste = 0, ignored = 0;
  for (const auto& row : interactions.rows) {
    std::vector<std::pair<size_t, std::string>> ranked;
    for (const auto& [name, n] : categories[row[0]]) ranked.push_back({n, name});
    std::sort(ranked.rbegin(), ranked.rend());
    for (const std::string& item : split_bars(row[6])) {
      if (touched[row[0]].count(item) > 0) continue;
      ++ignored;
      const std::string& category = items.at(item).first;
      ignored_in_taste +=
          category == ranked[0].second || (ranked.size() > 1 && category == ranked[1].second);
    }
  }
  ASSERT_GT(ignored, options.interactions);
  EXPECT_LT(ignored_in_taste / ignored, 2.0 / options.clusters)
      << "the user's own categories should be under-represented among ignored impressions";

  // The lists import: every stored row keeps its options.impressions items.
  ImportOptions import;
  import.interactions = files.interactions;
  import.users = files.users;
  import.items = files.items;
  import.out = dir / "dataset";
  const ImportReport report = import_dataset(import);
  const Dataset dataset = Dataset::open(import.out);
  const Interactions& rows = dataset.interactions;
  ASSERT_EQ(rows.impression_offsets.size(), report.interactions + 1);
  EXPECT_EQ(rows.impression_items.size(), report.interactions * options.impressions);
  for (uint64_t r = 0; r < rows.size(); ++r) {
    ASSERT_EQ(rows.impression_offsets[r + 1] - rows.impression_offsets[r], options.impressions);
    for (uint64_t k = rows.impression_offsets[r]; k < rows.impression_offsets[r + 1]; ++k) {
      ASSERT_NE(rows.impression_items[k], rows.item[r]);
    }
  }
  fs::remove_all(plain_dir);
  fs::remove_all(dir);
}

TEST(Generator, DeviceEffectMakesTheDeviceTellTheItems) {
  GeneratorOptions options;
  options.users = 1500;
  options.items = 400;
  options.interactions = 60000;
  options.seed = 9;
  options.threads = 2;
  const fs::path dir = scratch_dir("device_effect");
  const Table plain = read_csv(generate_shop(options, dir).interactions);
  options.device_effect = 2.0;
  const Table shifted = read_csv(generate_shop(options, dir).interactions);
  ASSERT_EQ(shifted.rows.size(), plain.rows.size());
  // Without the effect the devices' item distributions differ by sampling noise only (about 0.1
  // here); with it, by half of their mass.
  const double plain_distance = device_item_distance(plain, "mobile", "desktop");
  const double shifted_distance = device_item_distance(shifted, "mobile", "desktop");
  EXPECT_LT(plain_distance, 0.2);
  EXPECT_GT(shifted_distance, plain_distance + 0.2);
  // Devices and times of events stay as they were: only the items move.
  size_t same_device = 0, same_item = 0;
  for (size_t r = 0; r < plain.rows.size(); ++r) {
    same_device += plain.rows[r][5] == shifted.rows[r][5];
    same_item += plain.rows[r][1] == shifted.rows[r][1];
  }
  EXPECT_GT(same_device, plain.rows.size() * 9 / 10);
  EXPECT_LT(same_item, plain.rows.size() * 9 / 10);
  fs::remove_all(dir);
}

TEST(Generator, SignalsDoNotDependOnThreadCount) {
  GeneratorOptions options;
  options.users = 700;
  options.items = 300;
  options.interactions = 50000;  // several blocks of users
  options.cold_item_share = 0.1;
  options.seed = 42;
  options.impressions = 7;
  options.device_effect = 1.5;
  std::string reference;
  for (const uint32_t threads : {1u, 3u}) {
    options.threads = threads;
    const fs::path dir = scratch_dir("signals_threads_" + std::to_string(threads));
    const std::string text = read_file(generate_shop(options, dir).interactions);
    if (threads == 1) {
      reference = text;
    } else {
      EXPECT_TRUE(text == reference) << "interactions differ with " << threads << " threads";
    }
    fs::remove_all(dir);
  }
}

TEST(Generator, TinyShopsWork) {
  GeneratorOptions options;
  options.users = 1;
  options.items = 1;
  options.interactions = 10;
  options.clusters = 3;
  const fs::path dir = scratch_dir("tiny");
  const CsvFiles files = generate_shop(options, dir);
  const Table interactions = read_csv(files.interactions);
  ASSERT_EQ(interactions.rows.size(), 10u);
  for (const auto& row : interactions.rows) {
    EXPECT_EQ(row[0], "u0");
    EXPECT_EQ(row[1], "i0");
  }

  options.interactions = 0;
  const CsvFiles empty = generate_shop(options, dir);
  EXPECT_EQ(read_file(empty.interactions),
            "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE,DEVICE_TYPE\n");
  fs::remove_all(dir);
}

TEST(Generator, RejectsImpossibleOptions) {
  const fs::path dir = scratch_dir("bad");
  GeneratorOptions options;
  options.users = 10;
  options.items = 10;
  options.interactions = 100;

  GeneratorOptions no_clusters = options;
  no_clusters.clusters = 0;
  EXPECT_THROW(generate_shop(no_clusters, dir), Error);

  GeneratorOptions all_cold = options;
  all_cold.cold_item_share = 1.0;
  EXPECT_THROW(generate_shop(all_cold, dir), Error);

  GeneratorOptions bad_share = options;
  bad_share.cold_item_share = -0.5;
  EXPECT_THROW(generate_shop(bad_share, dir), Error);

  GeneratorOptions no_users = options;
  no_users.users = 0;
  EXPECT_THROW(generate_shop(no_users, dir), Error);

  GeneratorOptions too_many_shown = options;
  too_many_shown.impressions = 10;  // needs 11 items on sale for the whole window
  EXPECT_THROW(generate_shop(too_many_shown, dir), Error);
  too_many_shown.items = 1000;
  too_many_shown.impressions = kMaxGeneratorImpressions + 1;
  EXPECT_THROW(generate_shop(too_many_shown, dir), Error);

  GeneratorOptions negative_effect = options;
  negative_effect.device_effect = -1.0;
  EXPECT_THROW(generate_shop(negative_effect, dir), Error);

  EXPECT_FALSE(fs::exists(dir / "interactions.csv"));
  fs::remove_all(dir);
}

TEST(GenerateCommand, WritesTheShopAndSaysSo) {
  const fs::path dir = scratch_dir("cli");
  const fs::path log = dir.string() + ".log";
  const std::string command = std::string(TASTEBUD_BINARY) +
                              " generate --users 50 --items 20 --interactions 500 --clusters 4 "
                              "--cold-items 0.1 --seed 3 --threads 2 --out " +
                              dir.string() + " > " + log.string() + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << read_file(log);
  const std::string output = read_file(log);
  EXPECT_NE(output.find("interactions.csv: 500 rows"), std::string::npos) << output;
  EXPECT_NE(output.find("users.csv: 50 rows"), std::string::npos) << output;
  EXPECT_NE(output.find("items.csv: 20 rows"), std::string::npos) << output;
  EXPECT_EQ(read_csv(dir / "interactions.csv").rows.size(), 500u);

  const std::string help = std::string(TASTEBUD_BINARY) + " generate --help > " + log.string();
  ASSERT_EQ(std::system(help.c_str()), 0);
  EXPECT_NE(read_file(log).find("--cold-items"), std::string::npos);
  EXPECT_NE(read_file(log).find("--impressions"), std::string::npos);
  EXPECT_NE(read_file(log).find("--device-effect"), std::string::npos);

  const std::string signals = std::string(TASTEBUD_BINARY) +
                              " generate --users 50 --items 40 --interactions 500 --impressions 5 "
                              "--device-effect 1 --seed 3 --out " +
                              dir.string() + " > " + log.string() + " 2>&1";
  ASSERT_EQ(std::system(signals.c_str()), 0) << read_file(log);
  EXPECT_NE(read_file(log).find("5 impressions per row, device effect 1"), std::string::npos)
      << read_file(log);
  EXPECT_EQ(read_csv(dir / "interactions.csv").header.back(), "IMPRESSION");

  const std::string wrong_layout = std::string(TASTEBUD_BINARY) +
                                   " generate --layout movielens-100k --impressions 5 --out " +
                                   dir.string() + "_ml > " + log.string() + " 2>&1";
  EXPECT_NE(std::system(wrong_layout.c_str()), 0);
  EXPECT_NE(read_file(log).find("--layout shop only"), std::string::npos) << read_file(log);

  const std::string missing_out =
      std::string(TASTEBUD_BINARY) + " generate --users 5 > " + log.string() + " 2>&1";
  EXPECT_NE(std::system(missing_out.c_str()), 0);
  EXPECT_NE(read_file(log).find("--out"), std::string::npos);
  fs::remove_all(dir);
  fs::remove(log);
}

}  // namespace
}  // namespace tastebud::datasets
