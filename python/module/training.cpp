// train: keyword options in, a model directory out, through the same training job as
// `tastebud train` (host/training.h). The command line and this file each translate their own
// input into a TrainJob.
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "bindings.h"
#include "host/training.h"
#include "host/use_cases.h"
#include "python_lines.h"
#include "tastebud/error.h"

namespace py = pybind11;

namespace tastebud::python {
namespace {

namespace fs = std::filesystem;
using host::TrainJob;

// A list of strings from a list, or one comma-separated string (as on the command line).
std::vector<std::string> strings_of(py::handle value) {
  if (py::isinstance<py::str>(value)) {
    std::vector<std::string> out;
    std::string text = value.cast<std::string>(), part;
    for (char c : text + ",") {
      if (c != ',') { part += c; continue; }
      if (!part.empty()) out.push_back(part);
      part.clear();
    }
    return out;
  }
  return value.cast<std::vector<std::string>>();
}

using Setter = std::function<void(TrainJob&, py::handle)>;

template <typename T>
Setter set(T TrainJob::*field) {
  return [field](TrainJob& job, py::handle v) { job.*field = v.cast<T>(); };
}

// The keyword options of tastebud.train: the long flags of `tastebud train` with _ for -.
const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table{
      {"model", set(&TrainJob::model)},
      {"factors", set(&TrainJob::factors)},
      {"layers", set(&TrainJob::layers)},
      {"epochs", set(&TrainJob::epochs)},
      {"batch_size", set(&TrainJob::batch_size)},
      {"negatives", set(&TrainJob::negatives)},
      {"lr", set(&TrainJob::lr)},
      {"optimizer", set(&TrainJob::optimizer)},
      {"embedding_updates", set(&TrainJob::embedding_updates)},
      {"l2", set(&TrainJob::l2)},
      {"loss", set(&TrainJob::loss)},
      {"sampler", set(&TrainJob::sampler)},
      {"sampler_alpha", set(&TrainJob::sampler_alpha)},
      {"device", set(&TrainJob::device)},
      {"tf32", set(&TrainJob::tf32)},
      {"precision", set(&TrainJob::precision)},
      {"cuda_kernels", set(&TrainJob::cuda_kernels)},
      {"rank_exchange", set(&TrainJob::rank_exchange)},
      {"cuda_graph", set(&TrainJob::cuda_graph)},
      {"impression_negatives", set(&TrainJob::impression_negatives)},
      {"threads", set(&TrainJob::threads)},
      {"seed", set(&TrainJob::seed)},
      {"eval", set(&TrainJob::eval)},
      {"eval_users", set(&TrainJob::eval_users)},
      {"validation_users", set(&TrainJob::validation_users)},
      {"early_stop_metric", set(&TrainJob::early_stop_metric)},
      {"patience", set(&TrainJob::patience)},
      {"resume", set(&TrainJob::resume)},
      {"warm_start", [](TrainJob& j, py::handle v) { j.warm_start = py::str(v).cast<std::string>(); }},
      {"update", set(&TrainJob::update)},
      {"events", [](TrainJob& j, py::handle v) { j.events = strings_of(v); }},
      {"exclude_events", [](TrainJob& j, py::handle v) { j.exclude_events = strings_of(v); }},
      {"exclude_latest", set(&TrainJob::exclude_latest)},
      {"use_case", set(&TrainJob::use_case)},
      {"event_map", [](TrainJob& j, py::handle v) { j.event_map = strings_of(v); }},
      {"candidates", [](TrainJob& j, py::handle v) { j.candidates = strings_of(v); }},
      {"metadata", set(&TrainJob::metadata)},
      {"text_buckets", set(&TrainJob::text_buckets)},
      {"context", [](TrainJob& j, py::handle v) { j.context = strings_of(v); }},
      {"half_life_days", set(&TrainJob::half_life_days)},
      {"popularity_count", set(&TrainJob::popularity_count)},
      {"popularity_window_days", set(&TrainJob::popularity_window_days)},
      {"min_co_count", set(&TrainJob::min_co_count)},
      {"popularity_discount", set(&TrainJob::popularity_discount)},
      {"neighbors", set(&TrainJob::neighbors)},
      {"co_occurrence", set(&TrainJob::co_occurrence)},
      {"order_field", set(&TrainJob::order_field)},
      {"session_gap_hours", set(&TrainJob::session_gap_hours)},
      {"metadata_similarity", set(&TrainJob::metadata_similarity)},
      {"trend_window_days", set(&TrainJob::trend_window_days)},
      {"trend_smoothing", set(&TrainJob::trend_smoothing)},
      {"transition_window", set(&TrainJob::transition_window)},
      {"transition_decay", set(&TrainJob::transition_decay)},
      {"recent_items", set(&TrainJob::recent_items)},
      {"recent_decay", set(&TrainJob::recent_decay)},
      {"hidden", set(&TrainJob::hidden)},
      {"blocks", set(&TrainJob::blocks)},
      {"heads", set(&TrainJob::heads)},
      {"max_sequence", set(&TrainJob::max_sequence)},
      {"dropout", set(&TrainJob::dropout)},
      {"gbce_t", set(&TrainJob::gbce_t)},
  };
  return table;
}

TrainJob job_of(const fs::path& data, const fs::path& out, const py::dict& options) {
  TrainJob job;
  job.data = data;
  job.out = out;
  job.progress = false;  // the terminal line of the command line; Python draws its own
  for (const auto& [key, value] : options) {
    const std::string name = key.cast<std::string>();
    const auto it = setters().find(name);
    if (it == setters().end()) {
      std::string known;
      for (const auto& [k, _] : setters()) known += (known.empty() ? "" : ", ") + k;
      throw Error("train: unknown option '" + name + "'; the options are " + known);
    }
    try {
      it->second(job, value);
    } catch (const py::cast_error&) {
      throw Error("train: option '" + name + "' has the wrong type (" +
                  std::string(py::str(py::type::of(value).attr("__name__"))) + ")");
    }
  }
  TB_CHECK(fs::is_directory(data), "train: data " + data.string() + " is not a dataset directory");
  // A use case sets the model first (train_use_case applies the defaults then).
  if (job.use_case.empty()) apply_model_defaults(job, [&](const std::string& name) { return options.contains(name); });
  return job;
}

py::dict record_dict(const host::EpochRecord& r) {
  py::dict d;
  d["epoch"] = r.epoch;
  d["loss"] = r.loss;
  d["samples"] = r.samples;
  d["seconds"] = r.seconds;
  d["metrics"] = r.metrics;
  return d;
}

// Runs the job without the GIL. progress(epoch, epochs, done, total, loss) and on_epoch(record)
// are called with it, progress at most ten times a second; Ctrl-C stops the run between batches.
py::dict train(const fs::path& data, const fs::path& out, const py::dict& options, py::object progress,
               py::object on_epoch, py::object log_sink) {
  TrainJob job = job_of(data, out, options);
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  job.on_progress = [&](const host::TrainProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (p.done != p.total && now - last < std::chrono::milliseconds(100)) return;
    last = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (!progress.is_none()) progress(p.epoch, p.epochs, p.done, p.total, p.loss);
  };
  job.on_epoch = [&](const host::EpochRecord& r) {
    py::gil_scoped_acquire gil;
    if (!on_epoch.is_none()) on_epoch(record_dict(r));
  };
  PythonLog log(log_sink);
  host::TrainResult result;
  {
    py::gil_scoped_release release;
    result = job.use_case.empty()
                 ? host::run_training(job, log)
                 : host::train_use_case(job, [&](const std::string& name) { return options.contains(name); }, log);
  }
  log.flush();
  py::list history;
  for (const host::EpochRecord& r : result.history) history.append(record_dict(r));
  py::dict summary;
  summary["backend"] = result.backend;
  summary["history"] = history;
  summary["best_epoch"] = result.best_epoch;
  summary["popularity"] = result.popularity;
  return summary;
}

// recommenders: every use case of a domain the data supports (host/use_cases.h); the listing of
// recommenders.json as a JSON string.
std::string recommenders(const fs::path& data, const fs::path& out, const std::string& domain,
                         const std::vector<std::string>& event_map, const std::vector<std::string>& candidates,
                         uint32_t threads, uint64_t seed, py::object log_sink) {
  host::RecommendersJob job;
  job.data = data;
  job.out = out;
  job.domain = domain;
  job.event_map = event_map;
  job.candidates = candidates;
  job.threads = threads;
  job.seed = seed;
  job.progress = false;
  PythonLog log(log_sink);
  nlohmann::json listing;
  {
    py::gil_scoped_release release;
    listing = host::train_recommenders(job, log);
  }
  log.flush();
  return listing.dump();
}

}  // namespace

void bind_training(py::module_& m) {
  m.def("recommenders", &recommenders, py::arg("data"), py::arg("out"), py::arg("domain"), py::arg("event_map"),
        py::arg("candidates"), py::arg("threads"), py::arg("seed"), py::arg("log"),
        "Trains every use case of `domain` the dataset supports into `out`/<use-case>.");
  m.def("train", &train, py::arg("data"), py::arg("out"), py::arg("options"), py::arg("progress"),
        py::arg("on_epoch"), py::arg("log"),
        "Trains a model on the dataset directory `data` into the model directory `out`.");
}

}  // namespace tastebud::python
