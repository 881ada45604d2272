// import_dataset: the Personalize-layout CSVs in, a dataset directory out (datasets/import.h).
#include <chrono>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "bindings.h"
#include "tastebud/datasets/import.h"
#include "tastebud/error.h"

namespace py = pybind11;

namespace tastebud::python {
namespace {

namespace fs = std::filesystem;

datasets::ImportMode parse_mode(const std::string& mode) {
  if (mode == "full") return datasets::ImportMode::Full;
  if (mode == "incremental") return datasets::ImportMode::Incremental;
  throw Error("import_dataset: mode must be 'full' or 'incremental', not '" + mode + "'");
}

py::dict import_files(const fs::path& out, const fs::path& interactions, const fs::path& users,
                      const fs::path& items, const fs::path& schema_dir, const std::string& mode,
                      bool overwrite, uint64_t max_bad_rows, py::object progress,
                      uint64_t memory_limit) {
  datasets::ImportOptions options;
  options.out = out;
  options.interactions = interactions;
  options.users = users;
  options.items = items;
  options.schema_dir = schema_dir;
  options.mode = parse_mode(mode);
  options.overwrite = overwrite;
  options.max_bad_rows = max_bad_rows;
  options.memory_limit = memory_limit;  // bytes; 0: a quarter of physical memory
  if (options.interactions.empty() && options.mode == datasets::ImportMode::Full)
    throw Error("import_dataset: give the interactions (a CSV path or a DataFrame)");
  std::vector<std::string> skipped;
  options.on_bad_row = [&](const std::string& message) { skipped.push_back(message); };
  // progress(bytes_read, bytes_total) of the interactions CSV, with the GIL, at most ten times a
  // second and once at the end.
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  if (!progress.is_none()) {
    options.on_progress = [&](uint64_t read, uint64_t total) {
      const auto now = std::chrono::steady_clock::now();
      if (read < total && now - last < std::chrono::milliseconds(100)) return;
      last = now;
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      progress(read, total);
    };
  }
  datasets::ImportReport r;
  {
    py::gil_scoped_release release;
    r = datasets::import_dataset(options);
  }
  py::dict report;
  report["path"] = out.string();
  report["rows_read"] = r.rows_read;
  report["interactions"] = r.interactions;
  report["duplicates"] = r.duplicates;
  report["bad_rows_skipped"] = r.bad_rows_skipped;
  report["bad_rows"] = skipped;
  report["users"] = r.users;
  report["items"] = r.items;
  report["new_users"] = r.new_users;
  report["new_items"] = r.new_items;
  report["seconds"] = r.seconds;
  report["memory_limit"] = r.memory_limit;
  report["runs_spilled"] = r.runs_spilled;
  return report;
}

}  // namespace

void bind_datasets(py::module_& m) {
  m.def("import_dataset", &import_files, py::arg("out"), py::arg("interactions"), py::arg("users"),
        py::arg("items"), py::arg("schema_dir"), py::arg("mode"), py::arg("overwrite"),
        py::arg("max_bad_rows"), py::arg("progress"), py::arg("memory_limit") = 0,
        "Encodes the CSV files into the dataset directory `out`; returns the import report.");
}

}  // namespace tastebud::python
