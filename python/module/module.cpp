// tastebud._core: the C++ half of the Python package (python/src/tastebud/ is the other half).
// One file per binding family; each adds its functions to the module.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "host/filters.h"
#include "tastebud/error.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "tastebud's C++ libraries (datasets, engine, host) for the tastebud Python package";
  // Every library error is a tastebud.Error carrying the engine's message; a malformed filter is
  // its subclass FilterError with the position.
  // (translators run newest first, so the subclass is registered last).
  auto& error = py::register_exception<tastebud::Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<tastebud::host::FilterError>(m, "FilterError", error.ptr());
  tastebud::python::bind_datasets(m);
  tastebud::python::bind_training(m);
  tastebud::python::bind_model(m);
  tastebud::python::bind_artifacts(m);
}
