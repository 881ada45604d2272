// Model: a trained model directory answering queries through the same Recommender as
// `tastebud batch-infer` (host/inference.h). Each call is turned into the batch job's query lines,
// answered by Recommender::answer_chunk without the GIL, and the answers are unpacked into
// arrays, so a call's answer is the command line's answer to the same line.
#include <omp.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "bindings.h"
#include "host/inference.h"
#include "tastebud/engine/gpu_scorer.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace py = pybind11;

namespace tastebud::python {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// What a group of query lines answered, in line order.
struct Answers {
  std::vector<std::vector<std::string>> ids;
  std::vector<std::vector<float>> scores;  // NaN where the answer's score is null
  std::vector<std::string> reasons;        // "" when the answer gives none
};

std::string resolve_device(const std::string& device) {
  if (device == "cpu") return "cpu";
  if (device != "auto" && device != "cuda")
    throw Error("Model: device must be 'auto', 'cpu' or 'cuda', not '" + device + "'");
  std::string reason;
  if (gpu_scorer_available(&reason)) return "cuda";
  if (device == "cuda") throw Error("device cuda: " + reason);
  return "cpu";
}

}  // namespace

class Model {
 public:
  Model(const fs::path& dir, const std::string& device, uint32_t threads, bool normalize_scores)
      : dir_(dir), device_(resolve_device(device)), threads_(threads), normalize_scores_(normalize_scores) {
    host::ModelData model = host::load_model_dir(dir);
    config_ = read_file(dir / "config.json");
    if (!host::neural_kind(model.kind)) device_ = "cpu";  // only the NeuMF family scores on the GPU
    host::InferenceContext context = host::load_context(model, fs::path());
    default_ = std::make_shared<host::Recommender>(std::move(model), std::move(context), options("", false));
  }

  const host::ModelData& data() const { return default_->model(); }
  const fs::path& dir() const { return dir_; }
  const std::string& config() const { return config_; }

  // Answers query lines with the recommender for this filter (built once per filter).
  Answers ask(const std::vector<std::string>& lines, const std::string& filter, bool keep_seen) {
    std::shared_ptr<const host::Recommender> recommender = recommender_for(filter, keep_seen);
    std::vector<std::string> answers(lines.size());
    std::vector<host::Recommender::LineOutcome> outcomes(lines.size());
    {
      py::gil_scoped_release release;
      const int workers = threads_ > 0 ? static_cast<int>(threads_) : omp_get_max_threads();
      recommender->answer_chunk(lines, answers, outcomes, workers);
    }
    Answers out;
    for (size_t k = 0; k < answers.size(); ++k) {
      const json answer = json::parse(answers[k]);
      if (!answer.at("error").is_null()) {
        throw Error(answer.at("error").get<std::string>() + " (query " + lines[k] + ")");
      }
      const json& output = answer.at("output");
      std::vector<std::string>& ids = out.ids.emplace_back();
      std::vector<float>& scores = out.scores.emplace_back();
      for (const json& id : output.at("recommendedItems")) ids.push_back(id.get<std::string>());
      for (const json& s : output.at("scores")) scores.push_back(s.is_null() ? NAN : s.get<float>());
      out.reasons.push_back(output.value("reason", std::string()));
    }
    return out;
  }

 private:
  host::InferenceOptions options(const std::string& filter, bool keep_seen) const {
    host::InferenceOptions o;
    o.filter = filter;
    o.keep_seen = keep_seen;
    o.device = device_;
    o.threads = threads_;
    o.normalize_scores = normalize_scores_;
    return o;
  }

  std::shared_ptr<const host::Recommender> recommender_for(const std::string& filter, bool keep_seen) {
    if (filter.empty() && !keep_seen) return default_;
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = filtered_[{filter, keep_seen}];
    if (!slot) {
      if (!filter.empty()) host::check_filter_syntax(filter);
      // Every recommender of this model shares its one copy in memory.
      const std::shared_ptr<const host::ModelData> model = default_->shared_model();
      if (filter.empty()) {
        slot = std::make_shared<host::Recommender>(model, host::load_context(*model, fs::path()), options(filter, keep_seen));
        return slot;
      }
      if (model->data.empty() || !fs::exists(model->data))
        throw Error("filter reads item metadata and events from the dataset the model was trained on, " +
                    (model->data.empty() ? std::string("(not recorded)") : model->data.string()) + ", which is missing");
      host::InferenceContext context = host::load_context(*model, model->data);
      slot = std::make_shared<host::Recommender>(model, std::move(context), options(filter, keep_seen));
    }
    return slot;
  }

  fs::path dir_;
  std::string device_;
  uint32_t threads_;
  bool normalize_scores_;  // user answers' scores as shares of the allowed catalog (the service's scale)
  std::string config_;
  std::shared_ptr<const host::Recommender> default_;
  std::mutex mutex_;
  std::map<std::pair<std::string, bool>, std::shared_ptr<const host::Recommender>> filtered_;
};

namespace {

json filter_values_json(const py::object& values) {
  json j = json::object();
  if (values.is_none()) return j;
  for (const auto& [key, value] : values.cast<py::dict>()) {
    j[key.cast<std::string>()] = py::str(value).cast<std::string>();
  }
  return j;
}

std::string query_line(const char* key, const std::string& id, uint32_t n, const json& values) {
  json q{{key, id}, {"numResults", n}};
  if (!values.empty()) q["filterValues"] = values;
  return q.dump();
}

// (ids: list of lists, scores: float32 [queries x width] padded with NaN, reasons: list).
py::tuple to_python(const Answers& a) {
  size_t width = 0;
  for (const auto& ids : a.ids) width = std::max(width, ids.size());
  py::array_t<float> scores({a.ids.size(), width});
  auto s = scores.mutable_unchecked<2>();
  for (size_t q = 0; q < a.ids.size(); ++q)
    for (size_t k = 0; k < width; ++k) s(q, k) = k < a.scores[q].size() ? a.scores[q][k] : NAN;
  return py::make_tuple(a.ids, scores, a.reasons);
}

py::tuple recommend(Model& model, const std::vector<std::string>& users, uint32_t n, const std::string& filter,
                    const py::object& filter_values, bool keep_seen) {
  const json values = filter_values_json(filter_values);
  std::vector<std::string> lines;
  for (const std::string& u : users) lines.push_back(query_line("userId", u, n, values));
  return to_python(model.ask(lines, filter, keep_seen));
}

py::tuple similar_items(Model& model, const std::vector<std::string>& items, uint32_t n,
                        const std::string& filter, const py::object& filter_values) {
  const json values = filter_values_json(filter_values);
  std::vector<std::string> lines;
  for (const std::string& i : items) lines.push_back(query_line("itemId", i, n, values));
  return to_python(model.ask(lines, filter, false));
}

py::tuple rank(Model& model, const std::string& user, const std::vector<std::string>& items,
               const std::string& filter, const py::object& filter_values) {
  json q{{"userId", user}, {"itemList", items}};
  const json values = filter_values_json(filter_values);
  if (!values.empty()) q["filterValues"] = values;
  return to_python(model.ask({q.dump()}, filter, false));
}

// A read-only NumPy view of a tensor of the model, kept alive by the Python Model object.
py::array view(const py::object& self, const Tensor& t, const char* what) {
  const Model& model = self.cast<const Model&>();
  if (t.values.empty()) throw Error(fmt::format("{} model has no {}", host::to_string(model.data().kind), what));
  py::array a(py::dtype::of<float>(), {t.rows(), t.cols()},
              {t.cols() * sizeof(float), sizeof(float)}, t.values.data(), self);
  a.attr("setflags")(py::arg("write") = false);
  return a;
}

const ModelParams& params_of(const py::object& self) {
  const host::ModelData& data = self.cast<const Model&>().data();
  if (data.sequence) throw Error("sasrec has no per-user factors: it reads each user's latest items");
  if (!data.params) throw Error(fmt::format("{} is a recipe: it has no learned factors", host::to_string(data.kind)));
  return *data.params;
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<Model>(m, "Model")
      .def(py::init<const fs::path&, const std::string&, uint32_t, bool>(), py::arg("dir"), py::arg("device") = "cpu",
           py::arg("threads") = 0, py::arg("normalize_scores") = false)
      .def_property_readonly("kind", [](const Model& m) { return std::string(host::to_string(m.data().kind)); })
      .def_property_readonly("dir", [](const Model& m) { return m.dir(); })
      .def_property_readonly("config_json", [](const Model& m) { return m.config(); })
      .def_property_readonly("user_ids", [](const Model& m) { return m.data().user_ids; })
      .def_property_readonly("item_ids", [](const Model& m) { return m.data().item_ids; })
      .def_property_readonly("user_factors", [](const py::object& self) {
        const ModelParams& p = params_of(self);
        return p.config.has_gmf() ? view(self, p.user_gmf, "GMF factors") : view(self, p.user_mlp, "MLP embeddings");
      })
      .def_property_readonly("item_factors", [](const py::object& self) {
        const ModelParams& p = params_of(self);
        return p.config.has_gmf() ? view(self, p.item_gmf, "GMF factors") : view(self, p.item_mlp, "MLP embeddings");
      })
      .def_property_readonly("user_mlp_embeddings", [](const py::object& self) {
        return view(self, params_of(self).user_mlp, "MLP embeddings");
      })
      .def_property_readonly("item_mlp_embeddings", [](const py::object& self) {
        return view(self, params_of(self).item_mlp, "MLP embeddings");
      })
      .def("recommend", &recommend, py::arg("users"), py::arg("n"), py::arg("filter"), py::arg("filter_values"),
           py::arg("keep_seen"))
      .def("similar_items", &similar_items, py::arg("items"), py::arg("n"), py::arg("filter"),
           py::arg("filter_values"))
      .def("rank", &rank, py::arg("user"), py::arg("items"), py::arg("filter"), py::arg("filter_values"));
}

}  // namespace tastebud::python
