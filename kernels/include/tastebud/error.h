#pragma once

#include <stdexcept>
#include <string>

namespace tastebud {

// The one error type of the project. Library code throws it; the command line prints what() and
// exits non-zero. Input errors put file, line and field in the message.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace tastebud

#define TB_CHECK(cond, msg)                                                   \
  do {                                                                        \
    if (!(cond)) throw ::tastebud::Error(std::string(msg));                   \
  } while (0)
