// The binding families of tastebud._core, one file each.
#pragma once

#include <pybind11/pybind11.h>

namespace tastebud::python {

void bind_datasets(pybind11::module_& m);   // import_dataset           (datasets.cpp)
void bind_training(pybind11::module_& m);   // train                    (training.cpp)
void bind_model(pybind11::module_& m);      // Model: recommend, rank   (model.cpp)
void bind_artifacts(pybind11::module_& m);  // export_onnx, write_report (artifacts.cpp)

}  // namespace tastebud::python
