// `tastebud serve` (host/serve.h): the service's runtime API answers as batch-infer does for the
// same line, bad requests get a 400 naming the field, a missing key a 401 that writes nothing,
// acknowledged events are on disk (kill -9 included) and readable by an incremental import, and
// a model promoted under --models is swapped in while requests keep succeeding.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "host/event_log.h"
#include "host/inference.h"
#include "host/job_config.h"
#include "host/retrain.h"
#include "host/serve.h"
#include "host/training.h"
#include "host/use_cases.h"
#include "run_cli.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/import.h"
#include "tastebud/datasets/sources.h"
#include "small_shop.h"
#include "tastebud/read_file.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / fmt::format("tastebud_test_serve_{}", ::getpid());
    fs::remove_all(root_);
    testing_shop::import_small_shop(root_, 150, 5000, 5);
    train("gmf", root_ / "gmf", 8);  // long enough for its items to sort into the shop's clusters
    train("popularity", root_ / "popularity");
    train("sims", root_ / "sims");
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static void train(const std::string& model, const fs::path& out, uint32_t epochs = 1) {
    TrainJob job;
    job.data = root_ / "dataset";
    job.out = out;
    job.model = model;
    job.epochs = epochs;
    job.lr = 0.01f;
    job.eval = "none";  // the last epoch (this shop is too small for the validation split to choose)
    job.factors = 8;
    job.metadata = "none";
    job.threads = 1;
    job.progress = false;
    std::ostringstream log;
    run_training(job, log);
  }

  // A server on a free port, answering on its own thread until the test ends.
  struct Running {
    std::ostringstream log;
    std::unique_ptr<Server> server;
    std::thread thread;
    std::unique_ptr<httplib::Client> client;
    explicit Running(ServeOptions o) {
      o.port = 0;
      server = std::make_unique<Server>(std::move(o), log);
      thread = std::thread([this] { server->run(); });
      client = std::make_unique<httplib::Client>("127.0.0.1", server->port());
      for (int tries = 0; tries < 200 && !client->Get("/health"); ++tries) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ~Running() {
      server->stop();
      thread.join();
    }
    std::pair<int, json> post(const std::string& path, const std::string& body, const httplib::Headers& headers = {}) {
      const httplib::Result r = client->Post(path, headers, body, "application/json");
      if (!r) return {-1, json()};
      json j;
      try {
        j = json::parse(r->body);
      } catch (...) {
      }
      return {r->status, j};
    }
  };

  static ServeOptions options(const fs::path& model) {
    ServeOptions o;
    o.model = model;
    o.events = root_ / fmt::format("events-{}", ++events_dirs_);
    o.threads = 4;
    return o;
  }

  // A retrain of a copy of the dataset (ROOT/NAME-dataset, ROOT/NAME-models) that takes `events`.
  static RetrainJob retrain_job(const std::string& name, const fs::path& events) {
    RetrainJob job;
    job.data = root_ / (name + "-dataset");
    fs::copy(root_ / "dataset", job.data, fs::copy_options::recursive);
    job.models = root_ / (name + "-models");
    job.events = events;
    job.train.model = "gmf";
    job.train.epochs = 1;
    job.train.factors = 8;
    job.train.metadata = "none";
    job.train.threads = 1;
    job.train.progress = false;
    return job;
  }

  static fs::path root_;
  static int events_dirs_;
};
fs::path Serve::root_;
int Serve::events_dirs_ = 0;

// What batch-infer's Recommender answers for the same line (with --filter).
json batch_output_filtered(const fs::path& model, const std::string& line, const std::string& filter) {
  ModelData m = load_model_dir(model);
  InferenceContext context = load_context(m, m.data);
  InferenceOptions options;
  options.filter = filter;
  const Recommender r(std::move(m), std::move(context), options);
  return json::parse(r.answer(line)).at("output");
}
json batch_output(const fs::path& model, const std::string& line) { return batch_output_filtered(model, line, ""); }

TEST_F(Serve, RecommendationsAreBatchInfersAnswersInTheServicesShape) {
  Running s(options(root_ / "gmf"));
  for (const std::string& line : {std::string(R"({"userId": "u3", "numResults": 5})"), std::string(R"({"itemId": "i2", "numResults": 4})"),
                                  std::string(R"({"userId": "u3", "itemId": "i2", "numResults": 4})"),
                                  std::string(R"({"userId": "stranger", "numResults": 3})")}) {
    const auto [status, body] = s.post("/recommendations", line);
    ASSERT_EQ(status, 200) << line << " " << body.dump();
    const json batch = batch_output(root_ / "gmf", line);
    ASSERT_EQ(body.at("itemList").size(), batch.at("recommendedItems").size()) << line;
    for (size_t k = 0; k < batch.at("recommendedItems").size(); ++k) {
      EXPECT_EQ(body["itemList"][k]["itemId"], batch["recommendedItems"][k]) << line;
      EXPECT_EQ(body["itemList"][k]["score"], batch["scores"][k]) << line;
    }
    EXPECT_TRUE(body.at("recommendationId").get<std::string>().starts_with("RID-"));
    if (batch.contains("reason")) {
      EXPECT_EQ(body["itemList"][0]["reason"][0], batch["reason"]) << line;
    }
  }
  // A filter expression, as batch-infer's --filter.
  const auto [status, body] = s.post("/recommendations", R"({"userId": "u3", "numResults": 50, "filter": "EXCLUDE ItemID WHERE Items.PRICE > 20"})");
  ASSERT_EQ(status, 200) << body.dump();
  EXPECT_FALSE(body.at("itemList").empty());
  const json batch = batch_output_filtered(root_ / "gmf", R"({"userId": "u3", "numResults": 50})", "EXCLUDE ItemID WHERE Items.PRICE > 20");
  ASSERT_EQ(body.at("itemList").size(), batch.at("recommendedItems").size());
  for (size_t k = 0; k < batch.at("recommendedItems").size(); ++k) EXPECT_EQ(body["itemList"][k]["itemId"], batch["recommendedItems"][k]);
}

// --recommenders: every use case `recommenders` trained answers, each request naming its own by
// recommenderArn, with the answer batch-infer gives from that use case's model directory.
TEST_F(Serve, RecommendersAnswerTheUseCaseEachRequestNames) {
  RecommendersJob job;
  job.data = root_ / "dataset";
  job.out = root_ / "recommenders";
  job.domain = "ecommerce";
  job.candidates = {"popularity"};
  job.threads = 1;
  job.progress = false;
  std::ostringstream log;
  const json listing = train_recommenders(job, log);
  ServeOptions o = options({});
  o.model.clear();
  o.recommenders = job.out;
  Running s(o);
  size_t answered = 0;
  for (const json& u : listing) {
    if (u["status"] != "trained") continue;
    const std::string name = u["use_case"];
    const QueryNeeds needs = find_use_case(name).query;
    const std::string line = needs == QueryNeeds::kUser   ? R"({"userId": "u3", "numResults": 5})"
                             : needs == QueryNeeds::kItem ? R"({"itemId": "i2", "numResults": 5})"
                                                          : R"({"userId": "u3", "itemId": "i2", "numResults": 5})";
    json request = json::parse(line);
    request["recommenderArn"] = "arn:aws:personalize:us-east-1:111:recommender/" + name;
    const auto [status, body] = s.post("/recommendations", request.dump());
    ASSERT_EQ(status, 200) << name << " " << body.dump();
    const json batch = batch_output(job.out / name, line);
    ASSERT_EQ(body.at("itemList").size(), batch.at("recommendedItems").size()) << name;
    for (size_t k = 0; k < batch.at("recommendedItems").size(); ++k)
      EXPECT_EQ(body["itemList"][k]["itemId"], batch["recommendedItems"][k]) << name;
    ++answered;
  }
  EXPECT_GE(answered, 2u) << log.str();
  auto [status, body] = s.post("/recommendations", R"({"userId": "u3"})");
  EXPECT_EQ(status, 400);
  EXPECT_NE(body.dump().find("recommenderArn"), std::string::npos) << body.dump();
  std::tie(status, body) = s.post("/recommendations", R"({"userId": "u3", "recommenderArn": "top-picks-for-you"})");
  EXPECT_EQ(status, 400);
  // A query the use case does not take, as the service refuses it.
  std::tie(status, body) = s.post("/recommendations", R"({"itemId": "i2", "recommenderArn": "most-viewed"})");
  EXPECT_EQ(status, 400) << body.dump();
  EXPECT_NE(body.dump().find("userId"), std::string::npos) << body.dump();
}

TEST_F(Serve, ASecondServerOnTheSamePortIsRefused) {
  Running s(options(root_ / "gmf"));
  ServeOptions again = options(root_ / "gmf");
  again.port = s.server->port();
  std::ostringstream log;
  EXPECT_THROW(Server(again, log), Error);
}

TEST_F(Serve, PersonalizedRankingPutsUnknownItemsLastWithoutAScore) {
  Running s(options(root_ / "gmf"));
  const auto [status, body] = s.post("/personalized-ranking", R"({"userId": "u1", "inputList": ["i1", "nope", "i5", "i9"]})");
  ASSERT_EQ(status, 200) << body.dump();
  const json& ranking = body.at("personalizedRanking");
  ASSERT_EQ(ranking.size(), 4u);
  EXPECT_EQ(ranking[3].at("itemId"), "nope");
  EXPECT_FALSE(ranking[3].contains("score"));
  EXPECT_GE(ranking[0].at("score").get<double>(), ranking[2].at("score").get<double>());
  const json batch = batch_output(root_ / "gmf", R"({"userId": "u1", "itemList": ["i1", "nope", "i5", "i9"]})");
  for (size_t k = 0; k < 4; ++k) EXPECT_EQ(ranking[k].at("itemId"), batch["recommendedItems"][k]);
}

TEST_F(Serve, BadRequestsGetA400NamingTheField) {
  ServeOptions o = options(root_ / "gmf");
  o.max_body = 64 * 1024;
  Running s(o);
  json big = json::array();
  for (int k = 0; k < 501; ++k) big.push_back(fmt::format("i{}", k));
  const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> bad{
      {"/recommendations", {"{\"userId\": ", "not valid JSON"}},
      {"/recommendations", {R"(["u1"])", "JSON object"}},
      {"/recommendations", {R"({"userId": "u1", "numResult": 3})", "numResult: unknown field"}},
      {"/recommendations", {R"({"userId": 7})", "userId: must be a string"}},
      {"/recommendations", {R"({"userId": "u1", "numResults": 0})", "numResults"}},
      {"/recommendations", {R"({"userId": "u1", "filter": "EXCLUDE ItemID WHERE"})", "filter"}},
      {"/recommendations", {std::string(100, '[') + std::string(100, ']'), "nested deeper"}},
      {"/personalized-ranking", {json{{"userId", "u1"}, {"inputList", big}}.dump(), "inputList: 501 items"}},
      {"/personalized-ranking", {R"({"inputList": ["i1"]})", "userId: required"}},
      {"/events", {R"({"userId": "u1", "eventList": [{"eventType": "view", "itemId": "i1", "sentAt": 1}]})", "sessionId: required"}},
      {"/events", {R"({"sessionId": "s", "eventList": [{"eventType": "view", "itemId": "i1"}]})", "eventList[0].sentAt"}},
      {"/events", {R"({"sessionId": "s", "eventList": [{"eventType": "view", "itemId": "i1", "sentAt": 1, "colour": 1}]})",
                   "eventList[0].colour: unknown field"}},
      {"/events", {R"({"sessionId": "s", "eventList": []})", "eventList"}},
  };
  for (const auto& [path, request] : bad) {
    const auto [status, body] = s.post(path, request.first);
    EXPECT_EQ(status, 400) << path << " " << request.first.substr(0, 80);
    EXPECT_NE(body.value("message", std::string()).find(request.second), std::string::npos)
        << path << " " << request.first.substr(0, 80) << " -> " << body.dump();
  }
  // A body over the cap is refused before it is parsed.
  EXPECT_EQ(s.post("/recommendations", std::string(100 * 1024, ' ')).first, 413);
  // Nothing bad was written, and the server still answers.
  EXPECT_EQ(s.post("/recommendations", R"({"userId": "u1"})").first, 200);
}

TEST_F(Serve, WithAKeyARequestWithoutItIsRefusedAndWritesNothing) {
  ServeOptions o = options(root_ / "gmf");
  o.api_key = "s3cret";
  const fs::path events = o.events;
  Running s(o);
  const std::string event = R"({"sessionId": "s", "userId": "u1", "eventList": [{"eventType": "view", "itemId": "i1", "sentAt": 1700000000}]})";
  EXPECT_EQ(s.post("/events", event).first, 401);
  EXPECT_EQ(s.post("/events", event, {{"X-Api-Key", "wrong"}}).first, 401);
  EXPECT_EQ(s.post("/recommendations", R"({"userId": "u1"})").first, 401);
  EXPECT_EQ(s.client->Get("/metrics")->status, 401);
  std::string log_text;
  for (const fs::directory_entry& e : fs::directory_iterator(events))
    if (e.is_regular_file()) log_text += read_file(e.path());
  EXPECT_EQ(log_text, "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n");
  EXPECT_EQ(s.post("/events", event, {{"X-Api-Key", "s3cret"}}).first, 200);
  EXPECT_EQ(s.post("/recommendations", R"({"userId": "u1"})", {{"Authorization", "Bearer s3cret"}}).first, 200);
}

TEST_F(Serve, AcknowledgedEventsAreOnDiskAndAnIncrementalImportReadsThem) {
  ServeOptions o = options(root_ / "gmf");
  const fs::path events = o.events;
  {
    Running s(o);
    std::vector<std::thread> clients;
    std::atomic<int> ok{0};
    for (int t = 0; t < 4; ++t) {
      clients.emplace_back([&, t] {
        httplib::Client c("127.0.0.1", s.server->port());
        for (int k = 0; k < 10; ++k) {
          const json request{{"sessionId", fmt::format("s{}", t)},
                             {"userId", fmt::format("new-user,{}", t)},  // a comma: quoted in the CSV
                             {"eventList", {{{"eventType", "purchase"}, {"itemId", fmt::format("i{}", k)}, {"sentAt", 1800000000 + k}},
                                            {{"eventType", "view"}, {"itemId", "i1"}, {"sentAt", 1800000000 + k}, {"eventValue", 2.5}}}}};
          const httplib::Result r = c.Post("/events", request.dump(), "application/json");
          if (r && r->status == 200) ++ok;
        }
      });
    }
    for (std::thread& c : clients) c.join();
    EXPECT_EQ(ok, 40);
    const std::string metrics = s.client->Get("/metrics")->body;
    EXPECT_NE(metrics.find("tastebud_events_written_total 80"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("tastebud_request_seconds_bucket{path=\"/events\",le=\"+Inf\"} 40"), std::string::npos) << metrics;
  }
  // A copy of the dataset gains the 4 new users' 20 events each through an incremental import.
  const fs::path copy = root_ / "dataset-with-events";
  fs::copy(root_ / "dataset", copy, fs::copy_options::recursive);
  const uint64_t before = datasets::Dataset::open(copy).interactions.size();
  datasets::ImportOptions im;
  im.interactions = events;
  im.out = copy;
  im.mode = datasets::ImportMode::Incremental;
  datasets::import_dataset(im);
  const datasets::Dataset after = datasets::Dataset::open(copy);
  EXPECT_EQ(after.interactions.size(), before + 4 * 20);
  EXPECT_EQ(after.num_users(), datasets::Dataset::open(root_ / "dataset").num_users() + 4);
}

// PutEvents changes the next answer: what a user just took is not recommended back, and a session
// the model never saw is answered from its events (as batch-infer answers a line with those
// recentItems), not with the popular list.
TEST_F(Serve, EventsChangeTheNextAnswer) {
  Running s(options(root_ / "sims"));
  const auto [status0, before] = s.post("/recommendations", R"({"userId": "u4", "numResults": 5})");
  ASSERT_EQ(status0, 200);
  const std::string bought = before["itemList"][0]["itemId"];
  const json event{{"sessionId", "s-u4"}, {"userId", "u4"},
                   {"eventList", {{{"eventType", "purchase"}, {"itemId", bought}, {"sentAt", 1900000000}}}}};
  ASSERT_EQ(s.post("/events", event.dump()).first, 200);
  const auto [status1, after] = s.post("/recommendations", R"({"userId": "u4", "numResults": 5})");
  ASSERT_EQ(status1, 200);
  for (const json& item : after.at("itemList")) EXPECT_NE(item.at("itemId"), bought) << after.dump();

  const auto [status2, popular] = s.post("/recommendations", R"({"userId": "anonymous-7", "numResults": 5})");
  ASSERT_EQ(status2, 200);
  EXPECT_EQ(popular["itemList"][0]["reason"][0], "unknown user: the most popular items");
  const json views{{"sessionId", "anonymous-7"},
                   {"eventList", {{{"eventType", "view"}, {"itemId", "i3"}, {"sentAt", 1900000000}},
                                  {{"eventType", "view"}, {"itemId", "i8"}, {"sentAt", 1900000005}}}}};
  ASSERT_EQ(s.post("/events", views.dump()).first, 200);
  const auto [status3, personal] = s.post("/recommendations", R"({"userId": "anonymous-7", "numResults": 5})");
  ASSERT_EQ(status3, 200);
  EXPECT_EQ(personal["itemList"][0]["reason"][0], "user unknown to the model: scored from the recent items");
  const json batch = batch_output(root_ / "sims", R"({"userId": "anonymous-7", "recentItems": ["i3", "i8"], "numResults": 5})");
  ASSERT_EQ(personal.at("itemList").size(), batch.at("recommendedItems").size());
  for (size_t k = 0; k < batch.at("recommendedItems").size(); ++k)
    EXPECT_EQ(personal["itemList"][k]["itemId"], batch["recommendedItems"][k]);
  std::vector<json> a, b;
  for (const json& item : personal.at("itemList")) a.push_back(item.at("itemId"));
  for (const json& item : popular.at("itemList")) b.push_back(item.at("itemId"));
  EXPECT_NE(a, b);
}

// Each item's CATEGORY_L1 in the generated shop's items.csv (the second column).
std::map<std::string, std::string> categories(const fs::path& items_csv) {
  std::map<std::string, std::string> out;
  std::ifstream in(items_csv);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    const size_t a = line.find(','), b = line.find(',', a + 1);
    out[line.substr(0, a)] = line.substr(a + 1, b - a - 1);
  }
  return out;
}

// A neural model folds a known user's new events into the user's rows: events on one category
// move the user's next answers toward it.
TEST_F(Serve, EventsOnOneCategoryMoveANeuralModelsNextAnswersTowardIt) {
  Running s(options(root_ / "gmf"));
  const std::map<std::string, std::string> category = categories(root_ / "shop" / "items.csv");
  auto share_of = [&](const json& answer, const std::string& c) {
    size_t n = 0;
    for (const json& item : answer.at("itemList")) n += category.at(item.at("itemId").get<std::string>()) == c;
    return n;
  };
  const auto [status0, before] = s.post("/recommendations", R"({"userId": "u9", "numResults": 20})");
  ASSERT_EQ(status0, 200);
  // The category least present in u9's answer, and five of its items.
  std::map<std::string, size_t> counts;
  for (const auto& [item, c] : category) counts[c] += 0;
  for (const json& item : before.at("itemList")) ++counts[category.at(item.at("itemId").get<std::string>())];
  const std::string target = std::min_element(counts.begin(), counts.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
  json events = json::array();
  for (const auto& [item, c] : category) {
    if (c == target && events.size() < 5) events.push_back({{"eventType", "purchase"}, {"itemId", item}, {"sentAt", 1900000000 + events.size()}});
  }
  ASSERT_EQ(s.post("/events", json{{"sessionId", "s9"}, {"userId", "u9"}, {"eventList", events}}.dump()).first, 200);
  const auto [status1, after] = s.post("/recommendations", R"({"userId": "u9", "numResults": 20})");
  ASSERT_EQ(status1, 200);
  EXPECT_GT(share_of(after, target), share_of(before, target) + 3) << target << ": " << before.dump() << " -> " << after.dump();
}

// retrain --events takes what a server logged exactly once: every complete line past what the
// last retrain took, marked taken only after its import; a file taken whole whose server is gone
// is rotated out.
TEST_F(Serve, RetrainTakesTheLogsEventsOnceAndRotatesFinishedFiles) {
  const fs::path events = root_ / "retrain-events";
  fs::create_directories(events);
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  PutEventsLog live(events);  // a running server's log (this process writes it)
  live.append(event_csv_line({"fresh-2", "i4", "view", 1900000003, std::nullopt}), 1);
  const fs::path finished = events / fmt::format("events-20260101T000000Z-{}.csv", dead);
  std::ofstream(finished) << "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n"
                          << "fresh-1,i1,1900000001,purchase,\nfresh-1,i2,1900000002,purchase,\n"
                          << "fresh-1,i3,19000";  // a half line a killed server left: not taken

  const RetrainJob job = retrain_job("retrain", events);
  std::ostringstream log;
  const uint64_t before = datasets::Dataset::open(job.data).interactions.size();
  run_retrain(job, log);
  EXPECT_EQ(datasets::Dataset::open(job.data).interactions.size(), before + 3) << log.str();
  EXPECT_TRUE(fs::exists(finished));  // its half line was not taken, so it stays
  EXPECT_FALSE(fs::exists(events / fmt::format(".backlog-{}.csv", ::getpid())));
  // The next retrain takes only what came since.
  live.append(event_csv_line({"fresh-2", "i5", "view", 1900000004, std::nullopt}), 1);
  const EventBacklog next = collect_event_backlog(events, root_ / "backlog.csv");
  EXPECT_EQ(next.rows, 1u);
  EXPECT_EQ(read_file(root_ / "backlog.csv"), "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\nfresh-2,i5,1900000004,view,\n");
  // Cut back to its last whole line (as a server start does), the dead server's file is taken
  // whole, and rotated out.
  repair_event_files(events);
  const EventBacklog last = collect_event_backlog(events, root_ / "backlog.csv");
  commit_event_backlog(events, last);
  EXPECT_FALSE(fs::exists(finished));
  EXPECT_TRUE(fs::exists(live.path()));  // this process still writes it
  EXPECT_EQ(collect_event_backlog(events, root_ / "backlog.csv").rows, 0u);
}

// PutItems and PutUsers write rows in the dataset's own columns (the SDK's camelCase names or the
// schema's), a property the schema lacks is a 400, and the next retrain --events upserts them.
TEST_F(Serve, PutItemsUpsertsThroughTheNextRetrain) {
  ServeOptions o = options(root_ / "gmf");
  const fs::path events = o.events;
  {
    Running s(o);
    const json items{{"items",
                      {{{"itemId", "brand-new"}, {"properties", R"({"categoryL1": "books", "GENRES": ["comics", "mystery"], "price": 9.5})"}},
                       {{"itemId", "i1"}, {"properties", {{"PRICE", 1.25}}}}}}};
    const auto [status, body] = s.post("/items", items.dump());
    ASSERT_EQ(status, 200) << body.dump();
    const auto [bad, message] = s.post("/items", R"({"items": [{"itemId": "x", "properties": {"COLOUR": "red"}}]})");
    EXPECT_EQ(bad, 400);
    EXPECT_NE(message.value("message", "").find("items[0].properties.COLOUR: not a field"), std::string::npos) << message.dump();
    // This dataset has no Users: there is nothing to write users into.
    const auto [no_users, why] = s.post("/users", R"({"users": [{"userId": "u1", "properties": "{}"}]})");
    EXPECT_EQ(no_users, 400);
    EXPECT_NE(why.value("message", "").find("no users schema"), std::string::npos) << why.dump();
  }
  std::string written;
  for (const fs::directory_entry& e : fs::directory_iterator(events / "items"))
    if (e.path().filename().string().starts_with("items-")) written += read_file(e.path());
  EXPECT_NE(written.find("brand-new,books,comics|mystery,9.5,,\n"), std::string::npos) << written;
  const RetrainJob job = retrain_job("items", events);
  std::ostringstream log;
  run_retrain(job, log);
  const datasets::Dataset d = datasets::Dataset::open(job.data);
  bool found = false;
  for (size_t i = 0; i < d.item_ids.size(); ++i) found |= d.item_ids[i] == "brand-new";
  EXPECT_TRUE(found) << log.str();
}

// Named filters (--filters, asked for by filterArn), promotions and metadataColumns per request:
// the answer is batch-infer's for the same line under the same filter and job configuration.
TEST_F(Serve, NamedFiltersPromotionsAndMetadataColumnsAnswerAsBatchInferDoes) {
  const fs::path filters = root_ / "filters.json";
  std::ofstream(filters) << R"({"cheap": "EXCLUDE ItemID WHERE Items.PRICE > 20"})";
  ServeOptions o = options(root_ / "gmf");
  o.filters = filters;
  Running s(o);
  const auto [status, named] = s.post("/recommendations", R"({"userId": "u3", "numResults": 10,
      "filterArn": "arn:aws:personalize:us-east-1:123:filter/cheap"})");
  ASSERT_EQ(status, 200) << named.dump();
  const json batch = batch_output_filtered(root_ / "gmf", R"({"userId": "u3", "numResults": 10})", "EXCLUDE ItemID WHERE Items.PRICE > 20");
  for (size_t k = 0; k < batch.at("recommendedItems").size(); ++k) EXPECT_EQ(named["itemList"][k]["itemId"], batch["recommendedItems"][k]);
  const auto [unknown, message] = s.post("/recommendations", R"({"userId": "u3", "filterArn": "nope"})");
  EXPECT_EQ(unknown, 400);
  EXPECT_NE(message.value("message", "").find("no filter named 'nope' (the server's --filters: cheap)"), std::string::npos);

  const std::string shaping = R"j({"promotions": [{"name": "books", "percentPromotedItems": 20,
      "filterExpression": "INCLUDE ItemID WHERE Items.CATEGORY_L1 IN (\"books\")"}], "metadataColumns": {"ITEMS": ["PRICE"]}})j";
  json request = json::parse(shaping);
  request["userId"] = "u3";
  request["numResults"] = 10;
  const auto [status2, shaped] = s.post("/recommendations", request.dump());
  ASSERT_EQ(status2, 200) << shaped.dump();
  ModelData m = load_model_dir(root_ / "gmf");
  InferenceContext context = load_context(m, m.data);
  InferenceOptions job;
  json config = json::parse(shaping);
  config["itemExplorationConfig"] = {{"explorationWeight", 0}};
  job.job = parse_job_config(config.dump(), "test");
  const json expected = json::parse(Recommender(std::move(m), std::move(context), job).answer(R"({"userId": "u3", "numResults": 10})")).at("output");
  size_t promoted = 0;
  for (size_t k = 0; k < expected.at("recommendedItems").size(); ++k) {
    EXPECT_EQ(shaped["itemList"][k]["itemId"], expected["recommendedItems"][k]);
    EXPECT_TRUE(shaped["itemList"][k]["metadata"].contains("PRICE")) << shaped.dump();
    promoted += shaped["itemList"][k].value("promotionName", "") == "books";
  }
  EXPECT_EQ(promoted, 2u);  // 20% of 10
}

// A free TCP port on 127.0.0.1 (bound once and closed).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    port = ntohs(address.sin_port);
  ::close(fd);
  return port;
}

// kill -9 while clients are sending: every event the server acknowledged is in the log, and once
// the log is opened again (as the next server start does) no half line is left.
TEST_F(Serve, KillNineLosesNoAcknowledgedEvent) {
  const fs::path events = root_ / "killed-events";
  const int port = free_port();
  const pid_t child = testing_cli::spawn_cli({"serve", "--model", (root_ / "gmf").string(), "--events", events.string(), "--listen",
                                              fmt::format("127.0.0.1:{}", port), "--threads", "4"});
  httplib::Client probe("127.0.0.1", port);
  bool up = false;
  for (int tries = 0; tries < 500 && !up; ++tries) {
    up = static_cast<bool>(probe.Get("/health"));
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(up) << "the server did not start";
  std::mutex mutex;
  std::vector<int64_t> acknowledged;
  std::atomic<bool> go{true};
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&, t] {
      httplib::Client c("127.0.0.1", port);
      for (int64_t k = 0; go; ++k) {
        const int64_t stamp = 1000000000 + t * 1000000 + k;
        const json request{{"sessionId", "s"}, {"userId", "u1"},
                           {"eventList", {{{"eventType", "view"}, {"itemId", "i1"}, {"sentAt", stamp}}}}};
        const httplib::Result r = c.Post("/events", request.dump(), "application/json");
        if (!r) return;  // the server is gone
        if (r->status == 200) {
          std::lock_guard lock(mutex);
          acknowledged.push_back(stamp);
        }
      }
    });
  }
  for (int tries = 0; tries < 500; ++tries) {
    {
      std::lock_guard lock(mutex);
      if (acknowledged.size() >= 60) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  go = false;
  for (std::thread& c : clients) c.join();
  ASSERT_GE(acknowledged.size(), 60u);
  repair_event_files(events);
  std::set<int64_t> logged;
  for (const fs::directory_entry& e : fs::directory_iterator(events)) {
    if (!e.path().filename().string().starts_with("events-")) continue;  // items/: PutItems' rows
    const std::string text = read_file(e.path());
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    std::istringstream lines(text);
    std::string line;
    std::getline(lines, line);
    EXPECT_EQ(line, "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE");
    while (std::getline(lines, line)) {
      ASSERT_TRUE(line.starts_with("u1,i1,") && line.ends_with(",view,")) << line;
      logged.insert(std::stoll(line.substr(6)));
    }
  }
  for (int64_t stamp : acknowledged) EXPECT_TRUE(logged.contains(stamp)) << stamp;
}

// With --models, a promoted `current` is swapped in between requests: none fails meanwhile.
TEST_F(Serve, APromotedModelIsSwappedInWhileRequestsKeepSucceeding) {
  const fs::path models = root_ / "models";
  fs::create_directories(models / "versions");
  fs::copy(root_ / "gmf", models / "versions" / "v1", fs::copy_options::recursive);
  fs::copy(root_ / "popularity", models / "versions" / "v2", fs::copy_options::recursive);
  fs::create_directory_symlink("versions/v1", models / "current");
  ServeOptions o = options({});
  o.models = models;
  o.reload_poll_seconds = 0.02;
  Running s(o);
  EXPECT_EQ(s.server->model_version(), "v1");
  std::atomic<bool> go{true};
  std::atomic<int> answered{0}, failed{0};
  std::thread load([&] {
    httplib::Client c("127.0.0.1", s.server->port());
    while (go) {
      const httplib::Result r = c.Post("/recommendations", R"({"userId": "u2", "numResults": 5})", "application/json");
      (r && r->status == 200 ? answered : failed)++;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  // As retrain promotes: a new symlink renamed over `current`.
  fs::create_directory_symlink("versions/v2", models / ".current.new");
  fs::rename(models / ".current.new", models / "current");
  for (int tries = 0; tries < 300 && s.server->model_version() != "v2"; ++tries)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  go = false;
  load.join();
  EXPECT_EQ(s.server->model_version(), "v2");
  EXPECT_EQ(failed, 0);
  EXPECT_GT(answered, 10);
  const auto [status, body] = s.post("/recommendations", R"({"userId": "u2", "numResults": 5})");
  ASSERT_EQ(status, 200);
  const json batch = batch_output(models / "versions" / "v2", R"({"userId": "u2", "numResults": 5})");
  for (size_t k = 0; k < 5; ++k) EXPECT_EQ(body["itemList"][k]["itemId"], batch["recommendedItems"][k]);
  EXPECT_NE(s.client->Get("/metrics")->body.find("tastebud_model_info{version=\"v2\"} 1"), std::string::npos);
}

}  // namespace
}  // namespace tastebud::host
