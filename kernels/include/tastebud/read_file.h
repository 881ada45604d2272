// Reads a whole file into a string; every library reads small files (metadata, schemas, model
// configs) this way.
#pragma once

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tastebud/error.h"

namespace tastebud {

// Throws tastebud::Error naming the file and the system's reason when it cannot be read.
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(path.string() + ": read failed");
  return text.str();
}

}  // namespace tastebud
