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

enum class Tok { kWord, kString, kNumber, kParam, kLParen, kRParen, kComma, kDot, kPipe, kEq, kLt, kLe, kGt, kGe, kEnd };

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

struct Value {
  Tok kind = Tok::kString;  // kString, kNumber or kParam
  std::string text;
  double number = 0;
  size_t position = 0;
};

struct Condition {
  std::string dataset, field;  // as written
  size_t position = 0;         // of the dataset name
  size_t op_position = 0;
  Op op = Op::kIn;
  std::vector<Value> values;
  bool has_params = false;
  // Bound to the catalog:
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
  std::vector<std::string> parameters;
};

struct FilterAst {
  std::vector<Expression> expressions;
  std::vector<Condition> conditions;
  std::unordered_map<std::string, uint32_t> item_index;  // built when a condition reads ITEM_ID
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
    expect_end("'|' and another expression");
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
    expect_word("ItemID", "ItemID (only items can be filtered)");
    expect_word("WHERE", "WHERE");
    const size_t first_condition = ast_.conditions.size();
    e.where = parse_or();
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
    for (const Value& v : c.values) c.has_params |= v.kind == Tok::kParam;
    Node node;
    node.kind = Node::kCondition;
    node.condition = ast_.conditions.size();
    ast_.conditions.push_back(std::move(c));
    return node;
  }

  void parse_list(Condition& c) {
    if (!accept(Tok::kLParen)) unexpected("'(' and a list of values");
    c.values.push_back(parse_value());
    while (accept(Tok::kComma)) c.values.push_back(parse_value());
    if (!accept(Tok::kRParen)) unexpected("',' or ')'");
  }

  Value parse_value() {
    const Token& t = peek();
    if (t.kind != Tok::kString && t.kind != Tok::kNumber && t.kind != Tok::kParam)
      unexpected("a value: a \"string\", a number or a $PARAMETER");
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

// Literal values of a condition with its placeholders replaced: the value of a placeholder is
// itself a comma-separated list of literals.
std::vector<Value> resolve(const Condition& c, const FilterValues* values) {
  std::vector<Value> out;
  for (const Value& v : c.values) {
    if (v.kind != Tok::kParam) {
      out.push_back(v);
      continue;
    }
    const auto it = values->find(v.text);
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

void bind(std::string_view what, std::string_view text, Condition& c, const ItemCatalog& catalog,
          bool allow_interactions) {
  if (iequals(c.dataset, "Items")) {
    if (iequals(c.field, "ITEM_ID") || iequals(c.field, "ItemID")) {
      c.source = Source::kItemId;
    } else {
      bool found = false;
      for (size_t k = 0; k < catalog.categorical.size() && !found; ++k) {
        if (iequals(catalog.categorical[k].name, c.field)) { c.source = Source::kCategorical; c.column = k; found = true; }
      }
      for (size_t k = 0; k < catalog.numerical.size() && !found; ++k) {
        if (iequals(catalog.numerical[k].name, c.field)) { c.source = Source::kNumerical; c.column = k; found = true; }
      }
      for (const std::string& name : catalog.textual) {
        if (!found && iequals(name, c.field))
          fail(what, text, c.position, fmt::format("Items.{} is a textual field; textual fields cannot be filtered on", name));
      }
      if (!found) {
        std::vector<std::string> names{"ITEM_ID"};
        for (const auto& col : catalog.categorical) names.push_back(col.name);
        for (const auto& col : catalog.numerical) names.push_back(col.name);
        fail(what, text, c.position,
             fmt::format("the items have no field {}; they have {}", c.field, fmt::join(names, ", ")));
      }
    }
  } else if (iequals(c.dataset, "Interactions")) {
    if (!iequals(c.field, "EVENT_TYPE"))
      fail(what, text, c.position, fmt::format("only Interactions.EVENT_TYPE can be filtered on, not Interactions.{}", c.field));
    if (!allow_interactions)
      fail(what, text, c.position, "Interactions.EVENT_TYPE needs a user; it cannot describe item attributes");
    c.source = Source::kEventType;
  } else {
    fail(what, text, c.position,
         fmt::format("unknown dataset '{}': expected Items or Interactions", c.dataset));
  }
  if (is_comparison(c.op) && c.source != Source::kNumerical)
    fail(what, text, c.op_position,
         fmt::format("{} compares numbers, and {}.{} is not numerical", op_name(c.op), c.dataset, c.field));
  check_values(c, c.values, what, text);
}

// Items that satisfy one condition with these (literal) values.
void condition_mask(const Condition& c, const std::vector<Value>& values, const ItemCatalog& catalog,
                    const std::unordered_map<std::string, uint32_t>& item_index,
                    std::span<const UserEvent> events, std::vector<uint8_t>& mask) {
  const uint32_t n = catalog.num_items();
  mask.assign(n, 0);
  const bool negated = c.op == Op::kNotIn;
  switch (c.source) {
    case Source::kCategorical: {
      const ItemCategoricalColumn& col = catalog.categorical[c.column];
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
      const std::vector<double>& x = catalog.numerical[c.column].values;
      std::vector<double> numbers;
      for (const Value& v : values) numbers.push_back(number_of(v));
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
      for (const Value& v : values) {
        const auto it = item_index.find(v.text);
        if (it != item_index.end()) mask[it->second] = negated ? 0 : 1;
      }
      break;
    }
    case Source::kEventType: {
      std::vector<uint8_t> wanted(catalog.event_types.size(), 0);
      for (const Value& v : values)
        for (size_t k = 0; k < catalog.event_types.size(); ++k)
          if (catalog.event_types[k] == v.text) wanted[k] = 1;
      for (const UserEvent& e : events) {
        if (e.item >= n || e.event_type >= wanted.size()) continue;
        if ((wanted[e.event_type] != 0) != negated) mask[e.item] = 1;
      }
      break;
    }
  }
}

void evaluate_node(const Node& node, const FilterAst& ast, const ItemCatalog& catalog,
                   const FilterValues* values, std::span<const UserEvent> events,
                   std::vector<uint8_t>& out) {
  if (node.kind == Node::kCondition) {
    const Condition& c = ast.conditions[node.condition];
    if (!c.mask.empty()) {
      out = c.mask;
      return;
    }
    condition_mask(c, c.has_params ? resolve(c, values) : c.values, catalog, ast.item_index, events, out);
    return;
  }
  evaluate_node(node.children[0], ast, catalog, values, events, out);
  std::vector<uint8_t> other;
  for (size_t k = 1; k < node.children.size(); ++k) {
    evaluate_node(node.children[k], ast, catalog, values, events, other);
    if (node.kind == Node::kAnd) {
      for (size_t i = 0; i < out.size(); ++i) out[i] &= other[i];
    } else {
      for (size_t i = 0; i < out.size(); ++i) out[i] |= other[i];
    }
  }
}

void prepare(FilterAst& ast, const ItemCatalog& catalog) {
  bool needs_index = false;
  for (const Condition& c : ast.conditions) needs_index |= c.source == Source::kItemId;
  if (needs_index) {
    for (uint32_t i = 0; i < catalog.num_items(); ++i) ast.item_index.emplace(catalog.item_ids[i], i);
  }
  for (Condition& c : ast.conditions) {
    if (!c.has_params && c.source != Source::kEventType)
      condition_mask(c, c.values, catalog, ast.item_index, {}, c.mask);
  }
}

}  // namespace

Filter::Filter(std::string_view expression, const ItemCatalog& catalog)
    : expression_(expression), catalog_(&catalog), ast_(std::make_unique<FilterAst>()) {
  Parser(std::string_view("filter"), expression_, *ast_).parse_filter();
  for (Condition& c : ast_->conditions) {
    bind("filter", expression_, c, catalog, true);
    uses_interactions_ |= c.source == Source::kEventType;
  }
  for (const Expression& e : ast_->expressions)
    for (const std::string& p : e.parameters)
      if (std::find(parameters_.begin(), parameters_.end(), p) == parameters_.end()) parameters_.push_back(p);
  prepare(*ast_, catalog);
}

Filter::~Filter() = default;
Filter::Filter(Filter&&) noexcept = default;
Filter& Filter::operator=(Filter&&) noexcept = default;

void Filter::evaluate(const FilterValues& values, std::span<const UserEvent> events,
                      std::vector<uint8_t>& allowed) const {
  const uint32_t n = catalog_->num_items();
  std::vector<uint8_t> included, excluded, mask;
  bool has_include = false;
  for (const Expression& e : ast_->expressions) {
    std::string missing;
    for (const std::string& p : e.parameters)
      if (!values.count(p)) missing = p;
    if (!missing.empty()) {
      if (e.include)
        throw Error(fmt::format("filterValues has no value for ${}, which the filter's INCLUDE "
                                "expression needs",
                                missing));
      continue;  // the service skips an EXCLUDE expression whose values are not given
    }
    evaluate_node(e.where, *ast_, *catalog_, &values, events, mask);
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

std::vector<uint8_t> match_item_attributes(std::string_view condition, const ItemCatalog& catalog) {
  FilterAst ast;
  const Node node = Parser("itemAttributes", condition, ast).parse_condition_only();
  for (Condition& c : ast.conditions) {
    if (c.has_params) {
      for (const Value& v : c.values)
        if (v.kind == Tok::kParam)
          fail("itemAttributes", condition, v.position, "placeholders have no values in itemAttributes; write the value");
    }
    bind("itemAttributes", condition, c, catalog, false);
  }
  prepare(ast, catalog);
  std::vector<uint8_t> mask;
  evaluate_node(node, ast, catalog, nullptr, {}, mask);
  return mask;
}

}  // namespace tastebud::host
