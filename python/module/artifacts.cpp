// What a model directory turns into: an ONNX file (host/export_onnx.h) and the HTML report
// (host/report.h).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include "bindings.h"
#include "host/export_onnx.h"
#include "host/report.h"

namespace py = pybind11;

namespace tastebud::python {

void bind_artifacts(py::module_& m) {
  m.def(
      "export_onnx",
      [](const std::filesystem::path& model_dir, const std::filesystem::path& out) {
        host::OnnxExport e;
        {
          py::gil_scoped_release release;
          e = host::export_onnx(model_dir, out);
        }
        py::dict d;
        d["model"] = e.model;
        d["ids"] = e.ids;
        d["users"] = e.users;
        d["items"] = e.items;
        d["bytes"] = e.bytes;
        return d;
      },
      py::arg("model_dir"), py::arg("out"), "Writes the model as ONNX to `out` and its ids to `out`.ids.json.");
  m.def(
      "write_report",
      [](const std::filesystem::path& model_dir, const std::filesystem::path& out, const std::filesystem::path& svg_dir) {
        py::gil_scoped_release release;
        return host::write_report(model_dir, out, svg_dir);
      },
      py::arg("model_dir"), py::arg("out"), py::arg("svg_dir"),
      "Writes the HTML report (and with svg_dir each chart as an SVG file); returns its path.");
}

}  // namespace tastebud::python
