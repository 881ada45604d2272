#include "host/split.h"

#include <algorithm>

#include <fmt/format.h>

#include "tastebud/error.h"
#include "tastebud/sampler_math.h"

namespace tastebud::host {

EvalProtocol parse_eval_protocol(const std::string& name) {
  if (name == "none") return EvalProtocol::kNone;
  if (name == "loo") return EvalProtocol::kLeaveOneOut;
  if (name == "holdout") return EvalProtocol::kHoldout;
  throw Error(fmt::format("unknown --eval '{}': expected loo, holdout or none", name));
}

std::string to_string(EvalProtocol protocol) {
  switch (protocol) {
    case EvalProtocol::kNone: return "none";
    case EvalProtocol::kLeaveOneOut: return "loo";
    case EvalProtocol::kHoldout: return "holdout";
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
bool chosen(uint32_t user, uint32_t eligible_estimate, const SplitOptions& o) {
  if (o.max_eval_users == 0 || eligible_estimate <= o.max_eval_users) return true;
  const uint32_t word = random_words(o.eval_seed, RandomStream::kSplit, 0, user).v[0];
  return uniform_unit(word) < static_cast<float>(o.max_eval_users) / eligible_estimate;
}

}  // namespace

Split make_split(const datasets::Dataset& dataset, const SplitOptions& options) {
  const auto& rows = dataset.interactions;
  const uint32_t num_users = dataset.num_users(), num_items = dataset.num_items();
  Split split;
  split.protocol = options.protocol;
  TrainingSet& train = split.train;
  train.num_users = num_users;
  train.num_items = num_items;
  std::vector<uint32_t> all_items, held;  // per-user scratch
  uint32_t eligible = 0;
  for (uint32_t u = 0; u < num_users; ++u) {
    all_items.assign(rows.item.begin() + rows.user_offsets[u], rows.item.begin() + rows.user_offsets[u + 1]);
    sort_unique(all_items, 0);
    eligible += all_items.size() >= 2;
  }
  split.truth_offsets.push_back(0);
  for (uint32_t u = 0; u < num_users; ++u) {
    const uint64_t begin = rows.user_offsets[u], end = rows.user_offsets[u + 1];
    const uint64_t n = end - begin;
    all_items.assign(rows.item.begin() + begin, rows.item.begin() + end);
    sort_unique(all_items, 0);
    const size_t train_first = train.item.size();
    const bool evaluate = options.protocol != EvalProtocol::kNone && all_items.size() >= 2 &&
                          chosen(u, eligible, options);
    if (!evaluate) {
      train.item.insert(train.item.end(), all_items.begin(), all_items.end());
    } else if (options.protocol == EvalProtocol::kLeaveOneOut) {
      // The latest interaction's item is held out with every row of it.
      const uint32_t target = rows.item[end - 1];
      for (uint32_t i : all_items) if (i != target) train.item.push_back(i);
      split.eval_users.push_back(u);
      split.held_out_item.push_back(target);
      // Candidates: distinct items the user never touched.
      const uint64_t want = std::min<uint64_t>(options.loo_negatives, num_items - all_items.size());
      const size_t first = split.candidates.size();
      for (uint64_t draw = 0; split.candidates.size() - first < want && draw < 64 * (want + 1); ++draw) {
        const uint32_t item = draw_negative(options.eval_seed, RandomStream::kEvalNegatives, 0,
                                            static_cast<uint64_t>(u) * 4096 + draw, all_items.data(),
                                            all_items.size(), num_items, nullptr, nullptr);
        if (contains_sorted(all_items.data(), all_items.size(), item)) continue;
        if (std::find(split.candidates.begin() + first, split.candidates.end(), item) != split.candidates.end()) continue;
        split.candidates.push_back(item);
      }
      // Pad with the held-out item's own score position if the catalog ran out: never happens on
      // realistic catalogs, and a padded slot compares equal, so it counts against the model.
      while (split.candidates.size() - first < options.loo_negatives) split.candidates.push_back(target);
    } else {
      const uint64_t hold = std::max<uint64_t>(1, static_cast<uint64_t>(n * options.holdout_share + 0.5));
      const uint64_t cut = end - std::min(hold, n - 1);
      for (uint64_t r = begin; r < cut; ++r) train.item.push_back(rows.item[r]);
      sort_unique(train.item, train_first);
      held.clear();
      for (uint64_t r = cut; r < end; ++r) {
        const uint32_t i = rows.item[r];
        if (!std::binary_search(train.item.begin() + train_first, train.item.end(), i)) held.push_back(i);
      }
      sort_unique(held, 0);
      if (!held.empty()) {
        split.eval_users.push_back(u);
        split.truth.insert(split.truth.end(), held.begin(), held.end());
        split.truth_offsets.push_back(split.truth.size());
      }
    }
    train.user.resize(train.item.size(), u);
  }
  split.negatives_per_user = options.protocol == EvalProtocol::kLeaveOneOut ? options.loo_negatives : 0;
  train.finalize();
  return split;
}

}  // namespace tastebud::host
