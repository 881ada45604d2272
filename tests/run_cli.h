// The command line as the tests drive it: `tastebud ARGS` (TASTEBUD_BINARY, set by
// tests/CMakeLists.txt), its stdout and stderr collected.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace tastebud::testing_cli {

// `tastebud ARGS` with stdout and stderr in `output`; the exit status (-1: killed by a signal).
inline int run_cli(const std::string& args, std::string* output = nullptr) {
  const std::string command = std::string(TASTEBUD_BINARY) + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string text;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) text.append(buffer, n);
  const int status = ::pclose(pipe);
  if (output) *output = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace tastebud::testing_cli
