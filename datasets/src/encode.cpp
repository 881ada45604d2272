#include "tastebud/datasets/encode.h"

#include <charconv>
#include <cmath>
#include <limits>

namespace tastebud::datasets {

bool parse_int64(std::string_view text, int64_t* value) {
  text = trim(text);
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, *value);
  return ec == std::errc() && ptr == end;
}

NumberParse parse_float(std::string_view text, float* value) {
  text = trim(text);
  if (text.empty()) return NumberParse::Empty;
  if (text.front() == '+') text.remove_prefix(1);
  // Parsed as double so that "1e39" reads as out of float's range rather than as a parse error.
  double d = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, d);
  if (ptr != end || text.empty()) return NumberParse::NotANumber;
  if (ec == std::errc::result_out_of_range) {
    // Underflow reads as zero; overflow is not finite.
    bool tiny = false;
    for (const char* p = text.data(); p < end; ++p) {
      if (*p == 'e' || *p == 'E') {
        tiny = p + 1 < end && p[1] == '-';
        break;
      }
    }
    if (!tiny) return NumberParse::NotFinite;
    d = 0;
  } else if (ec != std::errc()) {
    return NumberParse::NotANumber;
  }
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max()) {
    return NumberParse::NotFinite;
  }
  *value = static_cast<float>(d);
  return NumberParse::Ok;
}

bool parse_bool(std::string_view text, bool* value) {
  text = trim(text);
  auto equals = [&](std::string_view word) {
    if (text.size() != word.size()) return false;
    for (size_t i = 0; i < text.size(); ++i)
      if ((text[i] | 0x20) != word[i]) return false;
    return true;
  };
  if (text == "1" || equals("true")) {
    *value = true;
    return true;
  }
  if (text == "0" || equals("false")) {
    *value = false;
    return true;
  }
  return false;
}

}  // namespace tastebud::datasets
