// Filter expressions (host/filters.h): every operator, AND/OR, $PARAM, `|`, and the position of
// each kind of mistake, on a six-item catalog whose answers are written out by hand.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <fmt/format.h>

#include "host/filters.h"

namespace tastebud::host {
namespace {

//        GENRES            PRICE
//   i0   Comedy            5
//   i1   Drama             10
//   i2   Comedy|Drama      15
//   i3   (null)            (null)
//   i4   Action            20
//   i5   Comedy            25
ItemCatalog make_catalog() {
  ItemCatalog c;
  c.item_ids = {"i0", "i1", "i2", "i3", "i4", "i5"};
  ItemCategoricalColumn genres;
  genres.name = "GENRES";
  genres.vocabulary = {"Comedy", "Drama", "Action"};
  genres.offsets = {0, 1, 2, 4, 4, 5, 6};
  genres.values = {0, 1, 0, 1, 2, 0};
  c.categorical.push_back(genres);
  c.numerical.push_back({"PRICE", {5, 10, 15, NAN, 20, 25}});
  c.textual = {"DESCRIPTION"};
  c.event_types = {"view", "purchase"};
  //        AGE     MEMBERSHIP
  //   u0   12      gold
  //   u1   30      silver
  //   u2   (null)  (null)
  c.users.user_ids = {"u0", "u1", "u2"};
  c.users.numerical.push_back({"AGE", {12, 30, NAN}});
  c.users.categorical.push_back({"MEMBERSHIP", {"gold", "silver"}, {0, 1, 2, 2}, {0, 1}});
  // u0 has viewed and purchased, u1 only viewed, u2 nothing.
  c.users.event_type_offsets = {0, 2, 3, 3};
  c.users.event_types = {0, 1, 0};
  // i<k> created at day k; NOW is day 5.
  c.numerical.push_back({"CREATION_TIMESTAMP", {0, 86400, 2 * 86400, 3 * 86400, 4 * 86400, 5 * 86400}});
  c.now = 5 * 86400;
  return c;
}

std::string passing(const Filter& f, const FilterValues& values = {}, std::vector<UserEvent> events = {}) {
  std::vector<uint8_t> allowed;
  f.evaluate(values, events, allowed);
  std::string out;
  for (size_t i = 0; i < allowed.size(); ++i) {
    if (allowed[i]) out += (out.empty() ? "i" : ",i") + std::to_string(i);
  }
  return out;
}

std::string passing(const std::string& expression, const FilterValues& values = {},
                    std::vector<UserEvent> events = {}) {
  static const ItemCatalog catalog = make_catalog();
  return passing(Filter(expression, catalog), values, std::move(events));
}

// The position a FilterError reports, or 0 when nothing was thrown.
size_t error_position(const std::string& expression) {
  static const ItemCatalog catalog = make_catalog();
  try {
    Filter f(expression, catalog);
  } catch (const FilterError& e) {
    return e.position();
  }
  return 0;
}

size_t at(const std::string& text, const std::string& part) { return text.find(part) + 1; }

TEST(Filters, EveryOperatorOnCategoricalAndNumericalFields) {
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\")"), "i0,i2,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES IN (\"Drama\", \"Action\")"), "i1,i2,i4");
  // Null fields satisfy no condition, NOT IN included.
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES NOT IN (\"Comedy\")"), "i1,i4");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES = \"Drama\""), "i1,i2");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.PRICE < 15"), "i0,i1");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.PRICE <= 15"), "i0,i1,i2");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.PRICE > 15"), "i4,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.PRICE >= 15"), "i2,i4,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.PRICE = 10"), "i1");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.PRICE IN (10, 25)"), "i1,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.PRICE NOT IN (10, 25)"), "i0,i2,i4");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.ITEM_ID IN (\"i3\", \"i4\", \"nope\")"), "i3,i4");
  // EXCLUDE keeps items whose field is null: they do not match the condition.
  EXPECT_EQ(passing("EXCLUDE ItemID WHERE Items.PRICE > 10"), "i0,i1,i3");
  // Keywords and field names are matched without regard to case.
  EXPECT_EQ(passing("include itemid where ITEMS.genres in (\"Comedy\")"), "i0,i2,i5");
}

TEST(Filters, AndBindsTighterThanOrAndParenthesesGroup) {
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\") AND Items.PRICE > 10"), "i2,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\") OR Items.GENRES IN (\"Drama\") AND Items.PRICE > 12"),
            "i0,i2,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE (Items.GENRES IN (\"Comedy\") OR Items.GENRES IN (\"Drama\")) AND Items.PRICE > 12"),
            "i2,i5");
}

TEST(Filters, PlaceholdersTakeTheirValuesFromEachQuery) {
  const ItemCatalog catalog = make_catalog();
  const Filter f("INCLUDE ItemID WHERE Items.GENRES IN ($GENRE) AND Items.PRICE < $MAX", catalog);
  EXPECT_EQ(f.parameters(), (std::vector<std::string>{"GENRE", "MAX"}));
  EXPECT_EQ(passing(f, {{"GENRE", "\"Drama\",\"Action\""}, {"MAX", "100"}}), "i1,i2,i4");
  EXPECT_EQ(passing(f, {{"GENRE", "\"Comedy\""}, {"MAX", "20"}}), "i0,i2");
  // An INCLUDE expression needs every value.
  EXPECT_THROW(passing(f, {{"GENRE", "\"Comedy\""}}), Error);
  // An EXCLUDE expression whose value is missing is skipped, as the service does.
  const Filter g("EXCLUDE ItemID WHERE Items.GENRES IN ($GENRE)", catalog);
  EXPECT_EQ(passing(g, {}), "i0,i1,i2,i3,i4,i5");
  EXPECT_EQ(passing(g, {{"GENRE", "\"Comedy\""}}), "i1,i3,i4");
  // Placeholders mix with literals in a list.
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES IN (\"Action\", $G)", {{"G", "\"Drama\""}}), "i1,i2,i4");
}

TEST(Filters, BadParameterValuesReportTheirPosition) {
  const ItemCatalog catalog = make_catalog();
  const Filter f("INCLUDE ItemID WHERE Items.GENRES IN ($G) AND Items.PRICE < $MAX", catalog);
  try {
    passing(f, {{"G", "\"Comedy\", Drama"}, {"MAX", "3"}});
    FAIL() << "an unquoted value was accepted";
  } catch (const FilterError& e) {
    EXPECT_EQ(e.position(), 11u);
    EXPECT_NE(std::string(e.what()).find("filterValues G"), std::string::npos) << e.what();
  }
  try {
    passing(f, {{"G", "\"Comedy\""}, {"MAX", "\"cheap\""}});
    FAIL() << "a string was accepted for a numerical field";
  } catch (const FilterError& e) {
    EXPECT_EQ(e.position(), 1u);
  }
  EXPECT_THROW(passing(f, {{"G", "\"Comedy\""}, {"MAX", "1, 2"}}), FilterError);  // < takes one value
  EXPECT_THROW(passing(f, {{"G", "\"Comedy"}, {"MAX", "1"}}), FilterError);       // unterminated
}

TEST(Filters, ExpressionsJoinedByPipeCombineAsTheServiceDoes) {
  // Include A | Include B = union.
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\") | INCLUDE ItemID WHERE Items.PRICE > 18"),
            "i0,i2,i4,i5");
  // Include A | Exclude B = A minus B, whatever the order.
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\") | EXCLUDE ItemID WHERE Items.PRICE > 18"), "i0,i2");
  EXPECT_EQ(passing("EXCLUDE ItemID WHERE Items.PRICE > 18 | INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\")"), "i0,i2");
  // Exclude A | Exclude B = everything minus the union.
  EXPECT_EQ(passing("EXCLUDE ItemID WHERE Items.PRICE < 8 | EXCLUDE ItemID WHERE Items.GENRES IN (\"Action\")"),
            "i1,i2,i3,i5");
}

TEST(Filters, InteractionEventTypesReadTheQueryingUsersEvents) {
  const std::vector<UserEvent> events{{1, 1}, {2, 0}, {4, 1}, {4, 0}};  // i1 purchase, i2 view, i4 both
  EXPECT_EQ(passing("EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN (\"purchase\")", {}, events), "i0,i2,i3,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Interactions.EVENT_TYPE NOT IN (\"purchase\")", {}, events), "i2,i4");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Interactions.EVENT_TYPE = \"view\"", {}, events), "i2,i4");
  // No user, no events: nothing matches.
  EXPECT_EQ(passing("EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN (\"purchase\")"), "i0,i1,i2,i3,i4,i5");
  const ItemCatalog catalog = make_catalog();
  EXPECT_TRUE(Filter("EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN (\"view\")", catalog).uses_interactions());
  EXPECT_FALSE(Filter("EXCLUDE ItemID WHERE Items.PRICE > 1", catalog).uses_interactions());
}

TEST(Filters, MalformedExpressionsFailAtTheirPosition) {
  struct Case {
    std::string expression;
    size_t position;
  };
  const std::string no_close = "INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\"";
  const std::string open_string = "INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy)";
  const std::string not_equal = "EXCLUDE ItemID WHERE Items.PRICE <> 5";
  const std::string trailing_pipe = "INCLUDE ItemID WHERE Items.PRICE > 5 |";
  const std::string no_op = "INCLUDE ItemID WHERE Items.PRICE 5";
  const std::string bad_char = "INCLUDE ItemID WHERE Items.PRICE > 5 ; DROP";
  const std::string extra = "INCLUDE ItemID WHERE Items.PRICE > 5 Items.PRICE < 9";
  const std::vector<Case> cases{
      {"", 1},
      {"SELECT ItemID WHERE Items.PRICE > 5", 1},
      {"INCLUDE SessionID WHERE Items.PRICE > 5", 9},
      {"INCLUDE ItemID WHERE Items.PRICE > 5 | INCLUDE UserID WHERE Users.AGE > 5", 48},
      {"INCLUDE ItemID WHERE Items.PRICE > 5 IF", 40},
      {"INCLUDE ItemID WHERE Items.PRICE > NOW - 7", 43},
      {"INCLUDE ItemID WHERE Items.PRICE > NOW - 7 YEARS", 44},
      {"INCLUDE ItemID WHERE Items.GENRES IN CurrentItem", 49},
      {"INCLUDE ItemID Items.PRICE > 5", 16},
      {"INCLUDE ItemID WHERE", 21},
      {no_close, no_close.size() + 1},
      {open_string, at(open_string, "\"Comedy")},
      {not_equal, at(not_equal, ">")},
      {trailing_pipe, trailing_pipe.size() + 1},
      {no_op, at(no_op, "5")},
      {bad_char, at(bad_char, ";")},
      {extra, at(extra, "Items.PRICE <")},
      {"INCLUDE ItemID WHERE Items.PRICE IN ()", 38},
      {"INCLUDE ItemID WHERE Items.PRICE > $", 36},
      {"INCLUDE ItemID WHERE Items.PRICE > 5x", 36},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(error_position(c.expression), c.position) << c.expression;
    EXPECT_THROW(check_filter_syntax(c.expression), FilterError) << c.expression;
  }
}

// 10,000 '(' once overflowed the stack (issue 15); the bound is an error at the first '(' too many.
TEST(Filters, NestingDeeperThanTheBoundIsAnErrorNotACrash) {
  const std::string deep = "INCLUDE ItemID WHERE " + std::string(10000, '(') + "Items.PRICE > 5" + std::string(10000, ')');
  EXPECT_EQ(error_position(deep), 22u + 64u);
  try {
    check_filter_syntax(deep);
    FAIL();
  } catch (const FilterError& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 64"), std::string::npos) << e.what();
  }
  const ItemCatalog catalog = make_catalog();
  EXPECT_THROW(match_item_attributes(std::string(10000, '(') + "ITEMS.PRICE > 5", catalog), FilterError);
  // 64 levels are still an expression.
  EXPECT_EQ(passing("INCLUDE ItemID WHERE " + std::string(64, '(') + "Items.PRICE > 20" + std::string(64, ')')), "i5");
}

TEST(Filters, ExpressionsThatDoNotFitTheCatalogFailAtTheField) {
  const std::string unknown = "INCLUDE ItemID WHERE Items.COLOR IN (\"red\")";
  const std::string textual = "INCLUDE ItemID WHERE Items.PRICE > 1 AND Items.DESCRIPTION IN (\"red\")";
  const std::string compare_text = "INCLUDE ItemID WHERE Items.GENRES < 3";
  const std::string users = "INCLUDE ItemID WHERE Users.AGE > 3";
  const std::string interactions = "INCLUDE ItemID WHERE Interactions.EVENT_VALUE > 3";
  const std::string not_number = "INCLUDE ItemID WHERE Items.PRICE IN (1, \"cheap\")";
  EXPECT_EQ(error_position(unknown), at(unknown, "Items"));
  EXPECT_EQ(error_position(textual), at(textual, "Items.DESCRIPTION"));
  EXPECT_EQ(error_position(compare_text), at(compare_text, "<"));
  EXPECT_EQ(error_position(users), at(users, "Users"));
  EXPECT_EQ(error_position(interactions), at(interactions, "Interactions"));
  EXPECT_EQ(error_position(not_number), at(not_number, "\"cheap"));
  // The syntax alone is fine: these fail only against the catalog.
  EXPECT_NO_THROW(check_filter_syntax(unknown));
  try {
    Filter(textual, make_catalog());
  } catch (const FilterError& e) {
    EXPECT_NE(std::string(e.what()).find("textual"), std::string::npos) << e.what();
  }
}

// Issue 14: filters that depend on who asks, on the query's item, and on the dataset's time.
std::string passing_for(const std::string& expression, int64_t user, int64_t item = -1, const FilterValues& values = {}) {
  static const ItemCatalog catalog = make_catalog();
  std::vector<uint8_t> allowed;
  Filter(expression, catalog).evaluate(FilterQuery{values, {}, user, item}, allowed);
  std::string out;
  for (size_t i = 0; i < allowed.size(); ++i)
    if (allowed[i]) out += fmt::format("{}{}", out.empty() ? "" : ",", i);
  return out;
}

TEST(Filters, AnIfClauseOnTheAskingUser) {
  const std::string kids = "INCLUDE ItemID WHERE Items.GENRES IN (\"Comedy\") IF CurrentUser.AGE < 18";
  EXPECT_EQ(passing_for(kids, 0), "0,2,5");        // u0 is 12: comedies only
  EXPECT_EQ(passing_for(kids, 1), "0,1,2,3,4,5");  // u1 is 30: the expression is skipped
  EXPECT_EQ(passing_for(kids, 2), "0,1,2,3,4,5");  // no age: a null field satisfies nothing
  EXPECT_EQ(passing_for(kids, -1), "0,1,2,3,4,5"); // an unknown user or an item query
  // With placeholders, AND/OR, and Users.<field> as another name for the asking user's field.
  const std::string cheap = "EXCLUDE ItemID WHERE Items.PRICE > $MAX IF Users.MEMBERSHIP IN (\"silver\") OR CurrentUser.AGE >= $ADULT";
  EXPECT_EQ(passing_for(cheap, 0, -1, {{"MAX", "10"}, {"ADULT", "18"}}), "0,1,2,3,4,5");
  EXPECT_EQ(passing_for(cheap, 1, -1, {{"MAX", "10"}, {"ADULT", "18"}}), "0,1,3");
  EXPECT_EQ(passing_for(cheap, 0, -1, {{"MAX", "10"}, {"ADULT", "10"}}), "0,1,3");
  const ItemCatalog catalog = make_catalog();
  EXPECT_TRUE(Filter(kids, catalog).depends_on_user());
  EXPECT_FALSE(Filter("INCLUDE ItemID WHERE Items.PRICE > 3", catalog).depends_on_user());
  // The IF clause reads the user only.
  const std::string item_if = "INCLUDE ItemID WHERE Items.PRICE > 3 IF Items.PRICE > 3";
  EXPECT_EQ(error_position(item_if), at(item_if, "Items.PRICE > 3 IF") + 19);
  const std::string unknown = "INCLUDE ItemID WHERE Items.PRICE > 3 IF CurrentUser.HEIGHT > 3";
  EXPECT_EQ(error_position(unknown), at(unknown, "CurrentUser"));
}

TEST(Filters, CurrentItemAndCurrentUserValues) {
  const std::string same_genre = "INCLUDE ItemID WHERE Items.GENRES IN CurrentItem.GENRES";
  EXPECT_EQ(passing_for(same_genre, -1, 2), "0,1,2,5");  // i2 is Comedy|Drama
  EXPECT_EQ(passing_for(same_genre, -1, 4), "4");        // i4 is Action
  EXPECT_EQ(passing_for(same_genre, -1, 3), "");         // i3 has no genre
  EXPECT_EQ(passing_for(same_genre, -1, -1), "");        // no current item
  EXPECT_EQ(passing_for("INCLUDE ItemID WHERE Items.GENRES IN (CurrentItem.GENRES)", -1, 4), "4");
  EXPECT_EQ(passing_for("INCLUDE ItemID WHERE Items.PRICE <= CurrentItem.PRICE", -1, 1), "0,1");
  EXPECT_EQ(passing_for("INCLUDE ItemID WHERE Items.PRICE <= CurrentUser.AGE", 0), "0,1");
  // Kinds must match: a categorical field takes categorical values.
  const std::string mixed = "INCLUDE ItemID WHERE Items.GENRES IN CurrentItem.PRICE";
  EXPECT_EQ(error_position(mixed), at(mixed, "CurrentItem"));
  const std::string missing = "INCLUDE ItemID WHERE Items.GENRES IN CurrentItem.COLOUR";
  EXPECT_EQ(error_position(missing), at(missing, "CurrentItem"));
}

TEST(Filters, TimeRelativeValuesCountFromTheDatasetsNow) {
  // NOW is day 5: items created in the last 2 days are i3, i4 and i5.
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.CREATION_TIMESTAMP >= NOW - 2 DAYS"), "i3,i4,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.CREATION_TIMESTAMP >= NOW-48 HOURS"), "i3,i4,i5");
  EXPECT_EQ(passing("EXCLUDE ItemID WHERE Items.CREATION_TIMESTAMP < NOW - 1 WEEK"), "i0,i1,i2,i3,i4,i5");
  EXPECT_EQ(passing("INCLUDE ItemID WHERE Items.CREATION_TIMESTAMP >= NOW"), "i5");
  // Without a dataset there is no NOW.
  ItemCatalog no_time = make_catalog();
  no_time.now = NAN;
  const std::string fresh = "INCLUDE ItemID WHERE Items.CREATION_TIMESTAMP >= NOW - 2 DAYS";
  try {
    Filter(fresh, no_time);
    FAIL();
  } catch (const FilterError& e) {
    EXPECT_EQ(e.position(), at(fresh, "NOW"));
    EXPECT_NE(std::string(e.what()).find("--now"), std::string::npos) << e.what();
  }
  const std::string on_genres = "INCLUDE ItemID WHERE Items.GENRES IN (NOW)";
  EXPECT_EQ(error_position(on_genres), at(on_genres, "NOW"));
}

TEST(Filters, UserIdExpressionsSelectUsers) {
  const ItemCatalog catalog = make_catalog();
  const Filter f("INCLUDE UserID WHERE Users.MEMBERSHIP IN (\"gold\", \"silver\") | EXCLUDE UserID WHERE Users.AGE < $MIN", catalog);
  EXPECT_TRUE(f.selects_users());
  EXPECT_TRUE(filter_selects_users(f.expression()));
  std::vector<uint8_t> allowed;
  f.evaluate(FilterQuery{{{"MIN", "18"}}}, allowed);
  EXPECT_EQ(allowed, (std::vector<uint8_t>{0, 1, 0}));
  f.evaluate(FilterQuery{{}}, allowed);  // the EXCLUDE is skipped without its value
  EXPECT_EQ(allowed, (std::vector<uint8_t>{1, 1, 0}));
  const Filter ids("EXCLUDE UserID WHERE Users.USER_ID IN (\"u1\")", catalog);
  ids.evaluate(FilterQuery{{}}, allowed);
  EXPECT_EQ(allowed, (std::vector<uint8_t>{1, 0, 1}));
  const Filter buyers("INCLUDE UserID WHERE Interactions.EVENT_TYPE IN ($E)", catalog);
  buyers.evaluate(FilterQuery{{{"E", "\"purchase\""}}}, allowed);
  EXPECT_EQ(allowed, (std::vector<uint8_t>{1, 0, 0}));
  const Filter viewers("EXCLUDE UserID WHERE Interactions.EVENT_TYPE IN (\"view\")", catalog);
  viewers.evaluate(FilterQuery{{}}, allowed);
  EXPECT_EQ(allowed, (std::vector<uint8_t>{0, 0, 1}));
  const std::string items = "INCLUDE UserID WHERE Items.PRICE > 5";
  EXPECT_EQ(error_position(items), at(items, "Items"));
}

TEST(Filters, ItemAttributesForSegments) {
  const ItemCatalog catalog = make_catalog();
  auto matching = [&](const std::string& condition) {
    const std::vector<uint8_t> mask = match_item_attributes(condition, catalog);
    std::string out;
    for (size_t i = 0; i < mask.size(); ++i)
      if (mask[i]) out += (out.empty() ? "i" : ",i") + std::to_string(i);
    return out;
  };
  EXPECT_EQ(matching("ITEMS.GENRES = \"Comedy\""), "i0,i2,i5");
  EXPECT_EQ(matching("ITEMS.GENRES = \"Comedy\" AND ITEMS.PRICE < 20"), "i0,i2");
  EXPECT_THROW(matching("ITEMS.GENRES = $G"), FilterError);
  EXPECT_THROW(matching("Interactions.EVENT_TYPE = \"view\""), FilterError);
  try {
    matching("ITEMS.GENRES =");
    FAIL();
  } catch (const FilterError& e) {
    EXPECT_EQ(e.position(), 15u);
  }
}

}  // namespace
}  // namespace tastebud::host
