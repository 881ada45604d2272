// tastebud._core: the C++ half of the Python package (python/src/tastebud/ is the other half).
// One file per binding family; each adds its functions to the module.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "host/filters.h"
#include "host/parameter_words.h"
#include "tastebud/error.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "tastebud's C++ libraries (datasets, engine, host) for the tastebud Python package";
  // Every library error is a tastebud.Error carrying the engine's message, with the parameters it
  // names said as keywords (batch_size=); a malformed filter is its subclass FilterError with the
  // position.
  static py::exception<tastebud::Error> error(m, "Error", PyExc_RuntimeError);
  static py::exception<tastebud::host::FilterError> filter_error(m, "FilterError", error.ptr());
  py::register_exception_translator([](std::exception_ptr raised) {
    try {
      if (raised) std::rethrow_exception(raised);
    } catch (const tastebud::host::FilterError& e) {
      filter_error(tastebud::host::in_python_words(e.what()).c_str());
    } catch (const tastebud::Error& e) {
      error(tastebud::host::in_python_words(e.what()).c_str());
    }
  });
  tastebud::python::bind_datasets(m);
  tastebud::python::bind_training(m);
  tastebud::python::bind_model(m);
  tastebud::python::bind_artifacts(m);
}
