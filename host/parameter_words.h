#pragma once

#include <string>
#include <string_view>

namespace tastebud::host {

// Library code (engine/, datasets/, kernels/, base/) names the parameter a message is about, never a
// front end's spelling of it: `batch_size` must be positive, `device=cuda`: no GPU. A front end
// says the same in its own words before it shows the message:
//   in_flag_words:   `batch_size` -> --batch-size,  `device=cuda` -> --device cuda   (the CLI)
//   in_python_words: `batch_size` -> batch_size=,   `device=cuda` -> device="cuda"   (the package)
// Only a backticked lower-case identifier, optionally with =value, is a parameter; anything else in
// backticks (`tastebud import`) is left as it is.
std::string in_flag_words(std::string_view message);
std::string in_python_words(std::string_view message);

}  // namespace tastebud::host
