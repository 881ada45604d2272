// The command line as the tests drive it: `tastebud ARGS` (TASTEBUD_BINARY, set by
// tests/CMakeLists.txt), its stdout and stderr collected.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

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

// `tastebud ARGS` started in a child process (fork and exec), its stdout discarded, and its stderr
// too unless `keep_stderr`; the child's PID, for the caller to wait on, stop or kill.
inline pid_t spawn_cli(const std::vector<std::string>& args, bool keep_stderr = false) {
  const pid_t child = ::fork();
  if (child == 0) {
    std::vector<char*> argv{const_cast<char*>(TASTEBUD_BINARY)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (!std::freopen("/dev/null", "w", stdout)) ::_exit(126);
    if (!keep_stderr && !std::freopen("/dev/null", "w", stderr)) ::_exit(126);
    ::execv(TASTEBUD_BINARY, argv.data());
    ::_exit(127);
  }
  return child;
}

}  // namespace tastebud::testing_cli
