// `tastebud serve`: the service's runtime API over HTTP (cpp-httplib, Debian's libcpp-httplib-dev:
// a maintained server with a thread pool, payload caps and graceful stop, in one header plus a
// shared library, which is all a JSON API needs; Boost.Beast would bring coroutines and our own
// connection code for no gain here). Issue 23.
//
//   POST /recommendations        GetRecommendations: userId and/or itemId, numResults, filter (an
//                                expression) or filterArn (a name from --filters), filterValues,
//                                context, promotions, metadataColumns ->
//                                {"itemList": [{"itemId", "score", "promotionName"?, "metadata"?,
//                                "reason"?}], "recommendationId"}
//   POST /personalized-ranking   GetPersonalizedRanking: userId, inputList (<= 500), context,
//                                filter, filterValues -> {"personalizedRanking": [...], "recommendationId"};
//                                items the model does not know come last without a score
//   POST /events                 PutEvents: sessionId, userId?, eventList (<= 10) of {eventType,
//                                sentAt, itemId?, eventValue?, eventId?, properties?, impression?,
//                                recommendationId?}; answered once the rows are on disk
//   GET  /health, GET /metrics   liveness with the model's version; Prometheus text
// With --recommenders DIR, every use case `tastebud recommenders` trained there answers, each
// GetRecommendations and GetPersonalizedRanking request naming its own by "recommenderArn".
//
// The items of each user's and session's accepted events (the newest 50 per key, for the newest
// max_sessions keys) go with that user's or session's next requests as the line's "recentItems":
// they count as seen, and a session the model never saw is answered from them (host/ranker.h).
//
// Each answer is batch-infer's for the same line (the same Recommender), so a filter, a job's
// rules and the fallbacks mean one thing. A bad request is a 400 whose message names the field;
// with an API key, a request without it is a 401 and writes nothing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <memory>
#include <string>

namespace tastebud::host {

struct ServeOptions {
  std::filesystem::path model;   // one model directory, or
  std::filesystem::path models;  // a retrain directory: its `current`, reloaded when retrain moves it
  // or a directory `tastebud recommenders` wrote: every use case it trained, each request naming
  // its own by "recommenderArn" (the service's field: the use case, or an ARN ending in /NAME)
  std::filesystem::path recommenders;
  std::filesystem::path events;  // where PutEvents writes (empty: DATASET.events beside the model's dataset)
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port (port() says which)
  uint32_t threads = 0;          // request threads, one per open connection; 0: max(64, 8 x cores)
  std::string api_key;           // empty: no key asked for
  std::filesystem::path filters;  // {"NAME": "EXPRESSION"}: filters requests name by filterArn
  size_t max_body = 1 << 20;     // request bodies above it get 413
  double reload_poll_seconds = 1.0;  // how often `current` is looked at (with `models`)
  size_t max_sessions = 100000;  // users and sessions whose latest events are kept for their next answer (LRU)
  bool normalize_scores = false;  // user answers' scores as shares of the catalog (InferenceOptions)
};

class Server {
 public:
  // Loads the model and binds the address; throws Error naming what failed.
  Server(ServeOptions options, std::ostream& log);
  ~Server();
  int port() const;
  // Answers until stop(); in-flight requests finish first.
  void run();
  void stop();
  // Loads the model again and swaps it in between requests (SIGHUP, or `current` moved).
  void reload();
  std::string model_version() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The command: runs a Server until SIGTERM or SIGINT (drains, flushes); SIGHUP reloads.
int serve(const ServeOptions& options, std::ostream& log);

}  // namespace tastebud::host
