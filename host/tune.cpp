#include "host/tune.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ostream>
#include <sstream>

#include <fmt/format.h>

#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"
#include "tastebud/philox.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;

double log_uniform(uint32_t word, double lo, double hi) {
  return std::exp(std::log(lo) + uniform_unit(word) * (std::log(hi) - std::log(lo)));
}

// Epochs of each rung, ascending, ending at max_epochs: each rung reduction times the one before.
std::vector<uint32_t> rung_epochs(const TuneOptions& o) {
  std::vector<uint32_t> rungs{o.max_epochs};
  for (uint64_t n = o.trials; n >= o.reduction && rungs.back() / o.reduction >= 1; n /= o.reduction) {
    rungs.push_back(rungs.back() / o.reduction);
  }
  std::reverse(rungs.begin(), rungs.end());
  return rungs;
}

std::string describe(const Trial& t) {
  if (t.sequence) {
    return fmt::format("lr {:.5f}  hidden {:3d}  blocks {}  dropout {:.2f}  negatives {}", t.lr, t.hidden, t.blocks,
                       t.dropout, t.negatives);
  }
  return fmt::format("lr {:.5f}  factors {:2d}  negatives {}  l2 {:.1e}", t.lr, t.factors, t.negatives, t.l2);
}

// Trains a trial on to `epochs` (resuming its checkpoint) and records its best validation value.
void train_trial(const TuneOptions& o, const std::string& metric, uint32_t epochs, Trial& t) {
  TrainJob job = o.base;
  job.out = o.out / "trials" / std::to_string(t.id);
  job.epochs = epochs;
  job.resume = t.epochs > 0;
  job.progress = false;
  job.judge_on_test = false;
  job.lr = t.lr;
  job.negatives = t.negatives;
  if (t.sequence) {
    job.hidden = t.hidden;
    job.blocks = t.blocks;
    job.dropout = t.dropout;
    job.patience = 0;  // each rung trains its epochs: the halving does the stopping
  } else {
    job.l2 = t.l2;
    job.factors = t.factors;
  }
  std::ostringstream quiet;
  const TrainResult r = run_training(job, quiet);
  t.epochs = epochs;
  for (const EpochRecord& e : r.history) {
    const double v = e.metrics.at(metric);
    if (v > t.value) {
      t.value = v;
      t.best_epoch = e.epoch;
    }
  }
}

std::string trials_table(const TuneResult& r) {
  const bool sequence = !r.trials.empty() && r.trials.front().sequence;
  std::string out = sequence ? fmt::format("trial\tlr\thidden\tblocks\tdropout\tnegatives\tepochs\tbest_epoch\t{}\n", r.metric)
                             : fmt::format("trial\tlr\tfactors\tnegatives\tl2\tepochs\tbest_epoch\t{}\n", r.metric);
  for (const Trial& t : r.trials) {
    out += sequence ? fmt::format("{}\t{:.6g}\t{}\t{}\t{:.6g}\t{}\t", t.id, t.lr, t.hidden, t.blocks, t.dropout, t.negatives)
                    : fmt::format("{}\t{:.6g}\t{}\t{}\t{:.6g}\t", t.id, t.lr, t.factors, t.negatives, t.l2);
    out += fmt::format("{}\t{}\t{:.6f}\n", t.epochs, t.best_epoch, t.value);
  }
  return out;
}

}  // namespace

Trial draw_trial(uint64_t seed, uint32_t id) {
  const Philox4 w = random_words(seed, RandomStream::kTune, id, 0);
  const Philox4 v = random_words(seed, RandomStream::kTune, id, 1);
  Trial t;
  t.id = id;
  t.lr = static_cast<float>(log_uniform(w.v[0], 1e-4, 1e-2));
  t.factors = 8u << uniform_below(w.v[1], 4);      // 8, 16, 32, 64
  t.negatives = 1u << uniform_below(w.v[2], 4);    // 1, 2, 4, 8
  t.l2 = uniform_below(w.v[3], 5) == 0 ? 0.0f : static_cast<float>(log_uniform(v.v[0], 1e-5, 1e-2));
  return t;
}

Trial draw_sequence_trial(uint64_t seed, uint32_t id) {
  const Philox4 w = random_words(seed, RandomStream::kTune, id, 0);
  const Philox4 v = random_words(seed, RandomStream::kTune, id, 1);
  Trial t;
  t.id = id;
  t.sequence = true;
  t.lr = static_cast<float>(log_uniform(w.v[0], 1e-3, 1e-2));
  t.hidden = 32u << uniform_below(w.v[1], 3);           // 32, 64, 128
  t.blocks = 1 + uniform_below(w.v[2], 3);              // 1, 2, 3
  t.dropout = 0.1f + 0.1f * static_cast<float>(uniform_below(w.v[3], 5));  // 0.1 .. 0.5
  t.negatives = 1u << uniform_below(v.v[0], 3);         // 1, 2, 4
  return t;
}

TuneResult run_tune(const TuneOptions& o, std::ostream& log) {
  TB_CHECK(o.trials > 0, "tune: trials must be positive");
  TB_CHECK(o.max_epochs > 0, "tune: max_epochs must be positive");
  TB_CHECK(o.reduction >= 2, "tune: the reduction factor must be at least 2");
  const TrainPlan plan = make_plan(o.base);
  TB_CHECK(plan.validate,
           "tune: trials are judged on the validation split: give an eval protocol and validation users");
  TB_CHECK(!is_recipe(plan.model),
           "tune: recipes have no hyperparameters to search; tune a neural model");
  const bool sequence = plan.model == ModelType::kSASRec;
  TB_CHECK(!sequence || 32 % o.base.heads == 0,
           fmt::format("tune: heads {} must divide every width tried (32, 64, 128)", o.base.heads));
  TuneResult result;
  result.metric = "val." + plan.metric;
  for (uint32_t id = 0; id < o.trials; ++id) result.trials.push_back(sequence ? draw_sequence_trial(o.seed, id) : draw_trial(o.seed, id));
  fs::create_directories(o.out / "trials");

  const auto start = std::chrono::steady_clock::now();
  auto spent = [&] {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return o.time_budget_seconds > 0 && s >= o.time_budget_seconds;
  };
  const std::vector<uint32_t> rungs = rung_epochs(o);
  std::vector<size_t> alive(o.trials);
  for (size_t k = 0; k < alive.size(); ++k) alive[k] = k;
  bool out_of_time = false;
  for (size_t rung = 0; rung < rungs.size() && !out_of_time; ++rung) {
    log << fmt::format("rung {}/{}: {} trials to {} epochs\n", rung + 1, rungs.size(), alive.size(), rungs[rung]);
    for (size_t k : alive) {
      if (spent()) {
        log << "time budget spent: no more trials start\n";
        out_of_time = true;
        break;
      }
      Trial& t = result.trials[k];
      train_trial(o, result.metric, rungs[rung], t);
      log << fmt::format("  trial {:2d}  {}  {} epochs: {} {:.4f} (epoch {})\n", t.id, describe(t), t.epochs,
                         result.metric, t.value, t.best_epoch);
      log.flush();
    }
    std::stable_sort(alive.begin(), alive.end(),
                     [&](size_t a, size_t b) { return result.trials[a].value > result.trials[b].value; });
    const size_t keep = std::max<size_t>(1, alive.size() / o.reduction);
    if (rung + 1 < rungs.size()) {
      for (size_t k = keep; k < alive.size(); ++k) result.trials[alive[k]].stopped = true;
      alive.resize(keep);
    }
  }
  for (size_t k = 0; k < result.trials.size(); ++k) {
    if (result.trials[k].value > result.trials[result.best].value) result.best = k;
  }
  TB_CHECK(result.trials[result.best].epochs > 0, "tune: the time budget ended before any trial trained");
  write_file_atomically(o.out / "trials.tsv", trials_table(result));
  write_file_atomically(o.out / "best.toml", best_job_toml(o, result));
  const Trial& best = result.trials[result.best];
  log << fmt::format("best: trial {} ({}), {} {:.4f} at epoch {}; job file {}\n", best.id, describe(best),
                     result.metric, best.value, best.best_epoch, (o.out / "best.toml").string());
  return result;
}

std::string best_job_toml(const TuneOptions& o, const TuneResult& r) {
  const Trial& t = r.trials[r.best];
  if (t.sequence) {
    return fmt::format(
        "# tastebud tune: the best of {} trials by {} {:.6f}, on the validation split carved from the\n"
        "# training rows (the test rows were never evaluated). tastebud train --config this-file --data D --out M\n"
        "model = \"sasrec\"\nhidden = {}\nblocks = {}\nheads = {}\nmax-sequence = {}\ndropout = {:.6g}\nnegatives = {}\n"
        "lr = {:.6g}\nepochs = {}\nbatch-size = {}\neval = \"{}\"\n",
        r.trials.size(), r.metric, t.value, t.hidden, t.blocks, o.base.heads, o.base.max_sequence, t.dropout,
        t.negatives, t.lr, std::max<uint32_t>(t.best_epoch, 1), o.base.batch_size, o.base.eval);
  }
  std::string layers;
  for (size_t k = 0; k < o.base.layers.size(); ++k) layers += (k ? ", " : "") + std::to_string(o.base.layers[k]);
  return fmt::format(
      "# tastebud tune: the best of {} trials by {} {:.6f}, on the validation split carved from the\n"
      "# training rows (the test rows were never evaluated). tastebud train --config this-file --data D --out M\n"
      "model = \"{}\"\nfactors = {}\nlayers = [{}]\nnegatives = {}\nlr = {:.6g}\nl2 = {:.6g}\nepochs = {}\n"
      "batch-size = {}\noptimizer = \"{}\"\nloss = \"{}\"\neval = \"{}\"\n",
      r.trials.size(), r.metric, t.value, o.base.model, t.factors, layers, t.negatives, t.lr, t.l2,
      std::max<uint32_t>(t.best_epoch, 1), o.base.batch_size, o.base.optimizer, o.base.loss, o.base.eval);
}

}  // namespace tastebud::host
