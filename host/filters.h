// Filter expressions in the managed service's syntax (../shared/PERSONALIZE.md):
//
//   INCLUDE ItemID WHERE Items.GENRES IN ($GENRE) AND Items.PRICE <= 100
//   | EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("purchase")
//
// Fields: Items.<column> (categorical, numerical, CREATION_TIMESTAMP, ITEM_ID) and
// Interactions.EVENT_TYPE (the items this user has events of those types with). Operators: IN,
// NOT IN, =, <, <=, >, >= (comparisons on numbers only); AND binds tighter than OR; parentheses
// group. Values: "strings", numbers, $PARAM placeholders filled per query from filterValues, whose
// values are literal lists themselves ("\"Comedy\",\"Drama\"", "100").
//
// Combining expressions joined by `|` follows the service: the result is the union of the INCLUDE
// expressions (every item when there is none) minus the union of the EXCLUDE expressions. An
// EXCLUDE expression whose placeholders have no value in a query is skipped for that query; an
// INCLUDE expression needs all of its values. A condition on a null field is false (so an item
// without a GENRES value is neither IN nor NOT IN any list). Keywords and field names are matched
// without regard to case.
//
// Who is asking (issue 14):
//   INCLUDE ItemID WHERE Items.GENRES IN ("kids") IF CurrentUser.AGE < 13
// An expression with an IF clause counts for a query only when the asking user satisfies it
// (conditions on CurrentUser.<field>, or Users.<field>, the same thing there); for an unknown user
// or an item query the clause is false and the expression is skipped.
//   INCLUDE ItemID WHERE Items.GENRES IN CurrentItem.GENRES
// A value may name a field of the query's item (CurrentItem.<field>, related-items queries) or of
// the asking user (CurrentUser.<field>); it stands for that field's values (none when the query
// has no such item or user, or the field is null), with or without parentheses.
//   INCLUDE UserID WHERE Users.MEMBERSHIP IN ("gold") | EXCLUDE UserID WHERE Users.AGE < 18
// UserID expressions select users (batch-segment's --filter) by Users.<field> (and USER_ID) and by
// Interactions.EVENT_TYPE (users with events of those types, on any item, as in the service);
// expressions of one filter select either items or users.
//   INCLUDE ItemID WHERE Items.CREATION_TIMESTAMP >= NOW - 7 DAYS
// Time-relative values: NOW, optionally followed by + or - a number and a unit (SECONDS, MINUTES,
// HOURS, DAYS, WEEKS; singular too), in Unix seconds. NOW is ItemCatalog::now: the latest
// interaction timestamp of the dataset (so a job's answers do not depend on the wall clock), or
// batch-infer's --now.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tastebud/error.h"

namespace tastebud::host {

// A malformed expression or a value that does not fit its field. position() is the 1-based
// character position in the expression (or in the parameter's value) where the problem starts;
// what() says the same in words and shows the text with a caret.
class FilterError : public Error {
 public:
  FilterError(const std::string& message, size_t position);
  size_t position() const { return position_; }

 private:
  size_t position_;
};

// What filters read about the catalog, in the model's item order. Built from the dataset the model
// was trained on (inference.h) or by hand in tests.
struct ItemCategoricalColumn {
  std::string name;
  std::vector<std::string> vocabulary;
  std::vector<uint64_t> offsets;  // items + 1; an empty slice is null
  std::vector<uint32_t> values;   // indices into vocabulary
};
struct ItemNumericalColumn {
  std::string name;
  std::vector<double> values;  // NaN = null
};
// The users' metadata in the model's user order (CurrentUser and Users conditions).
struct UserCatalog {
  std::vector<std::string> user_ids;
  std::vector<ItemCategoricalColumn> categorical;
  std::vector<ItemNumericalColumn> numerical;
  // The distinct event types each user has events of (indices into ItemCatalog::event_types),
  // CSR over users; empty: none known. For `INCLUDE UserID WHERE Interactions.EVENT_TYPE IN (...)`.
  std::vector<uint64_t> event_type_offsets;
  std::vector<uint32_t> event_types;

  uint32_t num_users() const { return static_cast<uint32_t>(user_ids.size()); }
};

struct ItemCatalog {
  std::vector<std::string> item_ids;
  std::vector<ItemCategoricalColumn> categorical;
  std::vector<ItemNumericalColumn> numerical;  // CREATION_TIMESTAMP is one of them
  std::vector<std::string> textual;            // names only: textual fields cannot be filtered on
  std::vector<std::string> event_types;        // Interactions.EVENT_TYPE vocabulary
  UserCatalog users;                           // may be empty (no user metadata)
  double now = NAN;                            // NOW in Unix seconds; NaN: NOW is an error

  uint32_t num_items() const { return static_cast<uint32_t>(item_ids.size()); }
};

// One event of the querying user: an item (model index) and its event type (index into
// ItemCatalog::event_types).
struct UserEvent {
  uint32_t item = 0;
  uint32_t event_type = 0;
};

// filterValues of one query: parameter name (without '$', case as written) -> literal list text.
using FilterValues = std::map<std::string, std::string>;

// One query as a filter sees it: its values, the asking user's events, and the asking user and
// the query's item as model indices (-1: none, or unknown to the model).
struct FilterQuery {
  const FilterValues& values;
  std::span<const UserEvent> events = {};
  int64_t user = -1;
  int64_t item = -1;
};

struct FilterAst;  // the parsed expressions (filters.cpp)

// A parsed and bound filter: parse once before the job, evaluate per query. Evaluation is const
// and thread-safe.
class Filter {
 public:
  // Parses and checks the expression against the catalog (unknown fields, textual fields, `<` on a
  // categorical field, a list where one value is needed). Throws FilterError with the position.
  Filter(std::string_view expression, const ItemCatalog& catalog);
  ~Filter();
  Filter(Filter&&) noexcept;
  Filter& operator=(Filter&&) noexcept;

  const std::string& expression() const { return expression_; }
  // Placeholder names, without '$', in order of first use.
  const std::vector<std::string>& parameters() const { return parameters_; }
  // True when some condition reads the querying user's events.
  bool uses_interactions() const { return uses_interactions_; }
  // True when the answer depends on who asks beyond their events: an IF clause or a
  // CurrentUser value.
  bool depends_on_user() const { return depends_on_user_; }
  // True for UserID expressions: evaluate() then gives one flag per user.
  bool selects_users() const { return selects_users_; }

  // allowed[i] = 1 when item i passes, else 0. `events` are the querying user's (empty for an
  // unknown user or an item query). Throws FilterError (position within the value) for a bad
  // filterValues entry, and tastebud::Error when an INCLUDE expression lacks one of its values.
  void evaluate(const FilterValues& values, std::span<const UserEvent> events,
                std::vector<uint8_t>& allowed) const;
  // The same with the asking user and the query's item known (IF clauses, CurrentUser and
  // CurrentItem values). For a UserID filter, allowed[u] per user.
  void evaluate(const FilterQuery& query, std::vector<uint8_t>& allowed) const;

 private:
  std::string expression_;
  const ItemCatalog* catalog_;
  std::unique_ptr<FilterAst> ast_;
  std::vector<std::string> parameters_;
  bool uses_interactions_ = false;
  bool depends_on_user_ = false;
  bool selects_users_ = false;
};

// Checks the syntax only (no catalog): throws FilterError with the position. Used by tests and by
// the command line before the dataset is opened.
void check_filter_syntax(std::string_view expression);
// True when the expressions select users (UserID), false for items (ItemID); throws as above.
bool filter_selects_users(std::string_view expression);
// The $PARAM names (without "$") an INCLUDE expression of the filter uses: a query or a promotion
// must give each a value (an EXCLUDE expression without its values is skipped). Throws as above.
std::vector<std::string> include_parameters(std::string_view expression);

// An item-attribute condition as batch-segment reads it: the WHERE part alone, e.g.
// `ITEMS.GENRES = "Comedy" AND ITEMS.PRICE < 20`. Returns the matching items as a mask; throws
// FilterError with the position.
std::vector<uint8_t> match_item_attributes(std::string_view condition, const ItemCatalog& catalog);

}  // namespace tastebud::host
