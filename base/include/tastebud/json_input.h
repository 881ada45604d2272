// JSON as it comes in (files, job configs, batch lines): nesting deeper than kMaxJsonDepth is
// refused by a linear scan before nlohmann parses it. nlohmann copies and dumps a value by
// recursion, once per level, so a 100,000-deep line would overflow the stack; nothing this project
// reads nests more than a few levels.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "tastebud/error.h"

namespace tastebud {

inline constexpr size_t kMaxJsonDepth = 64;

// True when the brackets of `text` (outside strings) nest deeper than `limit`.
inline bool json_nested_deeper_than(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

// At most `limit` characters of a JSON text for an error message, "..." marking a cut.
inline std::string shortened(std::string text, size_t limit = 120) {
  if (text.size() > limit) text = text.substr(0, limit) + "...";
  return text;
}

// nlohmann's message for a parse error, its "last read: '...'" echo cut to the last `keep`
// characters: the lexer keeps every byte since the token began, whitespace and all (each control
// byte spelled <U+000A>), so a long run of blanks before a bad byte made an echo of kilobytes.
inline std::string json_error_message(const nlohmann::json::exception& e, size_t keep = 60) {
  std::string message = e.what();
  constexpr std::string_view kEcho = "; last read: '";
  const size_t at = message.find(kEcho);
  if (at == std::string::npos) return shortened(std::move(message), 400);
  const size_t from = at + kEcho.size();
  if (message.size() - from > keep + 1) message = message.substr(0, from) + "..." + message.substr(message.size() - keep - 1);
  return shortened(std::move(message), 400);
}

// `text` parsed; Error "WHERE: not JSON: ..." or "WHERE: JSON nested deeper than 64 levels".
inline nlohmann::json parse_json(std::string_view text, std::string_view where) {
  if (json_nested_deeper_than(text, kMaxJsonDepth))
    throw Error(fmt::format("{}: JSON nested deeper than {} levels", where, kMaxJsonDepth));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not JSON: {}", where, json_error_message(e)));
  }
}

}  // namespace tastebud
