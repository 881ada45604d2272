// An std::ostream whose complete lines go to a Python callable (print, logging.info, a list's
// append), taking the GIL for each line: the library's logs reach a notebook, not the C stdout.
#pragma once

#include <ostream>
#include <streambuf>
#include <string>

#include <pybind11/pybind11.h>

namespace tastebud::python {

class PythonLines : public std::streambuf {
 public:
  explicit PythonLines(pybind11::object sink) : sink_(std::move(sink)) {}
  ~PythonLines() override {
    if (!line_.empty()) emit();
  }

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return 0;
    if (c == '\n') emit();
    else line_ += static_cast<char>(c);
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    for (std::streamsize k = 0; k < n; ++k) overflow(static_cast<unsigned char>(s[k]));
    return n;
  }

 private:
  void emit() {
    if (!sink_.is_none()) {
      pybind11::gil_scoped_acquire gil;
      try {
        sink_(line_);
      } catch (pybind11::error_already_set& e) {
        e.discard_as_unraisable("tastebud log sink");  // a failing logger must not stop training
      }
    }
    line_.clear();
  }

  pybind11::object sink_;
  std::string line_;
};

// The stream over a PythonLines buffer; owns it.
class PythonLog : public std::ostream {
 public:
  explicit PythonLog(pybind11::object sink) : std::ostream(nullptr), lines_(std::move(sink)) { rdbuf(&lines_); }

 private:
  PythonLines lines_;
};

}  // namespace tastebud::python
