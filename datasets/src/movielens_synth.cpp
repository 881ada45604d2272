// A synthetic ratings set in ml-100k's own layout (u.data, u.item, u.user, u.genre, u.occupation),
// so that MovieLens-100K benchmarks run where the real files cannot be had. It is not the real
// data: only its layout, its sizes and roughly its shape (long-tailed items, users with 20 to ~750
// ratings, ml-100k's rating histogram, seven months of timestamps) are copied.
//
// Taste: a user's affinity for a genre is a demographic part (age, gender, occupation) plus a
// personal part; an item's appeal to a user is the mean affinity for its 1-3 genres plus a latent
// user x item term and an item quality, none of which the metadata shows. Which items a user rates
// follows appeal and a long-tailed popularity; the rating follows appeal. So metadata is
// informative, and ids still carry most of what there is to learn.
//
// Every random draw is random_words(seed, kGenerator, <draw kind>, <index>) with draw kinds of
// their own (the shop's are below 64): the files are a pure function of the options.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "source_output.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/error.h"
#include "tastebud/philox.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;
using detail::append_uint;

// ml-100k's first and last rating: 1997-09-20 and 1998-04-22, about seven months.
constexpr int64_t kFirstTimestamp = 874724710;
constexpr int64_t kSpanSeconds = 893286638 - kFirstTimestamp;

enum DrawKind : uint32_t {
  kOccupationShiftDraw = 64,
  kUserDraw = 65,
  kUserAffinityDraw = 66,
  kUserLatentDraw = 67,
  kUserBiasDraw = 68,
  kUserActivityDraw = 69,
  kUserTimeDraw = 70,
  kItemDraw = 71,
  kItemGenreDraw = 72,
  kItemLatentDraw = 73,
  kItemQualityDraw = 74,
  kTitleDraw = 75,
  kChoiceDraw = 76,
  kRatingDraw = 77,
};

constexpr uint32_t kGenreCount = 19;  // u.item's flags; flag 0 is "unknown"
constexpr uint32_t kLatent = 8;

// Parts of an item's appeal to a user (standard deviations). Tuned so that, leave-one-out with 99
// negatives, popularity alone reaches HR@10 of about 0.5 and an id-only NeuMF about 0.68.
constexpr double kPersonalSd = 0.5;    // personal genre affinity: only ids can learn it
constexpr double kOccupationSd = 0.2;  // random per-occupation genre shift, on top of the table
constexpr double kLatentSd = 0.5;      // each latent coordinate: the dot product's sd is ~0.7
constexpr double kQualitySd = 0.3;     // item quality
// Choice logit = sharpness x appeal + log popularity, popularity Zipf over a random item order
// with an offset that flattens the head (ml-100k's most rated item has 583 raters).
constexpr double kChoiceSharpness = 2.0;
constexpr double kPopularityExponent = 1.5;
constexpr double kPopularityOffset = 60.0;
constexpr double kActivitySd = 1.0;     // log-normal activity: a few heavy raters, many light ones
constexpr double kMaxItemShare = 0.45;  // the heaviest ml-100k rater rated ~44% of the catalog
constexpr double kRatingTaste = 0.8;    // weight of appeal in the rating's latent score
constexpr double kUserBiasSd = 0.35;    // harsh and lenient raters
constexpr double kRatingNoiseSd = 0.7;
// ml-100k's rating histogram as cumulative shares of 1, <=2, <=3, <=4 stars.
constexpr double kRatingCumulative[4] = {0.0611, 0.1748, 0.4462, 0.7880};

// clang-format off
constexpr std::string_view kGenres[kGenreCount] = {
    "unknown", "Action",    "Adventure", "Animation", "Children's", "Comedy",  "Crime",
    "Documentary", "Drama", "Fantasy",   "Film-Noir", "Horror",     "Musical", "Mystery",
    "Romance",  "Sci-Fi",   "Thriller",  "War",       "Western"};
// How often a genre is flagged in ml-100k's u.item: a skewed genre popularity.
constexpr double kGenreWeight[kGenreCount] = {
    0, 251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56, 61, 247, 101, 251, 71, 27};
// Affinity shift per 12 years of age above 34, and for women (men get the negative).
constexpr double kAgeShift[kGenreCount] = {
    0, -0.25, -0.10, -0.35, -0.20, -0.20, 0.05, 0.25, 0.30, -0.20, 0.45, -0.45, 0.20, 0.30, 0.10,
    -0.30, 0.00, 0.45, 0.45};
constexpr double kFemaleShift[kGenreCount] = {
    0, -0.35, -0.15, 0.10, 0.30, 0.10, -0.10, 0.00, 0.20, 0.10, -0.05, -0.20, 0.40, 0.05, 0.45,
    -0.35, -0.10, -0.30, -0.25};

struct Occupation {
  std::string_view name;
  double weight;        // users in ml-100k
  double female_share;
  double mean_age;
  uint32_t genre[2];    // genres this occupation leans to (0: none)
  double lean;
};
// ml-100k's 21 occupations (u.occupation) with their sizes; the rest is invented but plausible.
constexpr Occupation kOccupations[] = {
    {"administrator", 79, 0.45, 38, {8, 14}, 0.2},  {"artist", 28, 0.35, 32, {10, 7}, 0.4},
    {"doctor", 7, 0.15, 44, {8, 0}, 0.2},           {"educator", 95, 0.3, 43, {7, 8}, 0.3},
    {"engineer", 67, 0.05, 36, {15, 1}, 0.4},       {"entertainment", 18, 0.15, 29, {12, 5}, 0.4},
    {"executive", 32, 0.1, 39, {16, 6}, 0.2},       {"healthcare", 16, 0.7, 41, {8, 14}, 0.3},
    {"homemaker", 7, 0.85, 33, {4, 14}, 0.5},       {"lawyer", 12, 0.15, 36, {6, 13}, 0.3},
    {"librarian", 51, 0.55, 40, {7, 10}, 0.4},      {"marketing", 26, 0.35, 37, {5, 14}, 0.2},
    {"none", 9, 0.1, 27, {11, 5}, 0.3},             {"other", 105, 0.3, 34, {0, 0}, 0},
    {"programmer", 66, 0.1, 33, {15, 9}, 0.5},      {"retired", 14, 0.1, 63, {17, 18}, 0.4},
    {"salesman", 12, 0.25, 36, {1, 5}, 0.2},        {"scientist", 31, 0.1, 36, {15, 7}, 0.4},
    {"student", 196, 0.3, 22, {5, 11}, 0.3},        {"technician", 27, 0.05, 33, {15, 1}, 0.3},
    {"writer", 45, 0.4, 37, {8, 10}, 0.4}};
constexpr uint32_t kOccupationCount = sizeof(kOccupations) / sizeof(kOccupations[0]);

// Title words; three are Latin-1 (u.item is Latin-1), so the converter's re-encoding is exercised.
constexpr std::string_view kTitleAdjectives[] = {
    "Last", "Silent", "Crimson", "Lost", "Broken", "Golden", "Wild", "Dark", "Secret", "Little",
    "Big", "Long", "Final", "Hidden", "Burning", "Frozen", "Lonely", "Dead", "Sweet", "Strange",
    "Blue", "Perfect", "Dangerous", "American", "Brave", "Empty", "Midnight", "Eternal"};
constexpr std::string_view kTitleNouns[] = {
    "Harbor", "Road", "Night", "Heart", "River", "Kingdom", "Game", "Storm", "Island", "Summer",
    "City", "Dream", "Witness", "Stranger", "Promise", "Mountain", "Garden", "Shadow", "Family",
    "Hunter", "Angel", "Machine", "Planet", "Sister", "Brother", "Ghost", "Highway", "Winter",
    "Caf\xe9", "Se\xf1or", "Mis\xe9rables", "Journey", "Affair", "Escape", "Mirror", "Letter"};
constexpr std::string_view kMonths[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
// clang-format on

template <typename T, size_t N>
constexpr uint32_t count_of(const T (&)[N]) {
  return static_cast<uint32_t>(N);
}

Philox4 draw(uint64_t seed, DrawKind kind, uint64_t index) {
  return random_words(seed, RandomStream::kGenerator, kind, index);
}

// A uniform double strictly inside (0, 1) from two words.
double open_unit(uint32_t hi, uint32_t lo) {
  const uint64_t bits = ((static_cast<uint64_t>(hi) << 21) ^ lo) & ((uint64_t{1} << 53) - 1);
  return (static_cast<double>(bits) + 0.5) * (1.0 / 9007199254740992.0);
}

// A standard normal draw (Box-Muller) for draw `index` of `kind`.
double normal(uint64_t seed, DrawKind kind, uint64_t index) {
  const Philox4 w = draw(seed, kind, index);
  return std::sqrt(-2.0 * std::log(open_unit(w.v[0], w.v[1]))) *
         std::cos(6.283185307179586 * open_unit(w.v[2], w.v[3]));
}

// Index of slot `slot` (< 64) of entity `entity` within one draw kind.
uint64_t slot_index(uint64_t entity, uint32_t slot) { return (entity << 6) | slot; }

// Index of the pair (user, item) within one draw kind.
uint64_t pair_index(uint32_t user, uint32_t item) { return (uint64_t{user} << 32) | item; }

// A pick from `weights` (non-negative, not all zero) by a uniform in [0, 1).
uint32_t weighted_pick(const double* weights, uint32_t n, double uniform) {
  double total = 0;
  for (uint32_t k = 0; k < n; ++k) total += weights[k];
  double target = uniform * total;
  for (uint32_t k = 0; k < n; ++k) {
    if (weights[k] <= 0) continue;
    if (target < weights[k]) return k;
    target -= weights[k];
  }
  uint32_t last = n - 1;
  while (weights[last] <= 0) --last;
  return last;
}

struct User {
  uint32_t occupation;
  int64_t age;
  bool female;
  uint32_t zip;
  double rating_bias;
  int64_t first_time;
  int64_t active_seconds;
};

struct Item {
  uint32_t genres[3];
  uint32_t genre_count;
  double log_popularity;
  double quality;
  int64_t year;
  uint32_t month, day;
  std::string title;  // Latin-1
};

struct Model {
  MovieLens100kOptions options;
  std::vector<User> users;
  std::vector<Item> items;
  std::vector<double> affinity;     // users x kGenreCount
  std::vector<double> user_latent;  // users x kLatent
  std::vector<double> item_latent;  // items x kLatent
};

void validate(const MovieLens100kOptions& o) {
  const auto fail = [](const std::string& what) {
    throw Error("generate movielens-100k: " + what);
  };
  if (o.users == 0 || o.items == 0) fail("needs at least one user and one item");
  if (o.min_ratings_per_user > o.items) {
    fail("each user rates at least " + std::to_string(o.min_ratings_per_user) +
         " items, but there are only " + std::to_string(o.items) + " items");
  }
  if (o.ratings < uint64_t{o.users} * o.min_ratings_per_user) {
    fail(std::to_string(o.ratings) + " ratings are too few for " + std::to_string(o.users) +
         " users with at least " + std::to_string(o.min_ratings_per_user) + " ratings each");
  }
}

uint32_t max_ratings_per_user(const MovieLens100kOptions& o) {
  const auto share = static_cast<uint32_t>(std::ceil(kMaxItemShare * o.items));
  return std::max(o.min_ratings_per_user, std::min(o.items, share));
}

std::string make_title(uint64_t seed, uint32_t i, int64_t year) {
  const Philox4 w = draw(seed, kTitleDraw, slot_index(i, 0));
  const std::string_view adjective =
      kTitleAdjectives[uniform_below(w.v[1], count_of(kTitleAdjectives))];
  const std::string_view noun = kTitleNouns[uniform_below(w.v[2], count_of(kTitleNouns))];
  const std::string_view other = kTitleNouns[uniform_below(w.v[3], count_of(kTitleNouns))];
  std::string title;
  switch (uniform_below(w.v[0], 4)) {
    case 0:
      title = std::string(adjective) + " " + std::string(noun);
      break;
    case 1:  // MovieLens moves a leading article to the end
      title = std::string(noun) + ", The";
      break;
    case 2:
      title = std::string(noun) + " of the " + std::string(other);
      break;
    default:
      title = std::string(adjective) + " " + std::string(noun) + " " + std::string(other);
      break;
  }
  title += " (";
  append_uint(title, static_cast<uint64_t>(year));
  title += ')';
  return title;
}

Model build_model(const MovieLens100kOptions& options) {
  Model m;
  m.options = options;
  const uint64_t seed = options.seed;

  double occupation_weight[kOccupationCount];
  for (uint32_t k = 0; k < kOccupationCount; ++k) occupation_weight[k] = kOccupations[k].weight;
  // Each occupation's genre shift: its leanings from the table plus a random part.
  std::vector<double> occupation_shift(size_t{kOccupationCount} * kGenreCount, 0.0);
  for (uint32_t k = 0; k < kOccupationCount; ++k) {
    for (uint32_t g = 1; g < kGenreCount; ++g) {
      double shift = kOccupationSd * normal(seed, kOccupationShiftDraw, slot_index(k, g));
      for (const uint32_t leaning : kOccupations[k].genre) {
        if (leaning == g) shift += kOccupations[k].lean;
      }
      occupation_shift[size_t{k} * kGenreCount + g] = shift;
    }
  }

  m.users.resize(options.users);
  m.affinity.assign(size_t{options.users} * kGenreCount, 0.0);
  m.user_latent.resize(size_t{options.users} * kLatent);
  for (uint32_t u = 0; u < options.users; ++u) {
    User& user = m.users[u];
    const Philox4 w = draw(seed, kUserDraw, slot_index(u, 0));
    user.occupation = weighted_pick(occupation_weight, kOccupationCount, uniform_unit(w.v[0]));
    const Occupation& occupation = kOccupations[user.occupation];
    user.female = uniform_unit(w.v[1]) < occupation.female_share;
    const double age_sd = occupation.name == "student" ? 4.0
                          : occupation.mean_age > 60   ? 6.0
                                                       : 10.0;
    user.age = static_cast<int64_t>(std::clamp(
        std::round(occupation.mean_age + age_sd * normal(seed, kUserDraw, slot_index(u, 1))), 7.0,
        73.0));
    user.zip = uniform_below(w.v[2], 100000);
    user.rating_bias = kUserBiasSd * normal(seed, kUserBiasDraw, u);

    // Most ml-100k users rate in one sitting; the others come back over weeks.
    const Philox4 t = draw(seed, kUserTimeDraw, u);
    user.first_time =
        kFirstTimestamp + static_cast<int64_t>(uniform_unit(t.v[0]) * 0.9 * kSpanSeconds);
    const int64_t left = kFirstTimestamp + kSpanSeconds - user.first_time;
    user.active_seconds =
        uniform_unit(t.v[1]) < 0.55
            ? 600 + static_cast<int64_t>(uniform_unit(t.v[2]) * 3 * 3600)
            : 86400 + static_cast<int64_t>(uniform_unit(t.v[3]) * static_cast<double>(left));
    user.active_seconds = std::min(user.active_seconds, left);

    const double age_z = std::clamp((static_cast<double>(user.age) - 34.0) / 12.0, -2.0, 2.5);
    const double sex = user.female ? 1.0 : -1.0;
    double* affinity = &m.affinity[size_t{u} * kGenreCount];
    for (uint32_t g = 1; g < kGenreCount; ++g) {
      affinity[g] = kAgeShift[g] * age_z + kFemaleShift[g] * sex +
                    occupation_shift[size_t{user.occupation} * kGenreCount + g] +
                    kPersonalSd * normal(seed, kUserAffinityDraw, slot_index(u, g));
    }
    for (uint32_t f = 0; f < kLatent; ++f) {
      m.user_latent[size_t{u} * kLatent + f] =
          kLatentSd * normal(seed, kUserLatentDraw, slot_index(u, f));
    }
  }

  // Base popularity: Zipf over a random order of the items.
  m.items.resize(options.items);
  m.item_latent.resize(size_t{options.items} * kLatent);
  std::vector<std::pair<uint32_t, uint32_t>> order(options.items);
  for (uint32_t i = 0; i < options.items; ++i) order[i] = {draw(seed, kItemDraw, i).v[0], i};
  std::sort(order.begin(), order.end());
  for (uint32_t rank = 0; rank < options.items; ++rank) {
    m.items[order[rank].second].log_popularity =
        -kPopularityExponent * std::log(rank + kPopularityOffset);
  }
  for (uint32_t i = 0; i < options.items; ++i) {
    Item& item = m.items[i];
    const Philox4 w = draw(seed, kItemDraw, i);
    // 1 to 3 distinct genres, drawn by ml-100k's genre frequencies.
    const float count_draw = uniform_unit(w.v[1]);
    const uint32_t wanted = count_draw < 0.5f ? 1 : count_draw < 0.85f ? 2 : 3;
    item.genre_count = 0;
    for (uint32_t attempt = 0; attempt < 8 && item.genre_count < wanted; ++attempt) {
      const Philox4 g = draw(seed, kItemGenreDraw, slot_index(i, attempt / 4));
      const uint32_t genre =
          weighted_pick(kGenreWeight, kGenreCount, uniform_unit(g.v[attempt % 4]));
      if (std::find(item.genres, item.genres + item.genre_count, genre) ==
          item.genres + item.genre_count) {
        item.genres[item.genre_count++] = genre;
      }
    }
    item.quality = kQualitySd * normal(seed, kItemQualityDraw, i);
    for (uint32_t f = 0; f < kLatent; ++f) {
      m.item_latent[size_t{i} * kLatent + f] =
          kLatentSd * normal(seed, kItemLatentDraw, slot_index(i, f));
    }
    // Release years lean to the 1990s, as in ml-100k.
    const double age_years = -6.0 * std::log(open_unit(w.v[2], w.v[3]));
    item.year = 1998 - static_cast<int64_t>(std::min(age_years, 72.0));
    const Philox4 t = draw(seed, kTitleDraw, slot_index(i, 1));
    item.month = uniform_below(t.v[0], 12);
    item.day = 1 + uniform_below(t.v[1], 28);
    item.title = make_title(seed, i, item.year);
  }
  return m;
}

// How much user u likes item i, before popularity and chance.
double appeal(const Model& m, uint32_t u, uint32_t i) {
  const Item& item = m.items[i];
  const double* affinity = &m.affinity[size_t{u} * kGenreCount];
  double genre = 0;
  for (uint32_t k = 0; k < item.genre_count; ++k) genre += affinity[item.genres[k]];
  genre /= item.genre_count;
  const double* x = &m.user_latent[size_t{u} * kLatent];
  const double* y = &m.item_latent[size_t{i} * kLatent];
  double latent = 0;
  for (uint32_t f = 0; f < kLatent; ++f) latent += x[f] * y[f];
  return genre + latent + item.quality;
}

// The Gumbel key of the pair: a user's rated items are the ones with the largest keys, i.e. a
// sample without replacement with probabilities proportional to popularity x exp(sharpness x
// appeal).
double choice_key(const Model& m, uint32_t u, uint32_t i) {
  const Philox4 w = draw(m.options.seed, kChoiceDraw, pair_index(u, i));
  const double gumbel = -std::log(-std::log(open_unit(w.v[0], w.v[1])));
  return m.items[i].log_popularity + kChoiceSharpness * appeal(m, u, i) + gumbel;
}

// Ratings per user: the minimum plus a log-normal share of the rest, capped (water filling), in
// integers whose sum is exactly the requested total.
std::vector<uint32_t> ratings_per_user(const Model& m) {
  const MovieLens100kOptions& o = m.options;
  const uint32_t cap = max_ratings_per_user(o);
  if (o.ratings > uint64_t{o.users} * cap) {
    throw Error("generate movielens-100k: " + std::to_string(o.ratings) +
                " ratings are too many for " + std::to_string(o.users) + " users and " +
                std::to_string(o.items) + " items (a user rates at most " + std::to_string(cap) +
                " items)");
  }
  std::vector<double> activity(o.users);
  for (uint32_t u = 0; u < o.users; ++u) {
    activity[u] = std::exp(kActivitySd * normal(o.seed, kUserActivityDraw, u));
  }
  std::vector<uint32_t> counts(o.users, o.min_ratings_per_user);
  std::vector<char> capped(o.users, 0);
  uint64_t extra = o.ratings - uint64_t{o.users} * o.min_ratings_per_user;
  double total = 0;
  for (;;) {
    total = 0;
    for (uint32_t u = 0; u < o.users; ++u) {
      if (!capped[u]) total += activity[u];
    }
    bool changed = false;
    for (uint32_t u = 0; u < o.users && total > 0; ++u) {
      if (!capped[u] &&
          static_cast<double>(extra) * activity[u] / total > cap - o.min_ratings_per_user) {
        capped[u] = 1;
        counts[u] = cap;
        extra -= cap - o.min_ratings_per_user;
        changed = true;
      }
    }
    if (!changed) break;
  }
  // Floor of cumulative shares: no user passes the cap, and the last boundary is `extra` exactly
  // because the running sum repeats the total's additions in the same order.
  double cumulative = 0;
  uint64_t previous = 0;
  for (uint32_t u = 0; u < o.users; ++u) {
    if (capped[u]) continue;
    cumulative += activity[u];
    const auto boundary = std::min<uint64_t>(
        extra,
        static_cast<uint64_t>(std::floor(static_cast<double>(extra) * (cumulative / total))));
    counts[u] += static_cast<uint32_t>(boundary - previous);
    previous = boundary;
  }
  return counts;
}

struct Rating {
  uint32_t user;
  uint32_t item;
  int64_t time;
  double score;  // latent rating score, cut into 1..5 stars
  uint32_t order_key;
  uint32_t stars;
};

std::vector<Rating> draw_ratings(const Model& m) {
  const MovieLens100kOptions& o = m.options;
  const std::vector<uint32_t> counts = ratings_per_user(m);

  // Each user's items: the largest choice keys.
  std::vector<std::vector<std::pair<double, uint32_t>>> chosen(o.users);
  std::vector<uint32_t> item_count(o.items, 0);
  std::vector<std::pair<double, uint32_t>> keys(o.items);
  const auto larger = [](const std::pair<double, uint32_t>& a,
                         const std::pair<double, uint32_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  for (uint32_t u = 0; u < o.users; ++u) {
    for (uint32_t i = 0; i < o.items; ++i) keys[i] = {choice_key(m, u, i), i};
    std::nth_element(keys.begin(), keys.begin() + counts[u], keys.end(), larger);
    chosen[u].assign(keys.begin(), keys.begin() + counts[u]);
    for (const auto& [key, item] : chosen[u]) ++item_count[item];
  }

  // As in ml-100k, every item has a rating when there are enough ratings: an unrated item goes to
  // the user who wants it most among those whose weakest pick has another rater.
  std::vector<std::pair<double, uint32_t>> by_user(o.users);
  for (uint32_t i = 0; i < o.items; ++i) {
    if (item_count[i] > 0) continue;
    for (uint32_t u = 0; u < o.users; ++u) by_user[u] = {choice_key(m, u, i), u};
    std::sort(by_user.begin(), by_user.end(), larger);
    for (const auto& [key, u] : by_user) {
      auto& picks = chosen[u];
      size_t weakest = picks.size();
      for (size_t k = 0; k < picks.size(); ++k) {
        if (item_count[picks[k].second] >= 2 &&
            (weakest == picks.size() || larger(picks[weakest], picks[k]))) {
          weakest = k;
        }
      }
      if (weakest == picks.size()) continue;
      --item_count[picks[weakest].second];
      picks[weakest] = {key, i};
      ++item_count[i];
      break;
    }
  }

  std::vector<Rating> ratings;
  ratings.reserve(o.ratings);
  for (uint32_t u = 0; u < o.users; ++u) {
    const User& user = m.users[u];
    for (const auto& [key, i] : chosen[u]) {
      const Philox4 w = draw(o.seed, kChoiceDraw, pair_index(u, i));
      Rating r;
      r.user = u;
      r.item = i;
      r.time = user.first_time + static_cast<int64_t>(uniform_unit(w.v[2]) *
                                                      static_cast<double>(user.active_seconds));
      r.order_key = w.v[3];
      r.score = kRatingTaste * appeal(m, u, i) + user.rating_bias +
                kRatingNoiseSd * normal(o.seed, kRatingDraw, pair_index(u, i));
      ratings.push_back(r);
    }
  }

  // Cut points at ml-100k's rating shares: the histogram matches, and stars follow appeal.
  std::vector<double> scores(ratings.size());
  for (size_t k = 0; k < ratings.size(); ++k) scores[k] = ratings[k].score;
  std::sort(scores.begin(), scores.end());
  double cuts[4] = {};
  for (int c = 0; c < 4 && !scores.empty(); ++c) {
    const auto at = static_cast<size_t>(kRatingCumulative[c] * static_cast<double>(scores.size()));
    cuts[c] = scores[std::min(at, scores.size() - 1)];
  }
  for (Rating& r : ratings) {
    r.stars = 1;
    for (const double cut : cuts) r.stars += r.score >= cut ? 1 : 0;
  }

  // u.data lists ratings in no particular order.
  std::sort(ratings.begin(), ratings.end(), [](const Rating& a, const Rating& b) {
    if (a.order_key != b.order_key) return a.order_key < b.order_key;
    return a.user != b.user ? a.user < b.user : a.item < b.item;
  });
  return ratings;
}

void append_padded(std::string& out, uint32_t value, int width) {
  std::string digits;
  append_uint(digits, value);
  for (int k = static_cast<int>(digits.size()); k < width; ++k) out += '0';
  out += digits;
}

// IMDb's URLs percent-encode spaces, punctuation and Latin-1 bytes of the title.
void append_url_encoded(std::string& out, std::string_view text) {
  constexpr char kHex[] = "0123456789ABCDEF";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if ((byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z') ||
        (byte >= '0' && byte <= '9') || c == '(' || c == ')' || c == '-' || c == '\'') {
      out += c;
    } else {
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
  }
}

std::string items_text(const Model& m) {
  std::string out;
  for (uint32_t i = 0; i < m.items.size(); ++i) {
    const Item& item = m.items[i];
    append_uint(out, i + 1);
    out += '|';
    out += item.title;
    out += '|';
    append_padded(out, item.day, 2);
    out += '-';
    out += kMonths[item.month];
    out += '-';
    append_uint(out, static_cast<uint64_t>(item.year));
    out += "||http://us.imdb.com/M/title-exact?";
    append_url_encoded(out, item.title);
    for (uint32_t g = 0; g < kGenreCount; ++g) {
      const bool flagged = std::find(item.genres, item.genres + item.genre_count, g) !=
                           item.genres + item.genre_count;
      out += flagged ? "|1" : "|0";
    }
    out += '\n';
  }
  return out;
}

std::string users_text(const Model& m) {
  std::string out;
  for (uint32_t u = 0; u < m.users.size(); ++u) {
    const User& user = m.users[u];
    append_uint(out, u + 1);
    out += '|';
    append_uint(out, static_cast<uint64_t>(user.age));
    out += user.female ? "|F|" : "|M|";
    out += kOccupations[user.occupation].name;
    out += '|';
    append_padded(out, user.zip, 5);
    out += '\n';
  }
  return out;
}

std::string ratings_text(const std::vector<Rating>& ratings) {
  std::string out;
  out.reserve(ratings.size() * 24);
  for (const Rating& r : ratings) {
    append_uint(out, r.user + 1);
    out += '\t';
    append_uint(out, r.item + 1);
    out += '\t';
    append_uint(out, r.stars);
    out += '\t';
    append_uint(out, static_cast<uint64_t>(r.time));
    out += '\n';
  }
  return out;
}

}  // namespace

MovieLens100kFiles generate_movielens_100k(const MovieLens100kOptions& options,
                                           const fs::path& out_dir) {
  validate(options);
  const Model model = build_model(options);
  const std::vector<Rating> ratings = draw_ratings(model);

  std::error_code error;
  fs::create_directories(out_dir, error);
  if (error) {
    throw Error("generate movielens-100k: cannot create " + out_dir.string() + ": " +
                error.message());
  }
  MovieLens100kFiles files{out_dir / "u.data", out_dir / "u.item", out_dir / "u.user",
                           out_dir / "u.genre", out_dir / "u.occupation"};
  std::string genres, occupations;
  for (uint32_t g = 0; g < kGenreCount; ++g) {
    genres += kGenres[g];
    genres += '|';
    append_uint(genres, g);
    genres += '\n';
  }
  for (const Occupation& occupation : kOccupations) {
    occupations += occupation.name;
    occupations += '\n';
  }
  // Every file is complete under its temporary name before any is renamed into place.
  detail::AtomicOutputFile data(files.ratings), item(files.items), user(files.users),
      genre(files.genres), occupation(files.occupations);
  data.write(ratings_text(ratings));
  item.write(items_text(model));
  user.write(users_text(model));
  genre.write(genres);
  occupation.write(occupations);
  data.commit();
  item.commit();
  user.commit();
  genre.commit();
  occupation.commit();
  return files;
}

}  // namespace tastebud::datasets
