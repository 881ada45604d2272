#include "host/filters.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace tastebud::host {

FilterError::FilterError(const std::string& message, size_t position)
    : Error(message), position_(position) {}

namespace {

// `what` names the text ("filter", "filterValues GENRE", "itemAttributes"); position is 1-based.
[[noreturn]] void fail(std::string_view what, std::string_view text, size_t position,
                       const std::string& message) {
  const size_t caret = std::min(position, text.size() + 1);
  throw FilterError(fmt::format("{}: position {}: {}\n  {}\n  {}^", what, position, message, text,
                                std::string(caret > 0 ? caret - 1 : 0, ' ')),
                    position);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
         });
}

// ---- Lexer ------------------------------------------------------------------------------------

enum class Tok { kWord, kString, kNumber, kParam, kLParen, kRParen, kComma, kDot, kPipe, kEq, kLt, kLe, kGt, kGe, kMinus, kPlus, kEnd };

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;  // word, unescaped string, number as written, parameter name
  double number = 0;
  size_t position = 0;  // 1-based
};

std::string describe(const Token& t) {
  switch (t.kind) {
    case Tok::kWord: return fmt::format("'{}'", t.text);
    case Tok::kString: return fmt::format("the string \"{}\"", t.text);
    case Tok::kNumber: return fmt::format("the number {}", t.text);
    case Tok::kParam: return fmt::format("the placeholder ${}", t.text);
    case Tok::kLParen: return "'('";
    case Tok::kRParen: return "')'";
    case Tok::kComma: return "','";
    case Tok::kDot: return "'.'";
    case Tok::kPipe: return "'|'";
    case Tok::kEq: return "'='";
    case Tok::kLt: return "'<'";
    case Tok::kLe: return "'<='";
    case Tok::kGt: return "'>'";
    case Tok::kGe: return "'>='";
    case Tok::kMinus: return "'-'";
    case Tok::kPlus: return "'+'";
    case Tok::kEnd: return "the end of the text";
  }
  return "?";
}

std::vector<Token> lex(std::string_view what, std::string_view text) {
  std::vector<Token> tokens;
  size_t i = 0;
  auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  while (true) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    Token t;
    t.position = i + 1;
    if (i >= text.size()) {
      tokens.push_back(t);
      return tokens;
    }
    const char c = text[i];
    if (c == '"') {
      t.kind = Tok::kString;
      ++i;
      bool closed = false;
      while (i < text.size()) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          t.text += text[i + 1];
          i += 2;
        } else if (text[i] == '"') {
          closed = true;
          ++i;
          break;
        } else {
          t.text += text[i++];
        }
      }
      if (!closed) fail(what, text, t.position, "this string has no closing '\"'");
    } else if (std::isdigit(static_cast<unsigned char>(c)) ||
               ((c == '-' || c == '+' || c == '.') && i + 1 < text.size() &&
                (std::isdigit(static_cast<unsigned char>(text[i + 1])) || text[i + 1] == '.'))) {
      t.kind = Tok::kNumber;
      const std::string rest(text.substr(i));
      char* end = nullptr;
      t.number = std::strtod(rest.c_str(), &end);
      const size_t used = static_cast<size_t>(end - rest.c_str());
      if (used == 0 || (used < rest.size() && is_word(rest[used])))
        fail(what, text, t.position, "malformed number");
      t.text = rest.substr(0, used);
      i += used;
    } else if (c == '$') {
      t.kind = Tok::kParam;
      ++i;
      while (i < text.size() && is_word(text[i])) t.text += text[i++];
      if (t.text.empty()) fail(what, text, t.position, "'$' must be followed by a parameter name");
    } else if (is_word(c)) {
      t.kind = Tok::kWord;
      while (i < text.size() && is_word(text[i])) t.text += text[i++];
    } else {
      ++i;
      switch (c) {
        case '(': t.kind = Tok::kLParen; break;
        case ')': t.kind = Tok::kRParen; break;
        case ',': t.kind = Tok::kComma; break;
        case '.': t.kind = Tok::kDot; break;
        case '|': t.kind = Tok::kPipe; break;
        case '=': t.kind = Tok::kEq; break;
        case '-': t.kind = Tok::kMinus; break;  // NOW - 7 DAYS (a '-' before a digit is a number's sign)
        case '+': t.kind = Tok::kPlus; break;
        case '<':
          t.kind = Tok::kLt;
          if (i < text.size() && text[i] == '=') { t.kind = Tok::kLe; ++i; }
          break;
        case '>':
          t.kind = Tok::kGt;
          if (i < text.size() && text[i] == '=') { t.kind = Tok::kGe; ++i; }
          break;
        default: fail(what, text, t.position, fmt::format("unexpected character '{}'", c));
      }
    }
    tokens.push_back(std::move(t));
  }
}

}  // namespace

// ---- Syntax tree --------------------------------------------------------------------------------

enum class Op { kIn, kNotIn, kEq, kLt, kLe, kGt, kGe };
enum class Source { kCategorical, kNumerical, kItemId, kEventType };
// Where a condition stands: an ItemID expression's WHERE, a UserID expression's WHERE, an IF
// clause (the asking user), or batch-segment's itemAttributes.
enum class Role { kItemWhere, kUserWhere, kIf, kAttributes };

enum class Ref : uint8_t { kNone, kCurrentItem, kCurrentUser };

struct Value {
  Tok kind = Tok::kString;  // kString, kNumber, kParam, or kWord for a CurrentItem/CurrentUser field
  std::string text;
  double number = 0;
  size_t position = 0;
  bool now = false;         // NOW [+|- N UNIT]: number holds the offset in seconds until bound
  Ref ref = Ref::kNone;     // kWord: whose field; text is the field's name
  bool ref_categorical = false;  // bound: the field's kind and column
  size_t ref_column = 0;
};

struct Condition {
  std::string dataset, field;  // as written
  size_t position = 0;         // of the dataset name
  size_t op_position = 0;
  Op op = Op::kIn;
  std::vector<Value> values;
  bool has_params = false;
  bool has_refs = false;   // a CurrentItem/CurrentUser value: resolved per query
  Role role = Role::kItemWhere;
  // Bound to the catalog:
  bool on_users = false;   // reads the users' columns (Source kItemId then means USER_ID)
  Source source = Source::kCategorical;
  size_t column = 0;
  std::vector<uint8_t> mask;  // precomputed when the condition has no placeholder and reads items
};

struct Node {
  enum Kind { kCondition, kAnd, kOr } kind = kCondition;
  size_t condition = 0;
  std::vector<Node> children;
};

struct Expression {
  bool include = true;
  Node where;
  bool has_when = false;  // an IF clause on the asking user
  Node when;
  std::vector<std::string> parameters;
};

struct FilterAst {
  std::vector<Expression> expressions;
  std::vector<Condition> conditions;
  std::unordered_map<std::string, uint32_t> item_index;  // built when a condition reads ITEM_ID
  std::unordered_map<std::string, uint32_t> user_index;  // built when a condition reads USER_ID
  bool selects_users = false;                            // UserID expressions
};

namespace {

class Parser {
 public:
  static constexpr size_t kMaxNesting = 64;

  Parser(std::string_view what, std::string_view text, FilterAst& ast)
      : what_(what), text_(text), tokens_(lex(what, text)), ast_(ast) {}

  void parse_filter() {
    do {
      ast_.expressions.push_back(parse_expression());
    } while (accept(Tok::kPipe));
    expect_end("AND, OR, IF, or '|' and another expression");
  }

  Node parse_condition_only() {
    Node node = parse_or();
    expect_end("AND, OR or the end of the condition");
    return node;
  }

 private:
  const Token& peek() const { return tokens_[at_]; }
  const Token& next() { return tokens_[at_ < tokens_.size() - 1 ? at_++ : at_]; }
  bool accept(Tok kind) {
    if (peek().kind != kind) return false;
    next();
    return true;
  }
  bool peek_word(std::string_view word) const { return peek().kind == Tok::kWord && iequals(peek().text, word); }
  [[noreturn]] void unexpected(const std::string& expected) const {
    fail(what_, text_, peek().position, fmt::format("expected {}, found {}", expected, describe(peek())));
  }
  void expect_word(std::string_view word, const std::string& expected) {
    if (!peek_word(word)) unexpected(expected);
    next();
  }
  void expect_end(const std::string& expected) {
    if (peek().kind != Tok::kEnd) unexpected(expected);
  }

  Expression parse_expression() {
    Expression e;
    if (peek_word("INCLUDE")) e.include = true;
    else if (peek_word("EXCLUDE")) e.include = false;
    else unexpected("INCLUDE or EXCLUDE");
    next();
    bool users = false;
    if (peek_word("UserID")) users = true;
    else if (!peek_word("ItemID")) unexpected("ItemID or UserID");
    if (ast_.expressions.empty()) ast_.selects_users = users;
    else if (ast_.selects_users != users)
      fail(what_, text_, peek().position, "the expressions of one filter select either items (ItemID) or users (UserID), not both");
    next();
    expect_word("WHERE", "WHERE");
    const size_t first_condition = ast_.conditions.size();
    e.where = parse_or();
    for (size_t c = first_condition; c < ast_.conditions.size(); ++c)
      ast_.conditions[c].role = users ? Role::kUserWhere : Role::kItemWhere;
    if (peek_word("IF")) {
      next();
      const size_t first_if = ast_.conditions.size();
      e.when = parse_or();
      e.has_when = true;
      for (size_t c = first_if; c < ast_.conditions.size(); ++c) ast_.conditions[c].role = Role::kIf;
    }
    for (size_t c = first_condition; c < ast_.conditions.size(); ++c) {
      for (const Value& v : ast_.conditions[c].values) {
        if (v.kind == Tok::kParam &&
            std::find(e.parameters.begin(), e.parameters.end(), v.text) == e.parameters.end())
          e.parameters.push_back(v.text);
      }
    }
    return e;
  }

  Node parse_or() {
    Node first = parse_and();
    if (!peek_word("OR")) return first;
    Node node;
    node.kind = Node::kOr;
    node.children.push_back(std::move(first));
    while (peek_word("OR")) {
      next();
      node.children.push_back(parse_and());
    }
    return node;
  }

  Node parse_and() {
    Node first = parse_primary();
    if (!peek_word("AND")) return first;
    Node node;
    node.kind = Node::kAnd;
    node.children.push_back(std::move(first));
    while (peek_word("AND")) {
      next();
      node.children.push_back(parse_primary());
    }
    return node;
  }

  Node parse_primary() {
    if (peek().kind == Tok::kLParen) {
      // Each '(' is one level of recursion here and in evaluation: bounded, or a hostile
      // expression overflows the stack.
      if (depth_ == kMaxNesting)
        fail(what_, text_, peek().position, fmt::format("parentheses nested deeper than {}", kMaxNesting));
      next();
      ++depth_;
      Node node = parse_or();
      --depth_;
      if (!accept(Tok::kRParen)) unexpected("')' or AND/OR");
      return node;
    }
    Condition c;
    if (peek().kind != Tok::kWord) unexpected("a field such as Items.GENRES or Interactions.EVENT_TYPE, or '('");
    c.position = peek().position;
    c.dataset = next().text;
    if (!accept(Tok::kDot)) unexpected(fmt::format("'.' and a field name after {}", c.dataset));
    if (peek().kind != Tok::kWord) unexpected(fmt::format("a field name after {}.", c.dataset));
    c.field = next().text;
    c.op_position = peek().position;
    if (peek_word("IN")) {
      next();
      c.op = Op::kIn;
      parse_list(c);
    } else if (peek_word("NOT")) {
      next();
      expect_word("IN", "IN after NOT");
      c.op = Op::kNotIn;
      parse_list(c);
    } else {
      switch (peek().kind) {
        case Tok::kEq: c.op = Op::kEq; break;
        case Tok::kLt: c.op = Op::kLt; break;
        case Tok::kLe: c.op = Op::kLe; break;
        case Tok::kGt: c.op = Op::kGt; break;
        case Tok::kGe: c.op = Op::kGe; break;
        default: unexpected(fmt::format("IN, NOT IN, =, <, <=, > or >= after {}.{}", c.dataset, c.field));
      }
      next();
      c.values.push_back(parse_value());
    }
    for (const Value& v : c.values) {
      c.has_params |= v.kind == Tok::kParam;
      c.has_refs |= v.ref != Ref::kNone;
    }
    Node node;
    node.kind = Node::kCondition;
    node.condition = ast_.conditions.size();
    ast_.conditions.push_back(std::move(c));
    return node;
  }

  void parse_list(Condition& c) {
    if (peek().kind == Tok::kWord) {  // IN CurrentItem.GENRES
      c.values.push_back(parse_value());
      return;
    }
    if (!accept(Tok::kLParen)) unexpected("'(' and a list of values");
    c.values.push_back(parse_value());
    while (accept(Tok::kComma)) c.values.push_back(parse_value());
    if (!accept(Tok::kRParen)) unexpected("',' or ')'");
  }

  // NOW [+|- N UNIT]: the offset in seconds.
  Value parse_now() {
    Value v{Tok::kNumber, "NOW", 0, peek().position};
    v.now = true;
    next();
    double sign = 0;
    if (accept(Tok::kMinus)) sign = -1;
    else if (accept(Tok::kPlus)) sign = 1;
    else if (peek().kind != Tok::kNumber) return v;
    if (peek().kind != Tok::kNumber) unexpected("a number after NOW +/-, e.g. NOW - 7 DAYS");
    const double amount = (sign == 0 ? 1 : sign) * next().number;
    static const std::pair<const char*, double> units[] = {
        {"SECOND", 1}, {"SECONDS", 1}, {"MINUTE", 60}, {"MINUTES", 60}, {"HOUR", 3600}, {"HOURS", 3600},
        {"DAY", 86400}, {"DAYS", 86400}, {"WEEK", 604800}, {"WEEKS", 604800}};
    for (const auto& [name, seconds] : units) {
      if (peek_word(name)) {
        next();
        v.number = amount * seconds;
        return v;
      }
    }
    unexpected("a unit: SECONDS, MINUTES, HOURS, DAYS or WEEKS");
  }

  Value parse_value() {
    const Token& t = peek();
    if (t.kind == Tok::kWord && iequals(t.text, "NOW")) return parse_now();
    if (t.kind == Tok::kWord && (iequals(t.text, "CurrentItem") || iequals(t.text, "CurrentUser"))) {
      Value v{Tok::kWord, "", 0, t.position};
      v.ref = iequals(t.text, "CurrentItem") ? Ref::kCurrentItem : Ref::kCurrentUser;
      next();
      if (!accept(Tok::kDot) || peek().kind != Tok::kWord) unexpected("'.' and a field name, e.g. CurrentItem.GENRES");
      v.text = next().text;
      return v;
    }
    if (t.kind != Tok::kString && t.kind != Tok::kNumber && t.kind != Tok::kParam)
      unexpected("a value: a \"string\", a number, a $PARAMETER, NOW, or CurrentItem.<field> / CurrentUser.<field>");
    Value v{t.kind, t.text, t.number, t.position};
    next();
    return v;
  }

  std::string_view what_;
  std::string_view text_;
  std::vector<Token> tokens_;
  size_t at_ = 0;
  size_t depth_ = 0;  // parentheses open at this point
  FilterAst& ast_;
};

const char* op_name(Op op) {
  switch (op) {
    case Op::kIn: return "IN";
    case Op::kNotIn: return "NOT IN";
    case Op::kEq: return "=";
    case Op::kLt: return "<";
    case Op::kLe: return "<=";
    case Op::kGt: return ">";
    case Op::kGe: return ">=";
  }
  return "?";
}

bool is_comparison(Op op) { return op == Op::kLt || op == Op::kLe || op == Op::kGt || op == Op::kGe; }

void check_values(const Condition& c, const std::vector<Value>& values, std::string_view what,
                  std::string_view text);

// The values a CurrentItem/CurrentUser field stands for in this query (none without the item or
// user, or when the field is null).
void append_ref_values(const Value& v, const FilterQuery* query, const ItemCatalog& catalog, std::vector<Value>& out) {
  const bool item = v.ref == Ref::kCurrentItem;
  const int64_t entity = query == nullptr ? -1 : item ? query->item : query->user;
  const uint32_t n = item ? catalog.num_items() : catalog.users.num_users();
  if (entity < 0 || entity >= n) return;
  if (v.ref_categorical) {
    const ItemCategoricalColumn& col = item ? catalog.categorical[v.ref_column] : catalog.users.categorical[v.ref_column];
    for (uint64_t k = col.offsets[entity]; k < col.offsets[entity + 1]; ++k)
      out.push_back(Value{Tok::kString, col.vocabulary[col.values[k]], 0, v.position});
  } else {
    const double x = (item ? catalog.numerical[v.ref_column] : catalog.users.numerical[v.ref_column]).values[entity];
    if (!std::isnan(x)) out.push_back(Value{Tok::kNumber, fmt::format("{}", x), x, v.position});
  }
}

// Literal values of a condition with its placeholders and CurrentItem/CurrentUser fields
// replaced: the value of a placeholder is itself a comma-separated list of literals.
std::vector<Value> resolve(const Condition& c, const FilterQuery* query, const ItemCatalog& catalog) {
  std::vector<Value> out;
  for (const Value& v : c.values) {
    if (v.ref != Ref::kNone) {
      append_ref_values(v, query, catalog, out);
      continue;
    }
    if (v.kind != Tok::kParam) {
      out.push_back(v);
      continue;
    }
    const auto it = query->values.find(v.text);
    const std::string what = fmt::format("filterValues {}", v.text);
    const std::string& text = it->second;
    const std::vector<Token> tokens = lex(what, text);
    std::vector<Value> given;
    size_t k = 0;
    while (true) {
      const Token& t = tokens[k];
      if (t.kind != Tok::kString && t.kind != Tok::kNumber)
        fail(what, text, t.position,
             fmt::format("expected a value (a \"quoted string\" or a number), found {}", describe(t)));
      given.push_back(Value{t.kind, t.text, t.number, t.position});
      ++k;
      if (tokens[k].kind == Tok::kEnd) break;
      if (tokens[k].kind != Tok::kComma)
        fail(what, text, tokens[k].position, fmt::format("expected ',' or the end, found {}", describe(tokens[k])));
      ++k;
    }
    if (given.size() > 1 && !(c.op == Op::kIn || c.op == Op::kNotIn))
      fail(what, text, 1, fmt::format("{} takes one value, this gives {}", op_name(c.op), given.size()));
    check_values(c, given, what, text);
    out.insert(out.end(), given.begin(), given.end());
  }
  return out;
}

// Checks the condition's values against its field; `what`/`text` locate errors (the expression
// for literals, the parameter's value for placeholders).
void check_values(const Condition& c, const std::vector<Value>& values, std::string_view what,
                  std::string_view text) {
  for (const Value& v : values) {
    if (c.source == Source::kNumerical && v.kind == Tok::kString) {
      char* end = nullptr;
      std::strtod(v.text.c_str(), &end);
      if (v.text.empty() || *end != '\0')
        fail(what, text, v.position,
             fmt::format("{}.{} is numerical; \"{}\" is not a number", c.dataset, c.field, v.text));
    }
  }
}

double number_of(const Value& v) {
  return v.kind == Tok::kNumber ? v.number : std::strtod(v.text.c_str(), nullptr);
}

}  // namespace

namespace {

// Binds c.field among one entity's columns (the items' or the users').
void bind_columns(std::string_view what, std::string_view text, Condition& c, const char* entity,
                  const std::vector<ItemCategoricalColumn>& categorical,
                  const std::vector<ItemNumericalColumn>& numerical, const std::vector<std::string>& textual) {
  const bool items = std::string_view(entity) == "items";
  if (items ? (iequals(c.field, "ITEM_ID") || iequals(c.field, "ItemID"))
            : (iequals(c.field, "USER_ID") || iequals(c.field, "UserID"))) {
    c.source = Source::kItemId;
    return;
  }
  for (size_t k = 0; k < categorical.size(); ++k)
    if (iequals(categorical[k].name, c.field)) { c.source = Source::kCategorical; c.column = k; return; }
  for (size_t k = 0; k < numerical.size(); ++k)
    if (iequals(numerical[k].name, c.field)) { c.source = Source::kNumerical; c.column = k; return; }
  for (const std::string& name : textual)
    if (iequals(name, c.field))
      fail(what, text, c.position, fmt::format("{}.{} is a textual field; textual fields cannot be filtered on", c.dataset, name));
  std::vector<std::string> names{items ? "ITEM_ID" : "USER_ID"};
  for (const auto& col : categorical) names.push_back(col.name);
  for (const auto& col : numerical) names.push_back(col.name);
  fail(what, text, c.position, fmt::format("the {} have no field {}; they have {}", entity, c.field, fmt::join(names, ", ")));
}

// A CurrentItem/CurrentUser value: its field must exist and be of the condition's kind; NOW
// becomes the catalog's now plus the offset.
void bind_value(std::string_view what, std::string_view text, const Condition& c, Value& v, const ItemCatalog& catalog) {
  if (v.now) {
    if (c.source != Source::kNumerical)
      fail(what, text, v.position, fmt::format("NOW is a time in seconds; {}.{} is not numerical", c.dataset, c.field));
    if (std::isnan(catalog.now))
      fail(what, text, v.position, "NOW needs the dataset's latest timestamp (no dataset is open) or --now");
    v.number += catalog.now;
    v.now = false;
    return;
  }
  if (v.ref == Ref::kNone) return;
  const bool item = v.ref == Ref::kCurrentItem;
  const auto& categorical = item ? catalog.categorical : catalog.users.categorical;
  const auto& numerical = item ? catalog.numerical : catalog.users.numerical;
  const char* who = item ? "CurrentItem" : "CurrentUser";
  bool found = false;
  for (size_t k = 0; k < categorical.size() && !found; ++k)
    if (iequals(categorical[k].name, v.text)) { v.ref_categorical = true; v.ref_column = k; found = true; }
  for (size_t k = 0; k < numerical.size() && !found; ++k)
    if (iequals(numerical[k].name, v.text)) { v.ref_categorical = false; v.ref_column = k; found = true; }
  if (!found)
    fail(what, text, v.position, fmt::format("{}.{}: the {} have no categorical or numerical field {}", who, v.text,
                                             item ? "items" : "users", v.text));
  const bool want_categorical = c.source == Source::kCategorical;
  if (c.source == Source::kItemId || c.source == Source::kEventType || v.ref_categorical != want_categorical)
    fail(what, text, v.position, fmt::format("{}.{} is {}; {}.{} needs {} values", who, v.text,
                                             v.ref_categorical ? "categorical" : "numerical", c.dataset, c.field,
                                             want_categorical ? "categorical" : "numerical"));
}

void bind(std::string_view what, std::string_view text, Condition& c, const ItemCatalog& catalog) {
  const bool users_dataset = iequals(c.dataset, "Users") || iequals(c.dataset, "CurrentUser");
  if (c.role == Role::kIf) {
    if (!users_dataset)
      fail(what, text, c.position, fmt::format("an IF clause describes the asking user: CurrentUser.<field>, not {}.{}", c.dataset, c.field));
    c.on_users = true;
    bind_columns(what, text, c, "users", catalog.users.categorical, catalog.users.numerical, {});
  } else if (c.role == Role::kUserWhere) {
    c.on_users = true;
    if (iequals(c.dataset, "Interactions") && iequals(c.field, "EVENT_TYPE")) {
      c.source = Source::kEventType;  // users with events of these types, on any item
    } else if (iequals(c.dataset, "Users")) {
      bind_columns(what, text, c, "users", catalog.users.categorical, catalog.users.numerical, {});
    } else {
      fail(what, text, c.position,
           fmt::format("UserID expressions filter on Users.<field> or Interactions.EVENT_TYPE, not {}.{}", c.dataset, c.field));
    }
  } else if (iequals(c.dataset, "Items")) {
    bind_columns(what, text, c, "items", catalog.categorical, catalog.numerical, catalog.textual);
  } else if (iequals(c.dataset, "Interactions")) {
    if (!iequals(c.field, "EVENT_TYPE"))
      fail(what, text, c.position, fmt::format("only Interactions.EVENT_TYPE can be filtered on, not Interactions.{}", c.field));
    if (c.role == Role::kAttributes)
      fail(what, text, c.position, "Interactions.EVENT_TYPE needs a user; it cannot describe item attributes");
    c.source = Source::kEventType;
  } else if (users_dataset && c.role == Role::kItemWhere) {
    fail(what, text, c.position,
         fmt::format("{}.{} describes the asking user: put it in an IF clause, e.g. ... IF CurrentUser.{} ...", c.dataset,
                     c.field, c.field));
  } else {
    fail(what, text, c.position,
         fmt::format("unknown dataset '{}': expected Items or Interactions", c.dataset));
  }
  if (is_comparison(c.op) && c.source != Source::kNumerical)
    fail(what, text, c.op_position,
         fmt::format("{} compares numbers, and {}.{} is not numerical", op_name(c.op), c.dataset, c.field));
  for (Value& v : c.values) bind_value(what, text, c, v, catalog);
  check_values(c, c.values, what, text);
}

// Entities (items, or users for a condition on users) that satisfy one condition with these
// (literal) values.
void condition_mask(const Condition& c, const std::vector<Value>& values, const ItemCatalog& catalog,
                    const FilterAst& ast, std::span<const UserEvent> events, std::vector<uint8_t>& mask) {
  const uint32_t n = c.on_users ? catalog.users.num_users() : catalog.num_items();
  const auto& categorical = c.on_users ? catalog.users.categorical : catalog.categorical;
  const auto& numerical = c.on_users ? catalog.users.numerical : catalog.numerical;
  mask.assign(n, 0);
  const bool negated = c.op == Op::kNotIn;
  switch (c.source) {
    case Source::kCategorical: {
      const ItemCategoricalColumn& col = categorical[c.column];
      std::vector<uint8_t> wanted(col.vocabulary.size(), 0);
      for (const Value& v : values) {
        // Vocabularies are small (categories, genres): a scan keeps the column free of an index.
        for (size_t k = 0; k < col.vocabulary.size(); ++k)
          if (col.vocabulary[k] == v.text) wanted[k] = 1;
      }
      for (uint32_t i = 0; i < n; ++i) {
        const uint64_t lo = col.offsets[i], hi = col.offsets[i + 1];
        if (lo == hi) continue;  // null
        bool any = false;
        for (uint64_t k = lo; k < hi && !any; ++k) any = wanted[col.values[k]] != 0;
        mask[i] = negated ? !any : any;
      }
      break;
    }
    case Source::kNumerical: {
      const std::vector<double>& x = numerical[c.column].values;
      std::vector<double> numbers;
      for (const Value& v : values) numbers.push_back(number_of(v));
      if (numbers.empty() && is_comparison(c.op)) break;  // a CurrentItem/CurrentUser field that is null
      for (uint32_t i = 0; i < n; ++i) {
        if (std::isnan(x[i])) continue;
        bool hit = false;
        switch (c.op) {
          case Op::kIn:
          case Op::kNotIn:
          case Op::kEq:
            hit = std::find(numbers.begin(), numbers.end(), x[i]) != numbers.end();
            if (negated) hit = !hit;
            break;
          case Op::kLt: hit = x[i] < numbers[0]; break;
          case Op::kLe: hit = x[i] <= numbers[0]; break;
          case Op::kGt: hit = x[i] > numbers[0]; break;
          case Op::kGe: hit = x[i] >= numbers[0]; break;
        }
        mask[i] = hit;
      }
      break;
    }
    case Source::kItemId: {
      if (negated) std::fill(mask.begin(), mask.end(), 1);
      const auto& index = c.on_users ? ast.user_index : ast.item_index;
      for (const Value& v : values) {
        const auto it = index.find(v.text);
        if (it != index.end()) mask[it->second] = negated ? 0 : 1;
      }
      break;
    }
    case Source::kEventType: {
      std::vector<uint8_t> wanted(catalog.event_types.size(), 0);
      for (const Value& v : values)
        for (size_t k = 0; k < catalog.event_types.size(); ++k)
          if (catalog.event_types[k] == v.text) wanted[k] = 1;
      if (c.on_users) {  // a user passes with an event of a wanted type (NOT IN: of another type)
        const UserCatalog& u = catalog.users;
        for (uint32_t user = 0; user < n && !u.event_type_offsets.empty(); ++user)
          for (uint64_t k = u.event_type_offsets[user]; k < u.event_type_offsets[user + 1]; ++k)
            if (u.event_types[k] < wanted.size() && (wanted[u.event_types[k]] != 0) != negated) mask[user] = 1;
        break;
      }
      for (const UserEvent& e : events) {
        if (e.item >= n || e.event_type >= wanted.size()) continue;
        if ((wanted[e.event_type] != 0) != negated) mask[e.item] = 1;
      }
      break;
    }
  }
}

void evaluate_node(const Node& node, const FilterAst& ast, const ItemCatalog& catalog,
                   const FilterQuery* query, std::vector<uint8_t>& out) {
  if (node.kind == Node::kCondition) {
    const Condition& c = ast.conditions[node.condition];
    if (!c.mask.empty()) {
      out = c.mask;
      return;
    }
    const bool dynamic = c.has_params || c.has_refs;
    condition_mask(c, dynamic ? resolve(c, query, catalog) : c.values, catalog, ast,
                   query ? query->events : std::span<const UserEvent>(), out);
    return;
  }
  evaluate_node(node.children[0], ast, catalog, query, out);
  std::vector<uint8_t> other;
  for (size_t k = 1; k < node.children.size(); ++k) {
    evaluate_node(node.children[k], ast, catalog, query, other);
    if (node.kind == Node::kAnd) {
      for (size_t i = 0; i < out.size(); ++i) out[i] &= other[i];
    } else {
      for (size_t i = 0; i < out.size(); ++i) out[i] |= other[i];
    }
  }
}

// Whether one user satisfies an IF clause: precomputed conditions are a lookup.
bool user_satisfies(const Node& node, const FilterAst& ast, const ItemCatalog& catalog, const FilterQuery& query) {
  if (node.kind == Node::kCondition) {
    const Condition& c = ast.conditions[node.condition];
    if (!c.mask.empty()) return c.mask[query.user] != 0;
    std::vector<uint8_t> mask;
    evaluate_node(node, ast, catalog, &query, mask);
    return mask[query.user] != 0;
  }
  for (const Node& child : node.children) {
    const bool holds = user_satisfies(child, ast, catalog, query);
    if (node.kind == Node::kAnd && !holds) return false;
    if (node.kind == Node::kOr && holds) return true;
  }
  return node.kind == Node::kAnd;
}

void prepare(FilterAst& ast, const ItemCatalog& catalog) {
  for (const Condition& c : ast.conditions) {
    if (c.source != Source::kItemId) continue;
    if (c.on_users && ast.user_index.empty())
      for (uint32_t u = 0; u < catalog.users.num_users(); ++u) ast.user_index.emplace(catalog.users.user_ids[u], u);
    if (!c.on_users && ast.item_index.empty())
      for (uint32_t i = 0; i < catalog.num_items(); ++i) ast.item_index.emplace(catalog.item_ids[i], i);
  }
  for (Condition& c : ast.conditions) {
    if (!c.has_params && !c.has_refs && (c.source != Source::kEventType || c.on_users))
      condition_mask(c, c.values, catalog, ast, {}, c.mask);
  }
}

}  // namespace

Filter::Filter(std::string_view expression, const ItemCatalog& catalog)
    : expression_(expression), catalog_(&catalog), ast_(std::make_unique<FilterAst>()) {
  Parser(std::string_view("filter"), expression_, *ast_).parse_filter();
  for (Condition& c : ast_->conditions) {
    bind("filter", expression_, c, catalog);
    uses_interactions_ |= c.source == Source::kEventType;
    for (const Value& v : c.values) depends_on_user_ |= v.ref == Ref::kCurrentUser;
  }
  selects_users_ = ast_->selects_users;
  for (const Expression& e : ast_->expressions) {
    depends_on_user_ |= e.has_when;
    for (const std::string& p : e.parameters)
      if (std::find(parameters_.begin(), parameters_.end(), p) == parameters_.end()) parameters_.push_back(p);
  }
  prepare(*ast_, catalog);
}

Filter::~Filter() = default;
Filter::Filter(Filter&&) noexcept = default;
Filter& Filter::operator=(Filter&&) noexcept = default;

void Filter::evaluate(const FilterValues& values, std::span<const UserEvent> events,
                      std::vector<uint8_t>& allowed) const {
  evaluate(FilterQuery{values, events}, allowed);
}

void Filter::evaluate(const FilterQuery& query, std::vector<uint8_t>& allowed) const {
  const uint32_t n = selects_users_ ? catalog_->users.num_users() : catalog_->num_items();
  std::vector<uint8_t> included, excluded, mask;
  bool has_include = false;
  for (const Expression& e : ast_->expressions) {
    std::string missing;
    for (const std::string& p : e.parameters)
      if (!query.values.count(p)) missing = p;
    if (!missing.empty()) {
      if (e.include)
        throw Error(fmt::format("filterValues has no value for ${}, which the filter's INCLUDE "
                                "expression needs",
                                missing));
      continue;  // the service skips an EXCLUDE expression whose values are not given
    }
    if (e.has_when) {  // counts only for a known user who satisfies it
      if (query.user < 0 || query.user >= catalog_->users.num_users()) continue;
      if (!user_satisfies(e.when, *ast_, *catalog_, query)) continue;
    }
    evaluate_node(e.where, *ast_, *catalog_, &query, mask);
    std::vector<uint8_t>& target = e.include ? included : excluded;
    if (target.empty()) {
      target = mask;
    } else {
      for (uint32_t i = 0; i < n; ++i) target[i] |= mask[i];
    }
    has_include |= e.include;
  }
  allowed.assign(n, 1);
  if (has_include) allowed = included;
  if (!excluded.empty())
    for (uint32_t i = 0; i < n; ++i) allowed[i] &= !excluded[i];
}

void check_filter_syntax(std::string_view expression) {
  FilterAst ast;
  Parser("filter", expression, ast).parse_filter();
}

bool filter_selects_users(std::string_view expression) {
  FilterAst ast;
  Parser("filter", expression, ast).parse_filter();
  return ast.selects_users;
}

std::vector<std::string> include_parameters(std::string_view expression) {
  FilterAst ast;
  Parser("filter", expression, ast).parse_filter();
  std::vector<std::string> names;
  for (const Expression& e : ast.expressions) {
    if (!e.include) continue;
    for (const std::string& p : e.parameters)
      if (std::find(names.begin(), names.end(), p) == names.end()) names.push_back(p);
  }
  return names;
}

std::vector<uint8_t> match_item_attributes(std::string_view condition, const ItemCatalog& catalog) {
  FilterAst ast;
  const Node node = Parser("itemAttributes", condition, ast).parse_condition_only();
  for (Condition& c : ast.conditions) {
    for (const Value& v : c.values) {
      if (v.kind == Tok::kParam)
        fail("itemAttributes", condition, v.position, "placeholders have no values in itemAttributes; write the value");
      if (v.ref != Ref::kNone)
        fail("itemAttributes", condition, v.position, "itemAttributes has no current item or user; write the value");
    }
    c.role = Role::kAttributes;
    bind("itemAttributes", condition, c, catalog);
  }
  prepare(ast, catalog);
  std::vector<uint8_t> mask;
  evaluate_node(node, ast, catalog, nullptr, mask);
  return mask;
}

}  // namespace tastebud::host
