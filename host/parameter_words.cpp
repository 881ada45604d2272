#include "host/parameter_words.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include <fmt/format.h>

namespace tastebud::host {
namespace {

struct Parameter {
  std::string_view name;
  std::string_view value;  // empty when the message names the parameter alone
};

bool is_identifier(std::string_view s) {
  if (s.empty() || !std::islower(static_cast<unsigned char>(s.front()))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_';
  });
}

// `name` or `name=value` between backticks; nullopt for any other backticked text.
std::optional<Parameter> parse_parameter(std::string_view inside) {
  const size_t eq = inside.find('=');
  Parameter p{inside.substr(0, eq), eq == std::string_view::npos ? std::string_view{} : inside.substr(eq + 1)};
  if (!is_identifier(p.name)) return std::nullopt;
  if (eq != std::string_view::npos && (p.value.empty() || p.value.find(' ') != std::string_view::npos)) return std::nullopt;
  return p;
}

template <typename Say>
std::string rewrite(std::string_view message, Say say) {
  std::string out;
  out.reserve(message.size() + 16);
  size_t at = 0;
  while (at < message.size()) {
    const size_t open = message.find('`', at);
    const size_t close = open == std::string_view::npos ? open : message.find('`', open + 1);
    if (close == std::string_view::npos) break;
    out.append(message.substr(at, open - at));
    const std::string_view inside = message.substr(open + 1, close - open - 1);
    if (auto p = parse_parameter(inside)) {
      out += say(*p);
    } else {
      out.append(message.substr(open, close - open + 1));
    }
    at = close + 1;
  }
  if (at < message.size()) out.append(message.substr(at));
  return out;
}

std::string flag_of(std::string_view name) {
  std::string flag(name);
  std::replace(flag.begin(), flag.end(), '_', '-');
  return fmt::format("--{}", flag);
}

}  // namespace

std::string in_flag_words(std::string_view message) {
  return rewrite(message, [](const Parameter& p) {
    return p.value.empty() ? flag_of(p.name) : fmt::format("{} {}", flag_of(p.name), p.value);
  });
}

std::string in_python_words(std::string_view message) {
  return rewrite(message, [](const Parameter& p) {
    return p.value.empty() ? fmt::format("{}=", p.name) : fmt::format("{}=\"{}\"", p.name, p.value);
  });
}

}  // namespace tastebud::host
