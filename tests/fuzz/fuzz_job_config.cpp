// A batch job's configuration (--job-config JSON: exploration, ranking influence, promotions with
// their filters and filterValues, metadata columns): every problem is a tastebud::Error naming the
// key, deep nesting included (capped at parse time), never a crash or a runaway echo.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "host/job_config.h"
#include "tastebud/error.h"

using namespace tastebud;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    host::parse_job_config(text, "job.json");
  } catch (const Error& e) {
    if (std::string_view(e.what()).size() > 4096) std::abort();  // a value echoed whole
  }
  return 0;
}
