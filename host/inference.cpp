#include "host/inference.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <numeric>
#include <optional>
#include <ostream>
#include <span>
#include <sstream>
#include <unordered_map>

#include <omp.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cpu/topk.h"
#include "host/catalog_view.h"
#include "host/features.h"
#include "host/slate.h"
#include "tastebud/atomic_file.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/engine/comm.h"
#include "tastebud/engine/gpu_scorer.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/engine/scorer.h"
#include "tastebud/engine/train_options.h"  // kMaxThreads
#include "tastebud/error.h"
#include "tastebud/loss_math.h"
#include "tastebud/read_file.h"
#include "tastebud/json_input.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr uint32_t kMaxResults = 500;               // the service's cap per query
constexpr size_t kMaxAttributeItems = 100;          // items that stand for an itemAttributes query
constexpr size_t kChunkLines = 4096;                // lines answered together between writes

// The k best of many scores (NaN never selected; ties to the lower index), in index order: the
// candidates of two-stage retrieval. cpu::top_k keeps a heap, the right tool for the final 25 but
// O(n log k) when scores arrive in rising order, as a young model's GMF scores often do. Here the
// k-th best value comes from nth_element on a copy of the floats (linear, no indirection), and
// one pass collects the items above it, then the ties at it.
void select_candidates(std::span<const float> scores, size_t k, std::vector<uint32_t>& out) {
  thread_local std::vector<float> values;
  values.resize(scores.size());
  size_t n = 0;
  for (float x : scores)
    if (!std::isnan(x)) values[n++] = x;
  out.clear();
  if (k == 0) return;
  if (n <= k) {
    for (uint32_t i = 0; i < scores.size(); ++i)
      if (!std::isnan(scores[i])) out.push_back(i);
    return;
  }
  // Most of the catalog is far below the k-th value: a strided sample estimates a bound under it
  // (with a wide margin), and only the values above that bound go through nth_element. When the
  // estimate is too high to leave k values, the whole set is used: the result is exact either way.
  if (n > 16 * k && n > 8192) {
    thread_local std::vector<float> sample;
    const size_t m = 4096, stride = n / m;
    sample.resize(m);
    for (size_t j = 0; j < m; ++j) sample[j] = values[j * stride];
    const size_t rank = std::min(m - 1, 2 * (k * m / n) + 32);
    std::nth_element(sample.begin(), sample.begin() + rank, sample.end(), std::greater<float>());
    const float bound = sample[rank];
    size_t kept = 0;
    for (size_t j = 0; j < n; ++j)
      if (values[j] >= bound) values[kept++] = values[j];
    if (kept >= k) {
      n = kept;
    } else {
      n = 0;
      for (float x : scores)
        if (!std::isnan(x)) values[n++] = x;
    }
  }
  std::nth_element(values.begin(), values.begin() + (k - 1), values.begin() + n, std::greater<float>());
  const float threshold = values[k - 1];
  out.resize(k);
  size_t above = 0;
  for (uint32_t i = 0; i < scores.size(); ++i) above += scores[i] > threshold;
  size_t ties = k - above, at = 0;
  for (uint32_t i = 0; i < scores.size() && at < k; ++i) {
    if (scores[i] > threshold) {
      out[at++] = i;
    } else if (scores[i] == threshold && ties > 0) {
      out[at++] = i;
      --ties;
    }
  }
}

bool is_neumf_family(const std::string& kind) {
  return kind == "neumf" || kind == "gmf" || kind == "mlp" || kind == "mf";
}

// A query's own problem: it becomes the line's "error".
struct LineError : Error {
  using Error::Error;
};

using LineResult = Recommender::LineOutcome;

bool blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

std::string dump_line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A query line as JSON; LineError for a line that is not JSON, nests too deep, or holds a number
// a double cannot hold (nlohmann throws out_of_range for 1e999, not parse_error).
json parse_line(std::string_view line) {
  if (json_nested_deeper_than(line, kMaxJsonDepth))
    throw LineError(fmt::format("not a query: JSON nested deeper than {} levels", kMaxJsonDepth));
  try {
    return json::parse(line);
  } catch (const json::exception& e) {
    throw LineError(fmt::format("not valid JSON: {}", e.what()));
  }
}

// The result line of a line whose problem came before it could be echoed as JSON: the input is
// echoed as its text.
std::string error_line(std::string_view line, const char* message, LineResult& result) {
  result.error = true;
  result.fallback = false;
  try {
    return dump_line(json{{"input", std::string(line)}, {"output", nullptr}, {"error", message}});
  } catch (...) {  // out of memory for the echo: the line's error still comes out
    return R"({"input": null, "output": null, "error": "the line could not be echoed"})";
  }
}

// The result line {"input", "output", "error"} of an input already parsed: whatever `answer`
// throws becomes the "error", with a null output. Nothing escapes, so a line never ends the job
// (these run inside OpenMP loops, where an escaping exception is std::terminate).
template <class Answer>
std::string answered_line(json input, LineResult& result, Answer&& answer) noexcept {
  try {
    json out{{"input", std::move(input)}, {"output", nullptr}, {"error", nullptr}};
    try {
      out["output"] = answer(out["input"]);
    } catch (const std::exception& e) {
      out["output"] = nullptr;
      out["error"] = e.what();
      result.error = true;
      result.fallback = false;
    }
    return dump_line(out);
  } catch (const std::exception& e) {
    return error_line("", e.what(), result);
  } catch (...) {
    return error_line("", "unknown error", result);
  }
}

// One result line for one query line. A line that is not JSON, not an object, or that `answer`
// throws on gets its message in "error" and a null output; nothing escapes.
template <class Answer>
std::string result_line(std::string_view line, const char* example, LineResult& result, Answer&& answer) noexcept {
  json input;
  try {
    input = parse_line(line);
  } catch (const std::exception& e) {
    return error_line(line, e.what(), result);
  }
  return answered_line(std::move(input), result, [&](const json& in) {
    if (!in.is_object()) throw LineError(fmt::format("a query must be a JSON object such as {}", example));
    return answer(in);
  });
}

}  // namespace

// ---- Model directory and dataset -----------------------------------------------------------------

namespace {

// A metadata model is served as its folded id-only twin (fold_features): every user and item of
// the model, cold ones included, scores with the metadata of the dataset it was trained on,
// matched by id, so the scorers need not know about features. With user metadata, users the
// dataset gained after training (an incremental import of Users) join the model as metadata-only
// users: a zero id row plus their features, scored like users without interactions were in
// training. m.user_ids and m.seen grow to match; m.trained_users keeps the model's own count.
ModelParams fold_dataset_features(const ModelParams& params, ModelData& m, const datasets::Dataset& dataset) {
  auto rows_of = [](const std::vector<std::string>& model_ids, const datasets::StringTable& ids) {
    std::unordered_map<std::string, uint32_t> index;
    for (uint32_t d = 0; d < ids.size(); ++d) index.emplace(std::string(ids[d]), d);
    std::vector<int64_t> rows(model_ids.size(), -1);
    for (size_t x = 0; x < model_ids.size(); ++x) {
      const auto it = index.find(model_ids[x]);
      if (it != index.end()) rows[x] = it->second;
    }
    return rows;
  };
  ModelParams widened = params;
  ModelConfig& c = widened.config;
  if (c.user_features.enabled()) {
    const std::unordered_map<std::string, uint32_t> known = index_ids(m.user_ids);
    for (uint32_t d = 0; d < dataset.user_ids.size(); ++d) {
      const std::string id(dataset.user_ids[d]);
      if (!known.contains(id) && !dataset.users.has_row.empty() && dataset.users.has_row[d]) m.user_ids.push_back(id);
    }
    const uint32_t added = static_cast<uint32_t>(m.user_ids.size()) - c.num_users;
    if (added > 0) {
      c.num_users += added;
      widened.user_gmf.shape[0] = widened.user_mlp.shape[0] = c.num_users;
      widened.user_gmf.values.resize(widened.user_gmf.values.size() + static_cast<size_t>(added) * widened.user_gmf.cols(), 0.0f);
      widened.user_mlp.values.resize(widened.user_mlp.values.size() + static_cast<size_t>(added) * widened.user_mlp.cols(), 0.0f);
      if (!m.seen.offsets.empty()) m.seen.offsets.resize(c.num_users + 1, m.seen.offsets.back());
    }
  }
  FeatureInputs users, items;
  if (c.user_features.enabled()) {
    users = encode_features(dataset.users, c.user_features, c.num_users, rows_of(m.user_ids, dataset.user_ids));
  }
  if (c.item_features.enabled()) {
    items = encode_features(dataset.items, c.item_features, c.num_items, rows_of(m.item_ids, dataset.item_ids));
  }
  return fold_features(widened, users, items);
}

// The values of the model's contextual fields, from the dataset it was trained on: value v of
// field k is context-table row categorical_base(k) + v.
std::vector<ContextValues> context_values(const FeatureSpec& spec, const datasets::Dataset& dataset) {
  std::vector<ContextValues> out;
  for (size_t k = 0; k < spec.categorical.size(); ++k) {
    ContextValues& values = out.emplace_back();
    values.field = spec.categorical[k];
    for (const auto& field : dataset.interactions.context) {
      if (field.name != values.field) continue;
      const uint32_t n = std::min<uint32_t>(spec.categorical_rows[k], static_cast<uint32_t>(field.vocabulary.size()));
      for (uint32_t v = 0; v < n; ++v)
        values.rows.emplace(std::string(field.vocabulary[v]), static_cast<uint32_t>(spec.categorical_base(k) + v));
    }
  }
  return out;
}

}  // namespace

ModelData load_model_dir(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw Error(fmt::format("--model {}: not a directory", dir.string()));
  ModelData m;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_file(dir / "config.json"));
    m.kind = config.at("model").get<std::string>();
    m.data = config.value("data", std::string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not a tastebud model config: {}", (dir / "config.json").string(), e.what()));
  }
  check_file_checksums(config, dir);
  m.user_ids = read_ids(dir / "user_ids.json");
  m.item_ids = read_ids(dir / "item_ids.json");
  if (fs::exists(dir / "seen.bin")) m.seen = read_seen(dir / "seen.bin", static_cast<uint32_t>(m.item_ids.size()));
  if (is_neumf_family(m.kind)) {
    if (!fs::exists(dir / "model.bin"))
      throw Error(fmt::format("{}: no model.bin; training has not finished an epoch yet", dir.string()));
    m.params = load_model(dir / "model.bin");
    const ModelConfig& c = m.params->config;
    if (c.num_users != m.user_ids.size() || c.num_items != m.item_ids.size())
      throw Error(fmt::format("{}: model.bin has {} users and {} items but the id files list {} and {}",
                              dir.string(), c.num_users, c.num_items, m.user_ids.size(), m.item_ids.size()));
    m.trained_users = c.num_users;
    // Metadata and context values come from the dataset the model was trained on, opened once.
    if (c.has_context() || c.has_metadata()) {
      TB_CHECK(!m.data.empty() && fs::is_directory(m.data),
               fmt::format("{}: the model uses {} but its dataset ({}) is gone", dir.string(),
                           c.has_metadata() ? "metadata" : "context", m.data.string()));
      const datasets::Dataset dataset = datasets::Dataset::open(m.data);
      if (c.has_context()) m.context = context_values(c.context, dataset);
      if (c.has_metadata()) m.params = fold_dataset_features(*m.params, m, dataset);  // may add users
    }
  } else if (is_recipe(m.kind)) {
    m.recipe = read_recipe(dir / "recipe.bin", static_cast<uint32_t>(m.item_ids.size()));
    if (m.recipe.popularity.size() != m.item_ids.size())
      throw Error(fmt::format("{}: recipe.bin covers {} items but item_ids.json lists {}", dir.string(),
                              m.recipe.popularity.size(), m.item_ids.size()));
    if (!m.recipe.latest.offsets.empty() && m.recipe.latest.offsets.size() != m.user_ids.size() + 1)
      throw Error(fmt::format("corrupt: {}: latest items of {} users but user_ids.json lists {}",
                              (dir / "recipe.bin").string(), m.recipe.latest.offsets.size() - 1, m.user_ids.size()));
  } else {
    throw Error(fmt::format("{}: unknown model kind '{}'", dir.string(), m.kind));
  }
  if (!m.seen.offsets.empty() && m.seen.offsets.size() != m.user_ids.size() + 1)
    throw Error(fmt::format("{}: seen.bin covers {} users but user_ids.json lists {}", dir.string(),
                            m.seen.offsets.size() - 1, m.user_ids.size()));
  return m;
}

InferenceContext load_context(const ModelData& model, const fs::path& dataset_dir) {
  InferenceContext context;
  ItemCatalog& catalog = context.catalog;
  catalog.item_ids = model.item_ids;
  if (dataset_dir.empty()) return context;
  auto dataset = std::make_shared<datasets::Dataset>(datasets::Dataset::open(dataset_dir));
  const std::unordered_map<std::string, uint32_t> model_items = index_ids(model.item_ids);
  // Dataset rows may differ from model rows after an incremental import: match them by id.
  const uint32_t n = static_cast<uint32_t>(model.item_ids.size());
  std::vector<int64_t> row_of(n, -1);
  auto to_model = std::make_shared<std::vector<int64_t>>(dataset->num_items(), -1);
  for (uint32_t d = 0; d < dataset->num_items(); ++d) {
    const auto it = model_items.find(std::string(dataset->item_ids[d]));
    if (it != model_items.end()) {
      row_of[it->second] = d;
      (*to_model)[d] = it->second;
    }
  }
  const datasets::Metadata& items = dataset->items;
  for (const datasets::CategoricalField& f : items.categorical) {
    ItemCategoricalColumn col;
    col.name = f.name;
    for (size_t k = 0; k < f.vocabulary.size(); ++k) col.vocabulary.emplace_back(f.vocabulary[k]);
    col.offsets.push_back(0);
    for (uint32_t i = 0; i < n; ++i) {
      if (row_of[i] >= 0 && !f.offsets.empty()) {
        for (uint64_t k = f.offsets[row_of[i]]; k < f.offsets[row_of[i] + 1]; ++k) col.values.push_back(f.values[k]);
      }
      col.offsets.push_back(col.values.size());
    }
    catalog.categorical.push_back(std::move(col));
  }
  for (const datasets::NumericalField& f : items.numerical) {
    ItemNumericalColumn col{f.name, std::vector<double>(n, NAN)};
    for (uint32_t i = 0; i < n; ++i)
      if (row_of[i] >= 0 && !f.values.empty()) col.values[i] = f.values[row_of[i]];
    catalog.numerical.push_back(std::move(col));
  }
  if (!items.creation_timestamp.empty()) {
    ItemNumericalColumn col{"CREATION_TIMESTAMP", std::vector<double>(n, NAN)};
    for (uint32_t i = 0; i < n; ++i) {
      if (row_of[i] >= 0 && items.creation_timestamp[row_of[i]] != INT64_MIN)
        col.values[i] = static_cast<double>(items.creation_timestamp[row_of[i]]);
    }
    catalog.numerical.push_back(std::move(col));
  }
  for (const datasets::TextualField& f : items.textual) catalog.textual.push_back(f.name);
  for (size_t k = 0; k < dataset->event_types.size(); ++k) catalog.event_types.emplace_back(dataset->event_types[k]);
  catalog.users = user_catalog(model.user_ids, *dataset);
  context.item_time = item_times(*dataset, row_of, *to_model, catalog.now);

  auto users = std::make_shared<std::unordered_map<std::string, uint32_t>>();
  users->reserve(dataset->num_users());
  for (uint32_t u = 0; u < dataset->num_users(); ++u) users->emplace(std::string(dataset->user_ids[u]), u);
  context.user_events = [dataset, users, to_model](std::string_view user_id) {
    std::vector<UserEvent> events;
    const auto it = users->find(std::string(user_id));
    if (it == users->end()) return events;
    const datasets::Interactions& x = dataset->interactions;
    for (uint64_t r = x.user_offsets[it->second]; r < x.user_offsets[it->second + 1]; ++r) {
      const int64_t item = (*to_model)[x.item[r]];
      if (item >= 0) events.push_back({static_cast<uint32_t>(item), x.event_type.empty() ? 0u : x.event_type[r]});
    }
    return events;
  };
  return context;
}

// ---- Recommender -----------------------------------------------------------------------------------

// A user's top-K as the GPU returns it: logits, best first; item UINT32_MAX ends a short list.
struct TopK {
  std::vector<uint32_t> items;
  std::vector<float> scores;
};

constexpr const char* kContextIgnored =
    "context ignored: the model was trained without contextual fields";
constexpr const char* kMetadataOnlyUser = "user unknown to the model: scored from the user's metadata alone";

struct Recommender::Impl {
  ModelData model;
  InferenceContext context;
  InferenceOptions options;
  std::optional<Filter> filter;
  std::unordered_map<std::string, uint32_t> user_index, item_index;
  std::vector<float> popularity;
  std::vector<uint32_t> popular_order;  // by popularity, then index
  // What a popularity fallback (unknown user or item) answers as the score, on the model's own
  // scale: neural models, the share of training users who interacted with the item (a probability,
  // as their sigmoid scores are); recipes, the recipe's popularity (what their known users see).
  std::vector<float> fallback_score;
  std::unique_ptr<Scorer> scorer;
  std::unique_ptr<GpuScorer> gpu;  // --device cuda (or auto with a GPU): top-K of plain user queries
  std::vector<float> item_vectors;  // NeuMF: unit-length [gmf | mlp] item embeddings
  uint32_t item_dim = 0;
  SeenItems item_users;  // seen transposed: item -> users (segments of the sims recipe)
  // The job configuration's parts (prepare_job).
  std::vector<Filter> promotion_filters;  // options.job.promotions' filters
  std::vector<uint8_t> explorable;        // within the exploration age cut-off
  std::vector<double> popularity_percentile, freshness_percentile;  // per item, for ranking influence
  std::vector<MetadataColumn> metadata_columns;

  uint32_t num_items() const { return static_cast<uint32_t>(model.item_ids.size()); }
  // Recipes whose answers are item-to-item lists, short lists filled with popular items.
  bool item_lists() const { return model.kind == "sims" || model.kind == "transitions"; }
  uint32_t num_users() const { return static_cast<uint32_t>(model.user_ids.size()); }
  std::span<const uint32_t> seen_of(uint32_t user) const {
    if (model.seen.offsets.empty()) return {};
    return {model.seen.items.data() + model.seen.offsets[user], model.seen.items.data() + model.seen.offsets[user + 1]};
  }

  void prepare() {
    user_index = index_ids(model.user_ids);
    item_index = index_ids(model.item_ids);
    if (is_recipe(model.kind)) {
      popularity = model.recipe.popularity;
    } else {
      // The NeuMF family keeps no counts: the training positives per item stand in.
      popularity.assign(num_items(), 0.0f);
      for (uint32_t i : model.seen.items) popularity[i] += 1.0f;
    }
    fallback_score = popularity;
    const uint32_t trained = std::min(model.trained_users, num_users());
    if (!is_recipe(model.kind) && trained > 0)
      for (float& x : fallback_score) x /= static_cast<float>(trained);
    popular_order.resize(num_items());
    std::iota(popular_order.begin(), popular_order.end(), 0);
    std::stable_sort(popular_order.begin(), popular_order.end(),
                     [&](uint32_t a, uint32_t b) { return popularity[a] > popularity[b]; });
    if (model.params) {
      scorer = std::make_unique<Scorer>(*model.params);
      const ModelConfig& c = model.params->config;
      const uint32_t f = c.has_gmf() ? c.factors : 0, e = c.mlp_embedding();
      item_dim = f + e;
      item_vectors.resize(static_cast<size_t>(num_items()) * item_dim);
      for (uint32_t i = 0; i < num_items(); ++i) {
        float* v = item_vectors.data() + static_cast<size_t>(i) * item_dim;
        for (uint32_t j = 0; j < f; ++j) v[j] = model.params->item_gmf.values[static_cast<size_t>(i) * f + j];
        for (uint32_t j = 0; j < e; ++j) v[f + j] = model.params->item_mlp.values[static_cast<size_t>(i) * e + j];
        double norm = 0;
        for (uint32_t j = 0; j < item_dim; ++j) norm += double(v[j]) * v[j];
        const float scale = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
        for (uint32_t j = 0; j < item_dim; ++j) v[j] *= scale;
      }
    }
    if (model.kind == "sims" && !model.seen.offsets.empty()) {
      item_users.offsets.assign(num_items() + 1, 0);
      for (uint32_t i : model.seen.items) ++item_users.offsets[i + 1];
      for (uint32_t i = 0; i < num_items(); ++i) item_users.offsets[i + 1] += item_users.offsets[i];
      item_users.items.resize(model.seen.items.size());
      std::vector<uint64_t> fill(item_users.offsets.begin(), item_users.offsets.end() - 1);
      for (uint32_t u = 0; u < num_users(); ++u)
        for (uint32_t i : seen_of(u)) item_users.items[fill[i]++] = u;
    }
  }

  // ---- Line parsing ----

  struct Query {
    std::optional<std::string> user_id, item_id;
    std::optional<std::vector<std::string>> item_list;
    uint32_t k = 25;
    FilterValues values;
    std::vector<float> context;  // the context vector; empty: none
    bool context_ignored = false;  // a "context" the model has no contextual fields for
  };

  static std::optional<std::string> string_field(const json& j, const char* key) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) throw LineError(fmt::format("{} must be a string, not {}", key, it->dump()));
    return it->get<std::string>();
  }

  static uint32_t num_results_of(const json& j, uint32_t fallback, uint32_t max) {
    const auto it = j.find("numResults");
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > max)
      throw LineError(fmt::format("numResults must be an integer from 1 to {}, not {}", max, it->dump()));
    return static_cast<uint32_t>(it->get<int64_t>());
  }

  Query parse_query(const json& j) const {
    Query q;
    q.user_id = string_field(j, "userId");
    q.item_id = string_field(j, "itemId");
    if (!q.user_id && !q.item_id)
      throw LineError("the query names neither a userId nor an itemId");
    if (q.user_id && q.item_id)
      throw LineError("give a userId (recommendations, or ranking with itemList) or an itemId (related items), not both");
    if (const auto it = j.find("itemList"); it != j.end() && !it->is_null()) {
      if (!q.user_id) throw LineError("itemList needs a userId to rank for");
      if (!it->is_array()) throw LineError("itemList must be an array of item ids");
      std::vector<std::string> list;
      for (const json& v : *it) {
        if (!v.is_string()) throw LineError(fmt::format("itemList must hold item id strings, not {}", v.dump()));
        list.push_back(v.get<std::string>());
      }
      q.item_list = std::move(list);
    }
    q.k = num_results_of(j, options.num_results, kMaxResults);
    if (const auto it = j.find("filterValues"); it != j.end() && !it->is_null()) {
      if (!it->is_object()) throw LineError("filterValues must be an object, e.g. {\"GENRE\": \"\\\"Comedy\\\"\"}");
      for (auto v = it->begin(); v != it->end(); ++v) {
        if (!v.value().is_string())
          throw LineError(fmt::format("filterValues.{} must be a string of quoted values, e.g. \"\\\"Comedy\\\"\"", v.key()));
        q.values[v.key()] = v.value().get<std::string>();
      }
    }
    if (const auto it = j.find("context"); it != j.end() && !it->is_null()) {
      if (!it->is_object()) throw LineError("context must be an object of field values, e.g. {\"DEVICE_TYPE\": \"mobile\"}");
      if (model.params && model.params->config.has_context()) q.context = context_of(*it);
      else q.context_ignored = !it->empty();
    }
    return q;
  }

  // The context vector of a query's "context" object.
  std::vector<float> context_of(const json& object) const {
    FeatureInputs rows;
    rows.entities = 1;
    rows.offsets = {0};
    for (auto v = object.begin(); v != object.end(); ++v) {
      const auto field = std::find_if(model.context.begin(), model.context.end(),
                                      [&](const ContextValues& c) { return c.field == v.key(); });
      if (field == model.context.end()) {
        std::string names;
        for (const ContextValues& c : model.context) names += (names.empty() ? "" : ", ") + c.field;
        throw LineError(fmt::format("context.{}: the model was trained with the contextual fields {}", v.key(), names));
      }
      if (!v.value().is_string()) throw LineError(fmt::format("context.{} must be a string", v.key()));
      const auto row = field->rows.find(v.value().get<std::string>());
      if (row == field->rows.end()) continue;  // a value the model never saw adds nothing
      rows.rows.push_back(row->second);
      rows.weights.push_back(1.0f);
    }
    rows.offsets.push_back(rows.rows.size());
    return context_vector(*model.params, rows, 0);
  }

  // ---- Answers ----

  // Items the filter lets through for this query; empty means all.
  std::vector<uint8_t> allowed_items(const Query& q) const {
    std::vector<uint8_t> allowed;
    if (!filter) return allowed;
    if (filter->selects_users())
      throw LineError("the filter selects users (UserID expressions): that is a batch-segment filter");
    std::vector<UserEvent> events;
    if (filter->uses_interactions() && q.user_id && context.user_events) events = context.user_events(*q.user_id);
    filter->evaluate(FilterQuery{q.values, events, user_of(q), item_of(q)}, allowed);
    return allowed;
  }

  int64_t user_of(const Query& q) const {
    if (!q.user_id) return -1;
    const auto it = user_index.find(*q.user_id);
    return it == user_index.end() ? int64_t{-1} : int64_t{it->second};
  }
  int64_t item_of(const Query& q) const {
    if (!q.item_id) return -1;
    const auto it = item_index.find(*q.item_id);
    return it == item_index.end() ? int64_t{-1} : int64_t{it->second};
  }

  // Popular items, best first, among the allowed ones, skipping `skip`.
  void popular(size_t k, const std::vector<uint8_t>& allowed, const std::vector<uint8_t>& skip,
               std::vector<uint32_t>& items, std::vector<float>& scores) const {
    for (uint32_t i : popular_order) {
      if (items.size() >= k) break;
      if ((!allowed.empty() && !allowed[i]) || (!skip.empty() && skip[i])) continue;
      items.push_back(i);
      scores.push_back(fallback_score[i]);
    }
  }

  // NaN where an item may not be recommended, so that top_k never selects it.
  static void mask_scores(std::vector<float>& s, const std::vector<uint8_t>& allowed) {
    if (allowed.empty()) return;
    for (size_t i = 0; i < s.size(); ++i)
      if (!allowed[i]) s[i] = NAN;
  }

  // sims: summed similarity of each item to the user's history (NaN where nothing is related).
  void sims_user_scores(uint32_t user, std::vector<float>& s) const {
    s.assign(num_items(), NAN);
    const ItemNeighbors& nb = model.recipe.neighbors;
    for (uint32_t h : seen_of(user)) {
      for (uint64_t k = nb.offsets[h]; k < nb.offsets[h + 1]; ++k) {
        float& x = s[nb.items[k]];
        x = std::isnan(x) ? nb.scores[k] : x + nb.scores[k];
      }
    }
  }

  // Relevance of every item for a known user (logits for the NeuMF family; NaN: unrelated).
  void user_scores(uint32_t user, const Query& q, std::vector<float>& s) const {
    if (scorer) {
      s.resize(num_items());
      scorer->score_all(user, s, q.context);
    } else if (model.kind == "sims") {
      sims_user_scores(user, s);
    } else if (model.kind == "transitions") {
      transition_scores(model.recipe.neighbors, model.recipe.latest, user, s);
    } else {
      s = model.recipe.item_scores;
    }
  }

  // Relevance of every item to a known item: the cosine of the item embeddings, the recipe's
  // scores, or (sims, transitions) the item's neighbour scores, NaN elsewhere.
  void item_scores(uint32_t item, std::vector<float>& s) const {
    if (item_lists()) {
      s.assign(num_items(), NAN);
      const ItemNeighbors& nb = model.recipe.neighbors;
      for (uint64_t k = nb.offsets[item]; k < nb.offsets[item + 1]; ++k) s[nb.items[k]] = nb.scores[k];
    } else if (scorer) {
      s.resize(num_items());
      const float* v = item_vectors.data() + static_cast<size_t>(item) * item_dim;
      for (uint32_t i = 0; i < num_items(); ++i) {
        const float* w = item_vectors.data() + static_cast<size_t>(i) * item_dim;
        float z = 0;
        for (uint32_t j = 0; j < item_dim; ++j) z += v[j] * w[j];
        s[i] = z;
      }
    } else {
      s = model.recipe.item_scores;
    }
  }

  void recommend_for_user(uint32_t user, const Query& q, const std::vector<uint8_t>& allowed,
                          std::vector<uint32_t>& items, std::vector<float>& scores, std::string& reason,
                          const TopK* precomputed) const {
    if (precomputed) {  // the GPU's answer for this line (answer_chunk)
      for (size_t k = 0; k < precomputed->items.size() && items.size() < q.k; ++k) {
        if (precomputed->items[k] == UINT32_MAX) break;
        items.push_back(precomputed->items[k]);
        scores.push_back(sigmoid(precomputed->scores[k]));
      }
      return;
    }
    thread_local std::vector<float> s;
    thread_local std::vector<uint32_t> top, candidates;
    thread_local std::vector<float> candidate_scores;
    const bool remove_seen = !options.keep_seen;
    auto mask_seen = [&] {
      if (remove_seen)
        for (uint32_t i : seen_of(user)) s[i] = NAN;
    };
    if (scorer && options.candidates > 0 && options.candidates < num_items()) {
      // Two-stage: the GMF dot product over the catalog picks candidates, the full model reranks.
      s.resize(num_items());
      scorer->gmf_scores(user, s);
      mask_scores(s, allowed);
      mask_seen();
      select_candidates(s, options.candidates, candidates);
      candidate_scores.resize(candidates.size());
      scorer->score(user, candidates, candidate_scores, q.context);
      cpu::top_k(candidate_scores, q.k, top);
      for (uint32_t c : top) {
        items.push_back(candidates[c]);
        scores.push_back(sigmoid(candidate_scores[c]));
      }
      return;
    }
    user_scores(user, q, s);
    mask_scores(s, allowed);
    mask_seen();
    cpu::top_k(s, q.k, top);
    for (uint32_t i : top) {
      items.push_back(i);
      scores.push_back(scorer ? sigmoid(s[i]) : s[i]);
    }
    if (items.size() < q.k && item_lists()) {
      // The service fills a short related list with popular items; they carry no similarity.
      std::vector<uint8_t> skip(num_items(), 0);
      for (uint32_t i : items) skip[i] = 1;
      if (remove_seen)
        for (uint32_t i : seen_of(user)) skip[i] = 1;
      const size_t before = items.size();
      popular(q.k, allowed, skip, items, scores);
      std::fill(scores.begin() + before, scores.end(), 0.0f);
      if (items.size() > before) reason = "fewer related items than numResults: filled with popular items (score 0)";
    }
  }

  void related(uint32_t item, const Query& q, const std::vector<uint8_t>& allowed,
               std::vector<uint32_t>& items, std::vector<float>& scores, std::string& reason) const {
    thread_local std::vector<float> s;
    thread_local std::vector<uint32_t> top;
    if (item_lists()) {
      const ItemNeighbors& nb = model.recipe.neighbors;
      for (uint64_t k = nb.offsets[item]; k < nb.offsets[item + 1] && items.size() < q.k; ++k) {
        if (!allowed.empty() && !allowed[nb.items[k]]) continue;
        items.push_back(nb.items[k]);
        scores.push_back(nb.scores[k]);
      }
      if (items.size() < q.k) {
        std::vector<uint8_t> skip(num_items(), 0);
        skip[item] = 1;
        for (uint32_t i : items) skip[i] = 1;
        const size_t before = items.size();
        popular(q.k, allowed, skip, items, scores);
        std::fill(scores.begin() + before, scores.end(), 0.0f);
        if (items.size() > before) reason = "fewer related items than numResults: filled with popular items (score 0)";
      }
      return;
    }
    item_scores(item, s);  // nearest items by the cosine of the learned item embeddings
    s[item] = NAN;
    mask_scores(s, allowed);
    cpu::top_k(s, q.k, top);
    for (uint32_t i : top) {
      items.push_back(i);
      scores.push_back(s[i]);
    }
  }

  json rank(const Query& q, const std::vector<uint8_t>& allowed, std::string& reason, bool& fallback) const {
    std::vector<uint32_t> known;
    std::vector<std::string> unknown;
    for (const std::string& id : *q.item_list) {
      const auto it = item_index.find(id);
      if (it == item_index.end()) unknown.push_back(id);
      else if (allowed.empty() || allowed[it->second]) known.push_back(it->second);
    }
    std::vector<float> s(known.size());
    const auto user = user_index.find(*q.user_id);
    if (user == user_index.end()) {
      for (size_t k = 0; k < known.size(); ++k) s[k] = fallback_score[known[k]];
      reason = "unknown user: ranked by popularity";
      fallback = true;
    } else if (scorer) {
      scorer->score(user->second, known, s, q.context);
      for (float& x : s) x = sigmoid(x);
      if (user->second >= model.trained_users) reason = kMetadataOnlyUser;
    } else if (model.kind == "sims") {
      std::vector<float> all;
      sims_user_scores(user->second, all);
      for (size_t k = 0; k < known.size(); ++k) s[k] = std::isnan(all[known[k]]) ? 0.0f : all[known[k]];
    } else if (model.kind == "transitions") {
      std::vector<float> all;
      transition_scores(model.recipe.neighbors, model.recipe.latest, user->second, all);
      for (size_t k = 0; k < known.size(); ++k) s[k] = std::isnan(all[known[k]]) ? 0.0f : all[known[k]];
    } else {
      for (size_t k = 0; k < known.size(); ++k) s[k] = model.recipe.item_scores[known[k]];
    }
    std::vector<size_t> order(known.size());
    std::iota(order.begin(), order.end(), 0);
    // transitions: the items the user's latest items never led to (score 0) follow by popularity.
    const bool by_popularity = model.kind == "transitions";
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (s[a] != s[b] || !by_popularity) return s[a] > s[b];
      return popularity[known[a]] > popularity[known[b]];
    });
    json items = json::array(), scores = json::array();
    for (size_t k : order) {
      items.push_back(model.item_ids[known[k]]);
      scores.push_back(s[k]);
    }
    for (const std::string& id : unknown) {
      items.push_back(id);
      scores.push_back(nullptr);
    }
    return json{{"recommendedItems", std::move(items)}, {"scores", std::move(scores)}};
  }

  // ---- Answers a job configuration shapes (host/slate.h) ----

  void prepare_job() {
    const JobConfig& job = options.job;
    for (size_t p = 0; p < job.promotions.size(); ++p) {
      const std::string at = fmt::format("{}: promotions[{}].filterExpression", job.source, p);
      try {
        promotion_filters.emplace_back(job.promotions[p].filter_expression, context.catalog);
      } catch (const FilterError& e) {
        throw Error(fmt::format("{}: {}", at, e.what()));
      }
      if (promotion_filters.back().selects_users())
        throw Error(fmt::format("{}: a promotion selects items (ItemID), not users", at));
    }
    if (job.exploration_weight_or_default() > 0) {
      // "now" is the dataset's latest timestamp (or --now), so answers do not depend on the clock.
      const double now = context.catalog.now, cutoff = job.exploration_age_cutoff_or_default() * 86400.0;
      explorable.assign(num_items(), 0);
      for (uint32_t i = 0; i < num_items(); ++i) {
        const double t = context.item_time.empty() ? NAN : context.item_time[i];
        // An item with no date and no interaction is as new as the model knows.
        explorable[i] = std::isnan(t) ? popularity[i] == 0 : !std::isnan(now) && now - t <= cutoff;
      }
    }
    if (job.popularity_influence > 0 || job.freshness_influence > 0) {
      popularity_percentile = percentiles(std::vector<double>(popularity.begin(), popularity.end()));
      std::vector<double> time = context.item_time;
      time.resize(num_items(), NAN);  // unknown ages rank oldest
      freshness_percentile = percentiles(time);
    }
    metadata_columns = find_metadata_columns(job.metadata_columns, context.catalog);
  }

  json item_metadata(int64_t item) const { return host::item_metadata(context.catalog, metadata_columns, item); }

  static uint64_t query_key(std::string_view id, bool user) {
    uint64_t h = user ? 1469598103934665603ull : 1099511628211ull;  // FNV-1a, a different start per kind
    for (char c : id) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h;
  }

  json shaped_answer(const Query& q, bool& fallback) const {
    const JobConfig& job = options.job;
    const int64_t user = user_of(q), item = item_of(q);
    const std::vector<uint8_t> allowed = allowed_items(q);
    std::vector<float> s;
    std::vector<uint8_t> excluded;
    std::string reason;
    bool by_popularity = false;
    SlateRequest r;
    r.k = q.k;
    r.seed = options.seed;
    if (q.user_id) {
      r.position_key = query_key(*q.user_id, true);
      if (user < 0) {
        s = fallback_score;
        reason = "unknown user: the most popular items";
        fallback = by_popularity = true;
      } else {
        user_scores(static_cast<uint32_t>(user), q, s);
        if (!options.keep_seen) {
          excluded.assign(num_items(), 0);
          for (uint32_t i : seen_of(static_cast<uint32_t>(user))) excluded[i] = 1;
        }
        if (user >= model.trained_users) reason = kMetadataOnlyUser;
        r.exploration_slots = share_slots(job.exploration_weight_or_default(), q.k);
        r.explorable = explorable;
        r.influence = {job.popularity_influence, job.freshness_influence, popularity_percentile, freshness_percentile};
      }
    } else {
      r.position_key = query_key(*q.item_id, false);
      if (item < 0) {
        s = fallback_score;
        reason = "unknown item: the most popular items";
        fallback = by_popularity = true;
      } else {
        item_scores(static_cast<uint32_t>(item), s);
        excluded.assign(num_items(), 0);
        excluded[item] = 1;
      }
    }
    if (item_lists()) r.popular_order = popular_order;
    for (size_t p = 0; p < job.promotions.size(); ++p) {
      PromotionSlots& slots = r.promotions.emplace_back();
      slots.slots = share_slots(job.promotions[p].percent / 100.0, q.k);
      std::vector<UserEvent> events;
      if (promotion_filters[p].uses_interactions() && q.user_id && context.user_events) events = context.user_events(*q.user_id);
      promotion_filters[p].evaluate(FilterQuery{job.promotions[p].filter_values, events, user, item}, slots.allowed);
    }
    r.scores = s;
    r.allowed = allowed;
    r.excluded = excluded;
    const std::vector<SlateEntry> slate = build_slate(r);
    json ids = json::array(), scores = json::array(), reasons = json::array(), names = json::array(),
         metadata = json::array();
    for (const SlateEntry& e : slate) {
      ids.push_back(model.item_ids[e.item]);
      const float x = s[e.item];
      scores.push_back(std::isnan(x) ? 0.0f : scorer && !by_popularity ? sigmoid(x) : x);
      const SlotReason why = by_popularity && e.reason == SlotReason::kRelevance ? SlotReason::kPopularityFill : e.reason;
      reasons.push_back(reason_name(why) ? json(reason_name(why)) : json(nullptr));
      names.push_back(e.promotion >= 0 ? json(job.promotions[e.promotion].name) : json(nullptr));
      if (!metadata_columns.empty()) metadata.push_back(item_metadata(e.item));
    }
    json out{{"recommendedItems", std::move(ids)}, {"scores", std::move(scores)}, {"reasons", std::move(reasons)}};
    if (!job.promotions.empty()) out["promotionNames"] = std::move(names);
    if (!metadata_columns.empty()) out["metadata"] = std::move(metadata);
    if (!reason.empty()) out["reason"] = reason;
    return out;
  }

  // The answer to one query, with a warning when the query carried what the model cannot use.
  json answer_query(const Query& q, bool& fallback, const TopK* precomputed = nullptr) const {
    json out = answer_query_unwarned(q, fallback, precomputed);
    if (q.context_ignored) out["warning"] = kContextIgnored;
    return out;
  }

  json answer_query_unwarned(const Query& q, bool& fallback, const TopK* precomputed) const {
    if (options.job.shapes_answers() && !precomputed) {
      if (!q.item_list) return shaped_answer(q, fallback);
      json out = answer_query_plain(q, fallback, nullptr);
      if (!metadata_columns.empty()) {
        json metadata = json::array();
        for (const json& id : out["recommendedItems"]) {
          const auto it = item_index.find(id.get<std::string>());
          metadata.push_back(item_metadata(it == item_index.end() ? -1 : static_cast<int64_t>(it->second)));
        }
        out["metadata"] = std::move(metadata);
      }
      return out;
    }
    return answer_query_plain(q, fallback, precomputed);
  }

  json answer_query_plain(const Query& q, bool& fallback, const TopK* precomputed) const {
    // A precomputed top-K (the GPU's) already applied the filter.
    const std::vector<uint8_t> allowed = precomputed ? std::vector<uint8_t>() : allowed_items(q);
    std::vector<uint32_t> items;
    std::vector<float> scores;
    std::string reason;
    if (q.item_list) {
      json out = rank(q, allowed, reason, fallback);
      if (!reason.empty()) out["reason"] = reason;
      return out;
    }
    if (q.user_id) {
      const auto it = user_index.find(*q.user_id);
      if (it == user_index.end()) {
        popular(q.k, allowed, {}, items, scores);
        reason = "unknown user: the most popular items";
        fallback = true;
      } else {
        recommend_for_user(it->second, q, allowed, items, scores, reason, precomputed);
        if (it->second >= model.trained_users) reason = kMetadataOnlyUser;
      }
    } else {
      const auto it = item_index.find(*q.item_id);
      if (it == item_index.end()) {
        popular(q.k, allowed, {}, items, scores);
        reason = "unknown item: the most popular items";
        fallback = true;
      } else {
        related(it->second, q, allowed, items, scores, reason);
      }
    }
    json ids = json::array(), values = json::array();
    for (size_t k = 0; k < items.size(); ++k) {
      ids.push_back(model.item_ids[items[k]]);
      values.push_back(scores[k]);
    }
    json out{{"recommendedItems", std::move(ids)}, {"scores", std::move(values)}};
    if (!reason.empty()) out["reason"] = reason;
    return out;
  }

  std::string answer(std::string_view line, LineResult& result) const {
    return result_line(line, "{\"userId\": \"u1\"}", result,
                       [&](const json& input) { return answer_query(parse_query(input), result.fallback); });
  }

  // ---- The GPU path ----

  // A line the GPU answers: a known user's top-K (no itemList), exact (no two-stage on the GPU).
  // The line is parsed once: the request keeps its JSON and query for the result line.
  struct GpuRequest {
    json input;
    Query query;
    uint32_t user = 0;
    std::vector<uint8_t> allowed;
  };
  // False for every other line, and for one that does not parse: the CPU path answers those (and
  // writes their errors).
  bool gpu_request(std::string_view line, GpuRequest& request) const {
    try {
      request.input = parse_line(line);
      if (!request.input.is_object()) return false;
      request.query = parse_query(request.input);
      const Query& q = request.query;
      if (!q.user_id || q.item_list) return false;
      if (options.job.shapes_answers()) return false;  // exploration, promotions, influence, metadata: the CPU
      const auto it = user_index.find(*q.user_id);
      if (it == user_index.end()) return false;
      request.user = it->second;
      request.allowed = allowed_items(q);
      return true;
    } catch (...) {
      return false;
    }
  }

  // Answers a chunk of lines: the GPU lines' top-K in batches of users that share a filter result
  // (seen items excluded per user), then every line formatted as on the CPU.
  void answer_chunk(std::span<const std::string> lines, std::span<std::string> answers,
                    std::span<LineResult> results, int workers) const {
    const int64_t n = static_cast<int64_t>(lines.size());
    if (!gpu) {
#pragma omp parallel for schedule(dynamic, 4) num_threads(workers)
      for (int64_t k = 0; k < n; ++k) answers[k] = answer(lines[k], results[k]);
      return;
    }
    std::vector<GpuRequest> requests(lines.size());
    std::vector<uint8_t> on_gpu(lines.size(), 0);
#pragma omp parallel for schedule(dynamic, 16) num_threads(workers)
    for (int64_t k = 0; k < n; ++k) on_gpu[k] = gpu_request(lines[k], requests[k]);
    // Lines grouped by their allowed items (one group without a filter).
    std::unordered_map<std::string, std::vector<size_t>> groups;
    for (size_t k = 0; k < lines.size(); ++k) {
      if (!on_gpu[k]) continue;
      const std::vector<uint8_t>& allowed = requests[k].allowed;
      groups[std::string(allowed.begin(), allowed.end())].push_back(k);
    }
    std::vector<TopK> top(lines.size());
    const uint32_t e = model.params->config.mlp_embedding();
    for (const auto& [mask, members] : groups) {
      std::vector<uint32_t> users;
      std::vector<float> contexts;
      std::vector<uint64_t> offsets{0};
      std::vector<uint32_t> exclude;
      uint32_t k_max = 1;
      bool any_context = false;
      for (size_t line : members) any_context |= !requests[line].query.context.empty();
      for (size_t line : members) {
        const GpuRequest& r = requests[line];
        users.push_back(r.user);
        k_max = std::max(k_max, r.query.k);
        if (any_context) {
          const std::vector<float>& context = r.query.context;
          if (context.empty()) contexts.resize(contexts.size() + e, 0.0f);
          else contexts.insert(contexts.end(), context.begin(), context.end());
        }
        if (!options.keep_seen) {
          const auto seen = seen_of(r.user);
          exclude.insert(exclude.end(), seen.begin(), seen.end());
        }
        offsets.push_back(exclude.size());
      }
      if (options.keep_seen) offsets.clear();
      std::vector<uint32_t> items(users.size() * k_max);
      std::vector<float> scores(users.size() * k_max);
      const std::span<const uint8_t> allowed(reinterpret_cast<const uint8_t*>(mask.data()), mask.size());
      gpu->top_k(users, contexts, offsets, exclude, allowed, k_max, items, scores);
      for (size_t u = 0; u < members.size(); ++u) {
        TopK& t = top[members[u]];
        t.items.assign(items.begin() + u * k_max, items.begin() + (u + 1) * k_max);
        t.scores.assign(scores.begin() + u * k_max, scores.begin() + (u + 1) * k_max);
      }
    }
#pragma omp parallel for schedule(dynamic, 4) num_threads(workers)
    for (int64_t k = 0; k < n; ++k) {
      if (!on_gpu[k]) {
        answers[k] = answer(lines[k], results[k]);
        continue;
      }
      answers[k] = answered_line(std::move(requests[k].input), results[k], [&](const json&) {
        return answer_query(requests[k].query, results[k].fallback, &top[k]);
      });
    }
  }

  // ---- Segments ----

  // Affinity of every user for one item (NaN: excluded).
  void user_affinity(const std::vector<uint32_t>& items, std::vector<float>& affinity) const {
    const int64_t users = num_users();
    affinity.assign(users, 0.0f);
    if (scorer) {
      // An exception may not leave an OpenMP region: the first one is kept and rethrown after it.
      std::exception_ptr failure;
#pragma omp parallel
      {
        std::vector<float> s(items.size());
#pragma omp for schedule(static, 256)
        for (int64_t u = 0; u < users; ++u) {
          try {
            scorer->score(static_cast<uint32_t>(u), items, s);
          } catch (...) {
#pragma omp critical(tastebud_affinity_failure)
            if (!failure) failure = std::current_exception();
            continue;
          }
          double sum = 0;
          for (float x : s) sum += sigmoid(x);
          affinity[u] = static_cast<float>(sum / items.size());
        }
      }
      if (failure) std::rethrow_exception(failure);
      return;
    }
    // sims: a user's affinity for item i is the summed similarity of i to the user's history.
    const ItemNeighbors& nb = model.recipe.neighbors;
    for (uint32_t i : items) {
      for (uint64_t k = nb.offsets[i]; k < nb.offsets[i + 1]; ++k) {
        const uint32_t j = nb.items[k];
        for (uint64_t r = item_users.offsets[j]; r < item_users.offsets[j + 1]; ++r)
          affinity[item_users.items[r]] += nb.scores[k] / items.size();
      }
    }
  }

  std::string segment(std::string_view line, uint32_t default_k, LineResult& result) const {
    return result_line(line, "{\"itemId\": \"i1\"}", result, [&](const json& input) {
      const auto item_id = string_field(input, "itemId");
      const auto attributes = string_field(input, "itemAttributes");
      if (!item_id && !attributes) throw LineError("the query names neither an itemId nor itemAttributes");
      if (item_id && attributes) throw LineError("give an itemId or itemAttributes, not both");
      const uint32_t k = num_results_of(input, default_k, std::max<uint32_t>(num_users(), 1));
      std::vector<uint32_t> items;
      if (item_id) {
        const auto it = item_index.find(*item_id);
        if (it == item_index.end())
          throw LineError(fmt::format("item '{}' is not in the model; a new item reaches users through itemAttributes", *item_id));
        items.push_back(it->second);
      } else {
        const std::vector<uint8_t> mask = match_item_attributes(*attributes, context.catalog);
        for (uint32_t i : popular_order) {
          if (items.size() >= kMaxAttributeItems) break;
          if (mask[i]) items.push_back(i);
        }
        if (items.empty()) throw LineError("no item of the model has these attributes");
      }
      std::vector<float> affinity;
      user_affinity(items, affinity);
      if (filter) {  // UserID expressions: the users it lets through
        if (!filter->selects_users())
          throw LineError("the filter selects items (ItemID expressions): that is a batch-infer filter");
        FilterValues values;
        if (const auto it = input.find("filterValues"); it != input.end() && it->is_object())
          for (auto v = it->begin(); v != it->end(); ++v)
            if (v.value().is_string()) values[v.key()] = v.value().get<std::string>();
        std::vector<uint8_t> allowed;
        filter->evaluate(FilterQuery{values, {}, -1, item_id ? static_cast<int64_t>(items[0]) : -1}, allowed);
        for (uint32_t u = 0; u < num_users(); ++u)
          if (!allowed[u]) affinity[u] = NAN;
      }
      if (item_id && !options.keep_seen) {
        // Users who already interacted with the item are not a segment to reach.
        for (uint32_t u = 0; u < num_users(); ++u) {
          const auto seen = seen_of(u);
          if (std::binary_search(seen.begin(), seen.end(), items[0])) affinity[u] = NAN;
        }
      }
      std::vector<uint32_t> top;
      cpu::top_k(affinity, k, top);
      json users = json::array();
      for (uint32_t u : top) users.push_back(model.user_ids[u]);
      return json{{"recommendedUsers", std::move(users)}};
    });
  }
};

Recommender::Recommender(ModelData model, InferenceContext context, InferenceOptions options)
    : impl_(std::make_unique<Impl>()) {
  TB_CHECK(options.num_results >= 1 && options.num_results <= kMaxResults,
           fmt::format("--num-results must be from 1 to {}", kMaxResults));
  impl_->model = std::move(model);
  impl_->context = std::move(context);
  impl_->options = std::move(options);
  if (impl_->context.catalog.item_ids.empty()) impl_->context.catalog.item_ids = impl_->model.item_ids;
  TB_CHECK(impl_->context.catalog.num_items() == impl_->model.item_ids.size(),
           "inference: the catalog and the model list different items");
  if (impl_->options.candidates > 0 && !(impl_->model.params && impl_->model.params->config.has_gmf()))
    throw Error("--candidates: two-stage retrieval ranks candidates by the GMF branch; this model has none");
  if (!std::isnan(impl_->options.now)) impl_->context.catalog.now = impl_->options.now;
  if (!impl_->options.filter.empty()) impl_->filter.emplace(impl_->options.filter, impl_->context.catalog);
  impl_->prepare();
  impl_->prepare_job();
  if (impl_->options.device == "cuda" && impl_->model.params) {
    impl_->gpu = std::make_unique<GpuScorer>(*impl_->model.params);
  }
}

std::string Recommender::device() const {
  return impl_->gpu ? impl_->gpu->describe() : std::string("the cpu");
}

void Recommender::answer_chunk(std::span<const std::string> lines, std::span<std::string> answers,
                               std::span<LineOutcome> outcomes, int workers) const {
  impl_->answer_chunk(lines, answers, outcomes, workers);
}

Recommender::~Recommender() = default;

const ModelData& Recommender::model() const { return impl_->model; }

bool Recommender::personalized() const { return impl_->scorer != nullptr || impl_->model.kind == "sims"; }

std::string Recommender::answer(std::string_view line, LineOutcome* outcome) const {
  LineOutcome ignored;
  return impl_->answer(line, outcome ? *outcome : ignored);
}

std::string Recommender::segment(std::string_view line, uint32_t default_num_results, LineOutcome* outcome) const {
  LineOutcome ignored;
  return impl_->segment(line, default_num_results, outcome ? *outcome : ignored);
}

// ---- Jobs ----------------------------------------------------------------------------------------

namespace {

std::ifstream open_input(const fs::path& input) {
  std::ifstream in(input, std::ios::binary);
  if (!in) throw Error(fmt::format("--input {}: cannot open: {}", input.string(), std::strerror(errno)));
  return in;
}

// chunk(lines, answers, results, workers) answers one chunk of lines.
template <typename ChunkFn>
BatchStats run_lines(const fs::path& input, const fs::path& output, uint32_t threads, ChunkFn&& chunk,
                     const std::function<void(uint64_t, uint64_t, uint64_t)>& on_progress = {}) {
  const auto start = std::chrono::steady_clock::now();
  TB_CHECK(threads <= kMaxThreads, fmt::format("--threads must be from 0 (all cores) to {}, not {}", kMaxThreads, threads));
  // Several ranks: every rank reads the input, answers its contiguous share of each chunk, and
  // rank 0 gathers the answers in rank order (input order) and writes the one output file.
  Communicator& comm = world_communicator();
  std::ifstream in = open_input(input);
  std::optional<AtomicFile> out;
  if (comm.root()) {
    remove_stale_temporaries(output.has_parent_path() ? output.parent_path() : fs::path("."));
    out.emplace(output);
  }
  BatchStats stats;
  std::vector<std::string> lines, answers;
  std::vector<LineResult> results;
  const int workers = threads > 0 ? static_cast<int>(threads) : omp_get_max_threads();
  std::string line;
  bool more = true;
  while (more) {
    lines.clear();
    while (lines.size() < kChunkLines && (more = static_cast<bool>(std::getline(in, line)))) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!blank(line)) lines.push_back(line);
    }
    const auto [first, last] = rank_slice(lines.size(), comm.rank(), comm.size());
    const int64_t n = static_cast<int64_t>(last - first);
    answers.assign(n, std::string());
    results.assign(n, LineResult{});
    chunk(std::span<const std::string>(lines).subspan(first, n), std::span<std::string>(answers),
          std::span<LineResult>(results), workers);
    std::string text;
    for (int64_t k = 0; k < n; ++k) {
      text += answers[k];
      text += '\n';
      stats.errors += results[k].error;
      stats.fallbacks += results[k].fallback;
    }
    if (comm.size() > 1) text = gather_text(comm, text);
    if (out) out->write(text);
    stats.lines += lines.size();
    if (on_progress && comm.root()) {  // input bytes read, of its size (0 for a pipe: unknown)
      std::error_code no_size;
      const uint64_t size = fs::is_regular_file(input, no_size) ? fs::file_size(input, no_size) : 0;
      const std::streamoff at = more ? static_cast<std::streamoff>(in.tellg()) : -1;
      on_progress(at < 0 ? size : static_cast<uint64_t>(at), size, stats.lines);
    }
  }
  if (in.bad()) throw Error(fmt::format("--input {}: read failed", input.string()));
  if (comm.size() > 1) {
    double counts[2] = {static_cast<double>(stats.errors), static_cast<double>(stats.fallbacks)};
    comm.allreduce_sum(counts);
    stats.errors = static_cast<uint64_t>(counts[0]);
    stats.fallbacks = static_cast<uint64_t>(counts[1]);
  }
  if (out) out->commit();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

// auto: the GPU when one answers, else the CPU (with the reason in `notice`); cuda without a GPU
// is an error that says why.
std::string resolve_device(const std::string& device, std::string* notice) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw Error(fmt::format("unknown --device '{}': expected auto, cpu or cuda", device));
  if (device == "cpu") return "cpu";
  std::string reason;
  if (gpu_scorer_available(&reason)) return "cuda";
  if (device == "cuda") throw Error("--device cuda: " + reason);
  *notice = reason + ", so scoring on the CPU";
  return "cpu";
}

// The service's folder layout: every NAME.json of the input folder answered into
// output/NAME.json.out; or the one file. `job(input, output)` answers one file.
template <typename JobFn>
BatchStats run_files(const fs::path& input, const fs::path& output, JobFn&& job) {
  if (!fs::is_directory(input)) return job(input, output);
  if (fs::exists(output) && !fs::is_directory(output))
    throw Error(fmt::format("--output {}: --input is a folder, so the output must be a folder too", output.string()));
  std::vector<fs::path> files;
  for (const fs::directory_entry& e : fs::directory_iterator(input))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(fmt::format("--input {}: the folder holds no .json file", input.string()));
  if (world_communicator().root()) fs::create_directories(output);
  world_communicator().barrier();
  BatchStats total;
  for (const fs::path& file : files) {
    const BatchStats s = job(file, output / (file.filename().string() + ".out"));
    total.lines += s.lines;
    total.errors += s.errors;
    total.fallbacks += s.fallbacks;
    total.seconds += s.seconds;
  }
  return total;
}

void print_stats(std::ostream& log, const char* job, const BatchStats& s, const fs::path& output) {
  log << fmt::format("{}: {} lines ({} errors, {} fallbacks) in {:.2f}s, {:.0f} lines/s -> {}\n", job, s.lines,
                     s.errors, s.fallbacks, s.seconds, s.lines / std::max(s.seconds, 1e-9), output.string());
}

}  // namespace

BatchStats run_batch_infer(const Recommender& recommender, const fs::path& input, const fs::path& output,
                           uint32_t threads, const std::function<void(uint64_t, uint64_t, uint64_t)>& on_progress) {
  return run_files(input, output, [&](const fs::path& in, const fs::path& out) {
    return run_lines(in, out, threads,
                     [&](std::span<const std::string> lines, std::span<std::string> answers,
                         std::span<LineResult> results, int workers) {
                       recommender.answer_chunk(lines, answers, results, workers);
                     }, on_progress);
  });
}

BatchStats run_batch_segment(const Recommender& recommender, const fs::path& input, const fs::path& output,
                             uint32_t num_results, uint32_t threads) {
  TB_CHECK(recommender.personalized(),
           fmt::format("batch-segment needs a personalized model (neumf, gmf, mlp or sims), not {}",
                       recommender.model().kind));
  TB_CHECK(num_results >= 1, "--num-results must be positive");
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
  // Lines one at a time: each segment already scores every user in parallel.
  return run_files(input, output, [&](const fs::path& in, const fs::path& out) {
    return run_lines(in, out, threads,
                     [&](std::span<const std::string> lines, std::span<std::string> answers,
                         std::span<LineResult> results, int) {
                       for (size_t k = 0; k < lines.size(); ++k) answers[k] = recommender.segment(lines[k], num_results, &results[k]);
                     });
  });
}

BatchStats batch_infer(const fs::path& model_dir, const fs::path& input, const fs::path& output,
                       const InferenceOptions& options, std::ostream& log) {
  check_output_apart(output, model_dir, input, "--output");
  InferenceOptions resolved = options;
  std::string notice;
  resolved.device = resolve_device(options.device, &notice);
  if (!options.filter.empty()) {  // fail before loading anything
    check_filter_syntax(options.filter);
    if (filter_selects_users(options.filter))
      throw Error("--filter: UserID expressions select users, for batch-segment; batch-infer filters items (INCLUDE|EXCLUDE ItemID ...)");
  }
  ModelData model = load_model_dir(model_dir);
  fs::path data;
  if (!options.filter.empty()) {
    if (model.data.empty() || !fs::exists(model.data))
      throw Error(fmt::format("--filter reads item metadata and events from the dataset the model was "
                              "trained on, {}, which is missing",
                              model.data.empty() ? "(not recorded)" : model.data.string()));
    data = model.data;
  }
  // Item ages, popularity, promotion filters and metadata columns read the dataset too; without
  // it, items without interactions count as new and metadata columns are an error.
  if (options.job.shapes_answers() && !model.data.empty() && fs::exists(model.data)) data = model.data;
  InferenceContext context = load_context(model, data);
  const std::string kind = model.kind;
  if (!is_neumf_family(kind)) resolved.device = "cpu";  // recipes answer from tables on the host
  if (!notice.empty() && is_neumf_family(kind)) log << notice << "\n";
  const Recommender recommender(std::move(model), std::move(context), resolved);
  log << fmt::format("batch-infer: {} model, {} users, {} items, {} on {}{}{}\n", kind,
                     recommender.model().user_ids.size(), recommender.model().item_ids.size(),
                     resolved.device == "cuda" ? "exact top-k (user queries)"
                     : options.candidates > 0 ? fmt::format("two-stage ({} candidates)", options.candidates)
                                              : "exact top-k",
                     recommender.device(), options.filter.empty() ? "" : ", filter: ", options.filter);
  const BatchStats stats = run_batch_infer(recommender, input, output, options.threads, options.on_progress);
  print_stats(log, "batch-infer", stats, output);
  return stats;
}

BatchStats batch_segment(const fs::path& model_dir, const fs::path& input, const fs::path& output,
                         uint32_t num_results, bool keep_seen, uint32_t threads, std::ostream& log,
                         const std::string& filter) {
  check_output_apart(output, model_dir, input, "--output");
  if (!filter.empty()) {
    check_filter_syntax(filter);
    if (!filter_selects_users(filter))
      throw Error("--filter: batch-segment filters users (INCLUDE|EXCLUDE UserID WHERE Users.<field> ...)");
  }
  ModelData model = load_model_dir(model_dir);
  const fs::path data = !model.data.empty() && fs::exists(model.data) ? model.data : fs::path();
  InferenceContext context = load_context(model, data);
  InferenceOptions options;
  options.keep_seen = keep_seen;
  options.threads = threads;
  options.filter = filter;
  const Recommender recommender(std::move(model), std::move(context), options);
  const BatchStats stats = run_batch_segment(recommender, input, output, num_results, threads);
  print_stats(log, "batch-segment", stats, output);
  return stats;
}

}  // namespace tastebud::host
