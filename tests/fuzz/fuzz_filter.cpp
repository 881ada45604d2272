// Filter expressions and segment attribute conditions: the first line is the expression, the
// rest the value of $G. Problems are FilterErrors; evaluation of a bound filter throws nothing
// but tastebud::Error (a missing or malformed value of the query).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "host/filters.h"
#include "tastebud/error.h"

using namespace tastebud;
using namespace tastebud::host;

namespace {

ItemCatalog catalog() {
  ItemCatalog c;
  c.item_ids = {"i0", "i1", "i2", "i3", "i4", "i5"};
  c.categorical.push_back({"GENRES", {"Comedy", "Drama", "Action"}, {0, 1, 2, 4, 4, 5, 6}, {0, 1, 0, 1, 2, 0}});
  c.numerical.push_back({"PRICE", {5, 10, 15, NAN, 20, 25}});
  c.numerical.push_back({"CREATION_TIMESTAMP", {1, 2, 3, 4, 5, 6}});
  c.textual = {"DESCRIPTION"};
  c.event_types = {"view", "purchase"};
  c.users.user_ids = {"u0", "u1"};
  c.users.numerical.push_back({"AGE", {12, NAN}});
  c.users.categorical.push_back({"MEMBERSHIP", {"gold"}, {0, 1, 1}, {0}});
  c.now = 10;
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ItemCatalog items = catalog();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t newline = text.find('\n');
  const std::string expression = text.substr(0, newline);
  const std::string value = newline == std::string::npos ? std::string() : text.substr(newline + 1);
  try {
    check_filter_syntax(expression);
  } catch (const FilterError&) {
  }
  try {
    const Filter filter(expression, items);
    std::vector<uint8_t> allowed;
    const std::vector<UserEvent> events{{1, 0}, {4, 1}};
    // A query's values may be malformed (FilterError) or missing for an INCLUDE (Error).
    for (const FilterValues& values : {FilterValues{{"G", value}, {"g", value}, {"MAX", value}}, FilterValues{}}) {
      try {
        filter.evaluate(values, events, allowed);
        // As the asking user u0 about item i2 (IF clauses, CurrentUser and CurrentItem values).
        filter.evaluate(FilterQuery{values, events, 0, 2}, allowed);
      } catch (const Error&) {
      }
    }
  } catch (const FilterError&) {
  }
  try {
    match_item_attributes(expression, items);
  } catch (const FilterError&) {
  }
  return 0;
}
