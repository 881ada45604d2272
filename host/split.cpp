#include "host/split.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fmt/format.h>

#include "tastebud/error.h"
#include "tastebud/sampler_math.h"

namespace tastebud::host {

EvalProtocol parse_eval_protocol(const std::string& name) {
  if (name == "none") return EvalProtocol::kNone;
  if (name == "loo") return EvalProtocol::kLeaveOneOut;
  if (name == "holdout") return EvalProtocol::kHoldout;
  if (name == "cold-items") return EvalProtocol::kColdItems;
  if (name == "personalize") return EvalProtocol::kPersonalize;
  throw Error(fmt::format("unknown --eval '{}': expected loo, holdout, personalize, cold-items or none", name));
}

std::string to_string(EvalProtocol protocol) {
  switch (protocol) {
    case EvalProtocol::kNone: return "none";
    case EvalProtocol::kLeaveOneOut: return "loo";
    case EvalProtocol::kHoldout: return "holdout";
    case EvalProtocol::kColdItems: return "cold-items";
    case EvalProtocol::kPersonalize: return "personalize";
  }
  return "?";
}

namespace {

void sort_unique(std::vector<uint32_t>& v, size_t from) {
  std::sort(v.begin() + from, v.end());
  v.erase(std::unique(v.begin() + from, v.end()), v.end());
}

// True when user k is evaluated, given the cap on evaluated users: a Philox coin keeps the
// choice stable across runs and independent of the order users are visited in.
// Counter 1 of kSplit picks cold items; user choices use 0 (test) and 2 (validation).
bool chosen(uint32_t user, uint32_t eligible_estimate, const SplitOptions& o) {
  const uint32_t word = random_words(o.eval_seed, RandomStream::kSplit, o.user_choice, user).v[0];
  if (o.protocol == EvalProtocol::kPersonalize) {
    // The service's share of users, of all users; then at most max_eval_users of them.
    const double share = o.max_eval_users > 0 && o.eval_user_share * eligible_estimate > o.max_eval_users
                             ? static_cast<double>(o.max_eval_users) / eligible_estimate
                             : o.eval_user_share;
    return uniform_unit(word) < share;
  }
  if (o.max_eval_users == 0 || eligible_estimate <= o.max_eval_users) return true;
  return uniform_unit(word) < static_cast<float>(o.max_eval_users) / eligible_estimate;
}

}  // namespace

EventRule parse_event_rule(const std::string& text) {
  // TYPE[:THRESHOLD[:WEIGHT]]; an empty THRESHOLD means none.
  EventRule rule;
  const size_t a = text.find(':');
  rule.event_type = text.substr(0, a);
  TB_CHECK(!rule.event_type.empty(), fmt::format("--event '{}': expected TYPE[:THRESHOLD[:WEIGHT]]", text));
  if (a == std::string::npos) return rule;
  const size_t b = text.find(':', a + 1);
  const std::string threshold = text.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
  try {
    if (!threshold.empty()) rule.value_threshold = std::stof(threshold);
    if (b != std::string::npos) rule.weight = std::stof(text.substr(b + 1));
  } catch (const std::exception&) {
    throw Error(fmt::format("--event '{}': THRESHOLD and WEIGHT must be numbers", text));
  }
  return rule;
}

bool same_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

uint32_t find_event_type(const datasets::Dataset& dataset, std::string_view name) {
  const size_t types = dataset.event_types.size();
  for (size_t t = 0; t < types; ++t)
    if (dataset.event_types[t] == name) return static_cast<uint32_t>(t);
  std::vector<uint32_t> matches;
  for (size_t t = 0; t < types; ++t)
    if (same_ignoring_case(dataset.event_types[t], name)) matches.push_back(static_cast<uint32_t>(t));
  if (matches.size() == 1) return matches[0];
  std::string known;
  for (size_t k = 0; k < types; ++k) known += (k ? ", " : "") + fmt::format("'{}'", dataset.event_types[k]);
  throw Error(fmt::format("event type '{}' is not in the dataset, which has {}{}", name, known,
                          matches.empty() ? "" : " (several differ from it only in case: spell it exactly)"));
}

EventWeights::EventWeights(const datasets::Dataset& dataset, const std::vector<EventRule>& rules,
                           const std::vector<uint8_t>* excluded)
    : excluded_(excluded) {
  TB_CHECK(excluded == nullptr || excluded->size() == dataset.interactions.size(),
           "split: the excluded rows do not match the dataset's interactions");
  const size_t types = dataset.event_types.size();
  if (rules.empty()) {
    weight_.assign(types, 1.0f);
    threshold_.assign(types, NAN);
    return;
  }
  weight_.assign(types, 0.0f);
  threshold_.assign(types, NAN);
  for (const EventRule& rule : rules) {
    TB_CHECK(rule.weight > 0.0f && std::isfinite(rule.weight),
             fmt::format("event type '{}': the weight must be a positive number", rule.event_type));
    const uint32_t t = find_event_type(dataset, rule.event_type);
    weight_[t] = rule.weight;
    threshold_[t] = rule.value_threshold ? *rule.value_threshold : NAN;
  }
}

float EventWeights::weight(const datasets::Interactions& rows, uint64_t r) const {
  if (excluded(r)) return 0.0f;
  const uint32_t t = rows.event_type[r];
  const float w = weight_[t];
  if (w <= 0.0f || std::isnan(threshold_[t])) return w;
  const float value = rows.event_value[r];
  return !std::isnan(value) && value >= threshold_[t] ? w : 0.0f;
}

namespace {

// A training row of one user: its item, weight and interaction row.
struct Candidate {
  uint32_t item;
  float weight;
  uint64_t row;
  auto operator<=>(const Candidate&) const = default;
};

// A repeated (user, item) pair trains once, with its strongest event's weight; the latest row
// among equally strong ones gives the positive its context.
void add_positives(uint32_t u, std::vector<Candidate>& pairs, bool keep_rows, Split& split) {
  std::sort(pairs.begin(), pairs.end());
  TrainingSet& train = split.train;
  for (size_t k = 0; k < pairs.size(); ++k) {
    if (k + 1 < pairs.size() && pairs[k + 1].item == pairs[k].item) continue;  // keep the max
    train.user.push_back(u);
    train.item.push_back(pairs[k].item);
    train.weight.push_back(pairs[k].weight);
    if (keep_rows) split.positive_row.push_back(pairs[k].row);
  }
}

// The cold-items protocol: a Philox coin per interacted item picks the cold ones; every row of a
// cold item leaves training, and each user's latest counted cold interaction is ranked against
// other cold items the user never touched.
Split make_cold_item_split(const datasets::Dataset& dataset, const SplitOptions& options,
                           const EventWeights& events) {
  const auto& rows = dataset.interactions;
  const uint32_t num_users = dataset.num_users(), num_items = dataset.num_items();
  TB_CHECK(options.cold_item_share > 0 && options.cold_item_share < 1,
           "the cold item share must be between 0 and 1");
  Split split;
  split.protocol = EvalProtocol::kColdItems;
  std::vector<uint8_t> interacted(num_items, 0), cold(num_items, 0);
  for (uint64_t r = 0; r < rows.size(); ++r) interacted[rows.item[r]] = 1;
  for (uint32_t i = 0; i < num_items; ++i) {
    const uint32_t word = random_words(options.eval_seed, RandomStream::kSplit, 1, i).v[0];
    if (interacted[i] && uniform_unit(word) < options.cold_item_share) {
      cold[i] = 1;
      split.cold_items.push_back(i);
    }
  }
  TrainingSet& train = split.train;
  train.num_users = num_users;
  train.num_items = num_items;
  if (options.record_held_out_rows) {
    split.held_out_rows.assign(rows.size(), 0);
    for (uint64_t r = 0; r < rows.size(); ++r) split.held_out_rows[r] = cold[rows.item[r]];
  }
  std::vector<Candidate> pairs;
  std::vector<uint32_t> touched;
  std::vector<uint32_t> eligible_users, targets;
  std::vector<uint64_t> target_rows;
  for (uint32_t u = 0; u < num_users; ++u) {
    pairs.clear();
    int64_t target = -1;
    uint64_t target_row = 0;
    for (uint64_t r = rows.user_offsets[u]; r < rows.user_offsets[u + 1]; ++r) {
      const float w = events.weight(rows, r);
      if (w <= 0.0f) continue;
      if (cold[rows.item[r]]) {
        target = rows.item[r];  // rows are in time order: the last one is the latest
        target_row = r;
      } else {
        pairs.push_back({rows.item[r], w, r});
      }
    }
    add_positives(u, pairs, options.positive_rows, split);
    if (target >= 0) {
      eligible_users.push_back(u);
      targets.push_back(static_cast<uint32_t>(target));
      target_rows.push_back(target_row);
    }
  }
  // A small catalog has fewer than loo_negatives other cold items: rank against half of them
  // (random HR@10 is then 10 / (m + 1), not 0.10), and skip a user who touched so many cold items
  // that m untouched ones are not left, rather than pad with ties.
  const uint64_t pool = split.cold_items.size();
  const uint32_t m = static_cast<uint32_t>(std::min<uint64_t>(options.loo_negatives, pool / 2));
  TB_CHECK(m > 0, "`eval=cold-items`: too few items to make any cold");
  for (size_t k = 0; k < eligible_users.size(); ++k) {
    const uint32_t u = eligible_users[k];
    if (!chosen(u, static_cast<uint32_t>(eligible_users.size()), options)) continue;
    touched.assign(rows.item.begin() + rows.user_offsets[u], rows.item.begin() + rows.user_offsets[u + 1]);
    sort_unique(touched, 0);
    const size_t first = split.candidates.size();
    for (uint64_t draw = 0; split.candidates.size() - first < m && draw < 64 * (uint64_t{m} + 1); ++draw) {
      const uint32_t word = random_words(options.eval_seed, RandomStream::kEvalNegatives, 1,
                                         static_cast<uint64_t>(u) * 4096 + draw).v[0];
      const uint32_t item = split.cold_items[static_cast<uint64_t>(uniform_unit(word) * pool) % pool];
      if (contains_sorted(touched.data(), touched.size(), item)) continue;
      if (std::find(split.candidates.begin() + first, split.candidates.end(), item) != split.candidates.end()) continue;
      split.candidates.push_back(item);
    }
    if (split.candidates.size() - first < m) {
      split.candidates.resize(first);
      continue;
    }
    split.eval_users.push_back(u);
    split.eval_row.push_back(target_rows[k]);
    split.held_out_item.push_back(targets[k]);
  }
  split.negatives_per_user = m;
  train.finalize();
  return split;
}

// make_split's work one user at a time: the rows that count, the training positives, the
// impressions not acted on and the held-out rows, with scratch reused from user to user.
class UserSplitter {
 public:
  UserSplitter(const datasets::Dataset& dataset, const SplitOptions& options, const EventWeights& events,
               Split& split)
      : rows_(dataset.interactions), num_items_(dataset.num_items()), options_(options), events_(events),
        split_(split), impressions_(options.impressions && !rows_.impression_offsets.empty()) {
    if (impressions_) split_.train.impression_offsets.push_back(0);
    if (options_.record_held_out_rows) split_.held_out_rows.assign(rows_.size(), 0);
  }

  // The user's rows that count, oldest first, and their distinct items; call before the others.
  void keep_rows(uint32_t u) {
    kept_.clear();
    for (uint64_t r = rows_.user_offsets[u]; r < rows_.user_offsets[u + 1]; ++r) {
      if (events_.weight(rows_, r) > 0.0f) kept_.push_back(r);
    }
    all_items_.clear();
    for (uint64_t r : kept_) all_items_.push_back(rows_.item[r]);
    sort_unique(all_items_, 0);
  }
  size_t distinct_items() const { return all_items_.size(); }

  // A user not evaluated: every row trains.
  void train_on_all(uint32_t u) {
    add_train(u, [](uint64_t) { return true; });
    add_impressions(u, [](uint64_t) { return true; });
  }

  // loo: the latest interaction's item is held out with every row of it, and ranked among
  // loo_negatives items the user never touched.
  void leave_latest_out(uint32_t u) {
    const uint32_t target = rows_.item[kept_.back()];
    add_train(u, [&](uint64_t r) { return rows_.item[r] != target; });
    add_impressions(u, [&](uint64_t r) { return rows_.item[r] != target; });
    hold_rows(u, [&](uint64_t r) { return rows_.item[r] == target; });
    split_.eval_users.push_back(u);
    split_.eval_row.push_back(kept_.back());
    split_.held_out_item.push_back(target);
    draw_candidates(u, target);
  }

  // holdout and personalize: the newest holdout_share of the user's rows are held out; their items
  // that the user's training rows lack are the truth.
  void hold_out_newest(uint32_t u) {
    TrainingSet& train = split_.train;
    const uint64_t n = kept_.size();
    const uint64_t hold = std::max<uint64_t>(1, static_cast<uint64_t>(n * options_.holdout_share + 0.5));
    const uint64_t cut = n - std::min(hold, n - 1);
    const uint64_t first_held_row = kept_[cut];
    const size_t train_first = train.item.size();
    add_train(u, [&](uint64_t r) { return r < first_held_row; });
    add_impressions(u, [&](uint64_t r) { return r < first_held_row; });
    hold_rows(u, [&](uint64_t r) { return r >= first_held_row; });
    held_.clear();
    for (uint64_t k = cut; k < n; ++k) {
      const uint32_t i = rows_.item[kept_[k]];
      if (!std::binary_search(train.item.begin() + train_first, train.item.end(), i)) held_.push_back(i);
    }
    sort_unique(held_, 0);
    if (held_.empty()) return;
    split_.eval_users.push_back(u);
    split_.eval_row.push_back(first_held_row);
    split_.truth.insert(split_.truth.end(), held_.begin(), held_.end());
    split_.truth_offsets.push_back(split_.truth.size());
  }

  void end_user() {
    if (impressions_) split_.train.impression_offsets.push_back(split_.train.impression_items.size());
  }

 private:
  template <typename UseRow>
  void add_train(uint32_t u, UseRow&& use_row) {
    pairs_.clear();
    for (uint64_t r : kept_) {
      if (use_row(r)) pairs_.push_back({rows_.item[r], events_.weight(rows_, r), r});
    }
    add_positives(u, pairs_, options_.positive_rows, split_);
  }

  // Items shown with the user's training rows that the user never acted on (in any event) in
  // those rows: what the user did in held-out rows is the future, so a held-out item shown
  // earlier is an ignored impression like any other.
  template <typename UseRow>
  void add_impressions(uint32_t u, UseRow&& use_row) {
    if (!impressions_) return;
    touched_items_.clear();
    for (uint64_t r = rows_.user_offsets[u]; r < rows_.user_offsets[u + 1]; ++r) {
      if (use_row(r) && !events_.excluded(r)) touched_items_.push_back(rows_.item[r]);
    }
    sort_unique(touched_items_, 0);
    shown_.clear();
    for (uint64_t r = rows_.user_offsets[u]; r < rows_.user_offsets[u + 1]; ++r) {
      if (!use_row(r) || events_.excluded(r)) continue;
      for (uint64_t k = rows_.impression_offsets[r]; k < rows_.impression_offsets[r + 1]; ++k) {
        const uint32_t i = rows_.impression_items[k];
        if (!std::binary_search(touched_items_.begin(), touched_items_.end(), i)) shown_.push_back(i);
      }
    }
    sort_unique(shown_, 0);
    std::vector<uint32_t>& items = split_.train.impression_items;
    items.insert(items.end(), shown_.begin(), shown_.end());
  }

  template <typename Held>
  void hold_rows(uint32_t u, Held&& held) {
    if (!options_.record_held_out_rows) return;
    for (uint64_t r = rows_.user_offsets[u]; r < rows_.user_offsets[u + 1]; ++r) {
      if (held(r) && !events_.excluded(r)) split_.held_out_rows[r] = 1;
    }
  }

  // Candidates: distinct items the user never touched (in any event, counted or not) in the rows
  // that exist for this split: a validation split never looks at the test rows.
  void draw_candidates(uint32_t u, uint32_t target) {
    std::vector<uint32_t> touched;
    for (uint64_t r = rows_.user_offsets[u]; r < rows_.user_offsets[u + 1]; ++r) {
      if (!events_.excluded(r)) touched.push_back(rows_.item[r]);
    }
    sort_unique(touched, 0);
    std::vector<uint32_t>& candidates = split_.candidates;
    const uint64_t want = std::min<uint64_t>(options_.loo_negatives, num_items_ - touched.size());
    const size_t first = candidates.size();
    for (uint64_t draw = 0; candidates.size() - first < want && draw < 64 * (want + 1); ++draw) {
      const uint32_t item = draw_negative(options_.eval_seed, RandomStream::kEvalNegatives, 0,
                                          static_cast<uint64_t>(u) * 4096 + draw, touched.data(),
                                          touched.size(), num_items_, nullptr, nullptr);
      if (contains_sorted(touched.data(), touched.size(), item)) continue;
      if (std::find(candidates.begin() + first, candidates.end(), item) != candidates.end()) continue;
      candidates.push_back(item);
    }
    // Only a user who touched nearly the whole catalog runs out of candidates; the padding
    // repeats the target, which ties and so counts against the model.
    while (candidates.size() - first < options_.loo_negatives) candidates.push_back(target);
  }

  const datasets::Interactions& rows_;
  const uint32_t num_items_;
  const SplitOptions& options_;
  const EventWeights& events_;
  Split& split_;
  const bool impressions_;
  std::vector<uint64_t> kept_;                    // the user's rows that count, oldest first
  std::vector<uint32_t> all_items_, held_;        // per-user scratch
  std::vector<uint32_t> touched_items_, shown_;   // per-user scratch of add_impressions
  std::vector<Candidate> pairs_;                  // the user's training rows
};

}  // namespace

Split make_split(const datasets::Dataset& dataset, const SplitOptions& options) {
  const EventWeights events(dataset, options.events, options.excluded_rows);
  if (options.protocol == EvalProtocol::kColdItems) return make_cold_item_split(dataset, options, events);
  const uint32_t num_users = dataset.num_users();
  Split split;
  split.protocol = options.protocol;
  split.train.num_users = num_users;
  split.train.num_items = dataset.num_items();
  UserSplitter users(dataset, options, events, split);
  uint32_t eligible = 0;
  for (uint32_t u = 0; u < num_users; ++u) {
    users.keep_rows(u);
    eligible += users.distinct_items() >= 2;
  }
  split.truth_offsets.push_back(0);
  for (uint32_t u = 0; u < num_users; ++u) {
    users.keep_rows(u);
    const bool evaluate = options.protocol != EvalProtocol::kNone && users.distinct_items() >= 2 &&
                          chosen(u, eligible, options);
    if (!evaluate) {
      users.train_on_all(u);
    } else if (options.protocol == EvalProtocol::kLeaveOneOut) {
      users.leave_latest_out(u);
    } else {
      users.hold_out_newest(u);
    }
    users.end_user();
  }
  split.negatives_per_user = options.protocol == EvalProtocol::kLeaveOneOut ? options.loo_negatives : 0;
  split.train.finalize();
  return split;
}

Split make_validation_split(const datasets::Dataset& dataset, const SplitOptions& options, const Split& test,
                            uint32_t users) {
  TB_CHECK(test.held_out_rows.size() == dataset.interactions.size(),
           "validation split: the test split did not record its held-out rows");
  SplitOptions o = options;
  // Cold items have no training rows to carve from: their validation ranks warm items, leave one out.
  if (o.protocol == EvalProtocol::kColdItems) o.protocol = EvalProtocol::kLeaveOneOut;
  o.excluded_rows = &test.held_out_rows;
  o.user_choice = 2;
  o.max_eval_users = users;
  o.record_held_out_rows = false;
  return make_split(dataset, o);
}

}  // namespace tastebud::host
