// Recipes besides NeuMF, trained by the same `tastebud train --model ...` (issue 5):
//   popularity  distinct users per item (the service's Popularity-Count, "Best sellers", "Most
//               viewed"), or summed event weights (popularity_count `events`), optionally decayed
//               by recency and limited to a recent window: the baseline;
//   sims        item-to-item co-occurrence within baskets (a user's history, an order, or a
//               session of a user), with a popularity discount and a minimum co-interaction count
//               ("customers who viewed X also viewed"; "frequently bought together" with
//               purchases by order), optionally blended with the cosine of the items' TF-IDF
//               metadata so items without interactions get neighbours ("more like X");
//   trending    items whose interaction rate grew most in the latest window against the one before;
//   transitions for each item, the items that followed it in users' histories (within a window of
//               following events, decayed by distance), answered from the user's latest items
//               (weighted by recency): "what comes next" (issue 21).
//
// Events count by the job's --event rules (TYPE[:THRESHOLD[:WEIGHT]], as for NeuMF), or by
// RecipeOptions::event_weights when the caller builds the log by hand.
// A recipe's model directory holds config.json ("model", "data", "recipe": the options),
// user_ids.json, item_ids.json, seen.bin (every user's interacted items, all events) and
// recipe.bin (below; transitions keep each user's latest items there too). The computations take
// plain event arrays so tests can check them by hand.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "host/model_dir.h"
#include "host/train_plan.h"
#include "tastebud/datasets/dataset.h"

namespace tastebud::host {

// The service's Trending-Now windows, --trend-window 30m | 1h | 3h | 1d, in days.
double parse_trend_window(std::string_view window);
TrainResult train_recipe(const TrainPlan& plan, std::ostream& log);

// The events a recipe learns from (dataset order does not matter).
struct EventLog {
  uint32_t num_users = 0;
  uint32_t num_items = 0;
  std::span<const uint32_t> user;
  std::span<const uint32_t> item;
  std::span<const int64_t> timestamp;   // Unix seconds
  std::span<const uint32_t> event_type;  // index into event_types
  std::vector<std::string> event_types;
  // Per event, when given: its weight (0 = not used), e.g. from the job's --event rules; it then
  // replaces RecipeOptions::event_weights.
  std::vector<float> weight;
  // Per event, when given: the basket it belongs to for sims' co-occurrence (an order, a session;
  // kNoBasket: none, the event forms no pairs); empty: each user's history is one basket.
  std::vector<uint64_t> basket;
};

inline constexpr uint64_t kNoBasket = UINT64_MAX;

// popularity_count: what an item's popularity counts.
enum class PopularityCount {
  kUsers,   // distinct users with a used event (weight > 0) on the item
  kEvents,  // the sum of the used events' weights
};
// co_occurrence: what holds two items together for sims.
enum class CoOccurrence {
  kUser,     // a user's history
  kOrder,    // an order: events sharing a value of the interactions' order field
  kSession,  // a user's events with no gap longer than session_gap_hours between consecutive ones
};
PopularityCount parse_popularity_count(std::string_view name);  // users | events
CoOccurrence parse_co_occurrence(std::string_view name);         // user | order | session

struct RecipeOptions {
  std::map<std::string, double> event_weights;  // empty: every event counts 1; else unlisted types count 0
  double half_life_days = 0;
  PopularityCount popularity_count = PopularityCount::kUsers;
  double popularity_window_days = 0;  // popularity: only events in (newest - D, newest]; 0: all
  uint32_t min_co_count = 2;
  double popularity_discount = 0.5;
  uint32_t neighbors = 100;
  double trend_window_days = 7;
  double trend_smoothing = 10;
  // sims: only a user's most recent distinct items take part, so one heavy user costs at most
  // max_history^2 pairs.
  uint32_t max_history = 500;
  // sims: the baskets co-occurrence counts in (EventLog::basket holds them; weighted_events fills
  // it from these).
  CoOccurrence co_occurrence = CoOccurrence::kUser;
  std::string order_field = "ORDER_ID";
  double session_gap_hours = 1;
  // sims: the share a in [0, 1] of the metadata cosine in a neighbour's score (0: co-occurrence
  // only, scores as before).
  double metadata_similarity = 0;
  // transitions: an event d events after another (within the window, in the same user's
  // sequence) follows it with weight transition_decay^(d - 1); a user's answers come from the
  // user's recent_items latest distinct items, the k-th latest (k = 0, 1, ...) weighted
  // recent_decay^k.
  uint32_t transition_window = 20;
  double transition_decay = 0.85;
  uint32_t recent_items = 10;
  double recent_decay = 0.6;

  static RecipeOptions from_job(const TrainJob& job);
};

// The dataset's events, weighted by the job's --event rules when it has some.
EventLog weighted_events(const TrainPlan& plan, const datasets::Dataset& dataset);
// Every user's interacted items (every event), sorted: what answers leave out.
SeenItems seen_items_of(const EventLog& log);
// The weights of the events a split trains on: base[r] where row r's (user, item) pair is one of
// the split's training positives and, under the protocols that hold out the newest rows, r is
// older than the user's held-out row; 0 elsewhere.
std::vector<float> split_event_weights(const Split& split, const EventLog& events, const std::vector<double>& base);

// Per event: its weight (0 = not used): log.weight when set, else by event type.
std::vector<double> event_weights(const EventLog& log, const RecipeOptions& options);

// Per item, over the used events (weight > 0) within the window (newest - popularity_window_days,
// newest] when it is set (newest = the log's newest event; in whole seconds, as trending's):
//   users   each distinct user counts 1, or 0.5^(age / half-life) with a half-life set, age = the
//           newest time minus that user's newest counted event on the item;
//   events  the sum of the event weights, each decayed by 0.5^(age / half-life) with a half-life.
std::vector<float> popularity_scores(const EventLog& log, const RecipeOptions& options);

// The baskets of a session co-occurrence: each user's events (every event, used or not) in time
// order, a new session after a gap longer than gap_hours; one key per session, 0, 1, ...
std::vector<uint64_t> session_baskets(const EventLog& log, double gap_hours);

// (latest - previous) / (previous + smoothing), where latest and previous are the weighted event
// counts in (newest - W, newest] and (newest - 2W, newest - W], W = trend_window_days in whole
// seconds: an event exactly W before the newest belongs to the previous window.
std::vector<float> trending_scores(const EventLog& log, const RecipeOptions& options);

// Related items, CSR over items, best first (also a user's latest items, CSR over users).
struct ItemNeighbors {
  std::vector<uint64_t> offsets;  // items (users) + 1
  std::vector<uint32_t> items;
  std::vector<float> scores;
};

// Items' metadata as tokens (token ids, a token repeated as often as it occurs), CSR over items:
// what metadata similarity compares. Empty offsets: no metadata.
struct ItemTokens {
  std::vector<uint64_t> offsets;  // items + 1
  std::vector<uint32_t> tokens;
  // The first token id of each field (increasing; the tokens of field f are [field_starts[f],
  // field_starts[f + 1])): the cosine is taken per field and averaged over the fields, so a
  // title's rare words do not outweigh a shared genre. Empty: one field.
  std::vector<uint32_t> field_starts;
};
// The items' categorical values (a token per (field, value)) and the textual field's hashed words.
ItemTokens item_tokens(const datasets::Metadata& items, uint32_t num_items);

// A basket is a user's history (events of weight > 0), or with EventLog::basket an order or a
// session. co(i, j) = number of baskets holding both i and j (each basket's newest max_history
// distinct items); score = co / (n_i * n_j)^popularity_discount, n = baskets per item; pairs with
// co below min_co_count are dropped. With metadata_similarity a > 0 and metadata given, the score
// becomes (1 - a) * score / (i's best score) + a * cos(i, j), cos the mean over the metadata's fields
// of the cosine of the items' TF-IDF token vectors in that field (tf = occurrences, idf = ln(items /
// items holding the token); tokens held by more
// than 20% of the items and more than 1,000 of them are left out: they tell little apart and
// would cost items x holders), so an item without interactions gets neighbours from metadata
// alone. The `neighbors` best per item are kept (ties by item index).
ItemNeighbors sims_neighbors(const EventLog& log, const RecipeOptions& options, const ItemTokens& metadata = {});

// Each user's sequence: the used events (weight > 0) in time order, ties in log order, a repeat
// of the item just before merged into it (the stronger weight kept); CSR over users, scores the
// event weights.
ItemNeighbors user_sequences(const EventLog& log, const RecipeOptions& options);

// transitions: f(i, j) = sum over every user's sequence of the events j at distance d in
// 1..transition_window after an event i (j != i) of weight(j) * transition_decay^(d - 1);
// score(i, j) = f(i, j) / sum_k f(i, k), the share of what followed i that was j; the
// `neighbors` best per item kept (ties by item index).
ItemNeighbors transition_neighbors(const EventLog& log, const RecipeOptions& options);

// Each user's recent_items latest distinct items, newest first, weighted recent_decay^k (CSR over
// users): what a transitions model answers a user from.
ItemNeighbors latest_items(const EventLog& log, const RecipeOptions& options);

// A user's transitions scores: s[j] = sum over the user's latest items h (weight w_h) of
// w_h * score(h, j); NaN for items none of them led to. s is resized to the item count.
void transition_scores(const ItemNeighbors& transitions, const ItemNeighbors& latest, uint32_t user,
                       std::vector<float>& s);

// recipe.bin: what a recipe answers from.
struct RecipeData {
  std::string kind;                 // popularity | sims | trending | transitions
  std::vector<float> popularity;    // every recipe keeps it for fallbacks
  std::vector<float> item_scores;   // popularity: = popularity; trending: growth; else empty
  ItemNeighbors neighbors;          // sims: related items; transitions: the items that followed
  ItemNeighbors latest;             // transitions: each user's latest items (latest_items)
};

void write_recipe(const RecipeData& data, const std::filesystem::path& path);
// Validates what it reads against the model's item count (checksum, counts within the file,
// neighbour offsets increasing, neighbour items in range): damage is an Error "corrupt: FILE: ...".
// The latest-item lists are checked the same way; their user count is the caller's to check.
RecipeData read_recipe(const std::filesystem::path& path, uint32_t num_items);

}  // namespace tastebud::host
