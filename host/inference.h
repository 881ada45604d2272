// Batch inference: what a trained model answers, in the managed service's batch layout
// (../shared/PERSONALIZE.md, issue 5).
//
// batch-infer reads JSON lines, one query each:
//   {"userId": "u1"}                          top-N items, the user's seen items removed
//   {"userId": "u1", "itemList": ["i1", ...]} the list reordered for the user; ids the model never
//                                             saw go last with a null score
//   {"itemId": "i1"}                          related items
//   {"userId": "u1", "itemId": "i1"}          related items less the user's seen items ("customers
//                                             who viewed X also viewed"); filters see both, as
//                                             CurrentUser and CurrentItem
// with optional "numResults", "filterValues" and, for a model trained with --context,
// "context": {"DEVICE_TYPE": "mobile", ...} (fields left out, or values the model never saw, add
// nothing; a model without context ignores it), and writes, in input order,
//   {"input": {...}, "output": {"recommendedItems": [...], "scores": [...]}, "error": null}
// A fallback answer (unknown user or item: popular items) adds "reason" to "output"; so does the
// answer for a user the model never trained on but whose metadata the dataset gained since (a
// model with user metadata scores them from it). A bad line
// gets "output": null and its message in "error"; the job goes on. Blank lines are skipped.
//
// batch-segment reads {"itemId": "i1"} or {"itemAttributes": "ITEMS.GENRES = \"Comedy\""} and
// writes {"input": ..., "output": {"recommendedUsers": [...]}, "error": null}: the users with the
// highest affinity for the item, or the mean affinity over the (at most 100 most popular) items
// with those attributes.
//
// Scores: the NeuMF family gives the model's probability (sigmoid of the logit), related items the
// cosine of the concatenated GMF and MLP item embeddings; recipes give their own scores
// (popularity: weighted counts; trending: growth; sims: summed similarity; transitions: the
// recency-weighted sum, over the user's latest items, of the share of what followed each that was
// the item).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "host/filters.h"
#include "host/job_config.h"
#include "host/catalog_view.h"
#include "host/model_data.h"
#include "host/query_lines.h"
#include "tastebud/engine/model.h"

namespace tastebud::host {

struct InferenceOptions {
  uint32_t num_results = 25;  // default per query; a line's numResults wins (1..500)
  std::string filter;         // empty: none
  std::string device = "auto";  // the Recommender takes "cpu" or "cuda" (batch_infer resolves auto)
  bool keep_seen = false;     // keep the user's interacted items in recommendations
  uint32_t candidates = 0;    // > 0: two-stage retrieval, this many GMF candidates reranked
  uint32_t threads = 0;       // 0: all cores
  // {"userId"} answers' scores as the service gives them: each item's share of the whole allowed
  // catalog's scores (the softmax of a neural model's logits; a recipe's score / their sum), so
  // the catalog's shares sum to 1 (host/slate.h CatalogShare). Related items and rankings keep
  // the model's scale. Needs every item's score: not with `candidates`; answered on the CPU.
  bool normalize_scores = false;
  // Exploration, ranking influence, promotions, metadata columns (host/job_config.h): lines such
  // a job shapes are answered on the CPU (host/slate.h), the others as before.
  JobConfig job;
  uint64_t seed = 0;          // where promoted and exploration items sit in a result
  double now = NAN;           // NOW in filters and item ages, Unix seconds; NaN: the dataset's latest timestamp
  // batch_infer tells it after each chunk of lines: input bytes read of the file's size, lines
  // answered (the command line's progress line). May be empty.
  std::function<void(uint64_t bytes_read, uint64_t bytes_total, uint64_t lines)> on_progress;
};

class Recommender {
 public:
  // Parses and binds the filter (throws FilterError with the position) and prepares the model.
  Recommender(ModelData model, InferenceContext context, InferenceOptions options);
  // Recommenders of one model under other filters or options share it: held once in memory.
  Recommender(std::shared_ptr<const ModelData> model, InferenceContext context, InferenceOptions options);
  ~Recommender();

  const ModelData& model() const;
  std::shared_ptr<const ModelData> shared_model() const;
  bool personalized() const;  // can answer segments

  using LineOutcome = host::LineOutcome;
  // One batch-infer line in, one output line out (without the newline). Never throws for a bad
  // line: the message goes to "error".
  std::string answer(std::string_view line, LineOutcome* outcome = nullptr) const;
  // A chunk of batch-infer lines, answers[k] for lines[k]: with the GPU, the plain user queries'
  // top-K go to the device in batches; every other line as answer() does. workers: CPU threads.
  void answer_chunk(std::span<const std::string> lines, std::span<std::string> answers,
                    std::span<LineOutcome> outcomes, int workers) const;
  // Where user queries are scored, for logs: "the cpu" or the GPU's description.
  std::string device() const;
  // One batch-segment line in, one output line out.
  std::string segment(std::string_view line, uint32_t default_num_results,
                      LineOutcome* outcome = nullptr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct BatchStats {
  uint64_t lines = 0;
  uint64_t errors = 0;
  uint64_t fallbacks = 0;
  double seconds = 0;
};

// Runs the whole file (or folder, below): lines answered in parallel in chunks, written in input order to a
// temporary name beside `output` and renamed into place at the end. batch_infer and batch_segment
// also take the service's folder layout: `input` a directory, every `NAME.json` in it (in name
// order) answered into `output/NAME.json.out`, each written atomically.
BatchStats run_batch_infer(const Recommender& recommender, const std::filesystem::path& input,
                           const std::filesystem::path& output, uint32_t threads,
                           const std::function<void(uint64_t, uint64_t, uint64_t)>& on_progress = {});
BatchStats run_batch_segment(const Recommender& recommender, const std::filesystem::path& input,
                             const std::filesystem::path& output, uint32_t num_results,
                             uint32_t threads);

// Opens the model directory and its dataset, runs the job, prints a summary to `log`.
BatchStats batch_infer(const std::filesystem::path& model_dir, const std::filesystem::path& input,
                       const std::filesystem::path& output, const InferenceOptions& options,
                       std::ostream& log);
// `filter`: UserID expressions (INCLUDE UserID WHERE Users.MEMBERSHIP IN ("gold")) with each
// line's filterValues; empty: none.
BatchStats batch_segment(const std::filesystem::path& model_dir, const std::filesystem::path& input,
                         const std::filesystem::path& output, uint32_t num_results, bool keep_seen,
                         uint32_t threads, std::ostream& log, const std::string& filter = {});

}  // namespace tastebud::host
