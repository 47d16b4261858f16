#include "grammar/gbnf_parser.h"

#include <algorithm>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace greta::grammar {
namespace {

using Sequence = std::vector<SymbolSpec>;
constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

class Parser {
 public:
  Parser(std::string_view src, const GbnfOptions& options) : src_(src), options_(options) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<RuleSpec> parse() {
    skip_space(true);
    while (!eof()) {
      parse_rule();
      skip_space(true);
    }
    return std::move(rules_);
  }

 private:
  bool eof() const { return pos_ >= src_.size(); }
  char cur() const { return eof() ? '\0' : src_[pos_]; }

  // Line and column of a byte offset; rules record theirs as they are read, so this is a
  // binary search over the line starts rather than a scan from the top.
  std::string where(size_t at) const {
    const size_t line = size_t(std::upper_bound(line_starts_.begin(), line_starts_.end(), at) - line_starts_.begin());
    return "line " + std::to_string(line) + ", column " + std::to_string(at - line_starts_[line - 1] + 1);
  }

  std::string found() const {
    if (eof()) return "end of input";
    char c = cur();
    if (c == '\n' || c == '\r') return "end of line";
    if (uint8_t(c) < 0x20) return "control character " + std::to_string(int(c));
    return "'" + std::string(1, c) + "'";
  }

  [[noreturn]] void fail(const std::string& expected) const { fail_at(pos_, expected + ", found " + found()); }
  [[noreturn]] void fail_at(size_t at, const std::string& msg) const {
    throw GrammarError("gbnf: " + where(at) + ": " + msg);
  }

  // Spaces, tabs and comments; line breaks too where a rule may continue on the next line.
  void skip_space(bool newline_ok) {
    while (!eof()) {
      char c = cur();
      if (c == ' ' || c == '\t') {
        ++pos_;
      } else if (c == '#') {
        while (!eof() && cur() != '\n' && cur() != '\r') ++pos_;
      } else if (newline_ok && (c == '\n' || c == '\r')) {
        ++pos_;
      } else {
        break;
      }
    }
  }

  std::string parse_name() {
    size_t start = pos_;
    while (!eof() && is_name_char(cur())) ++pos_;
    if (pos_ == start) fail("expected a rule name (letters, digits, '-', '_')");
    return std::string(src_.substr(start, pos_ - start));
  }

  uint32_t rule_id(const std::string& name, size_t used_at) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    uint32_t id = uint32_t(rules_.size());
    rules_.push_back(RuleSpec{name, "first used at " + where(used_at), false, {}});
    ids_[name] = id;
    return id;
  }

  uint32_t generated_rule(uint32_t parent, size_t at, std::vector<Sequence> alternatives) {
    uint32_t id = uint32_t(rules_.size());
    std::string name = rules_[parent].name + "/" + std::to_string(++generated_[parent]);
    rules_.push_back(RuleSpec{name, "generated for " + where(at), true, std::move(alternatives)});
    return id;
  }

  void parse_rule() {
    const size_t start = pos_;
    const std::string name = parse_name();
    skip_space(false);
    if (src_.substr(pos_, 3) != "::=") fail("expected '::=' after the rule name '" + name + "'");
    pos_ += 3;
    skip_space(true);
    const uint32_t id = rule_id(name, start);
    if (rules_[id].defined) fail_at(start, "rule '" + name + "' is defined twice (" + rules_[id].origin + " and here)");
    rules_[id].defined = true;
    rules_[id].origin = "defined at " + where(start);
    rules_[id].alternatives = parse_alternates(id, false);
    if (!eof() && cur() != '\n' && cur() != '\r')
      fail("expected a symbol (\"literal\", [class], rule name, ( group ), '.'), '|' or the end of the line");
  }

  std::vector<Sequence> parse_alternates(uint32_t rule, bool nested) {
    std::vector<Sequence> alts;
    alts.push_back(parse_sequence(rule, nested));
    while (cur() == '|') {
      ++pos_;
      skip_space(true);
      alts.push_back(parse_sequence(rule, nested));
    }
    return alts;
  }

  uint32_t parse_hex(size_t digits) {
    uint32_t v = 0;
    for (size_t i = 0; i < digits; ++i) {
      char c = cur();
      uint32_t d;
      if (c >= '0' && c <= '9') d = uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') d = uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = uint32_t(c - 'A' + 10);
      else fail("expected " + std::to_string(digits) + " hex digits in the escape");
      v = v * 16 + d;
      ++pos_;
    }
    if (v > 0x10FFFF) fail_at(pos_ - digits, "escape value above U+10FFFF");
    return v;
  }

  // One character of a literal or class: an escape or one UTF-8 encoded code point.
  uint32_t parse_char() {
    if (eof()) fail("expected a character");
    if (cur() == '\\') {
      ++pos_;
      char e = cur();
      ++pos_;
      switch (e) {
        case 'x': return parse_hex(2);
        case 'u': return parse_hex(4);
        case 'U': return parse_hex(8);
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-':
        case '^': return uint32_t(e);
        default: --pos_; fail("expected an escape (\\n \\r \\t \\\\ \\\" \\[ \\] \\- \\^ \\xHH \\uHHHH \\UHHHHHHHH)");
      }
    }
    Utf8Partial p;
    uint32_t cp = 0;
    const size_t start = pos_;
    while (!eof()) {
      Utf8Step step = utf8_feed(p, uint8_t(cur()), cp);
      if (step == Utf8Step::Invalid) break;
      ++pos_;
      if (step == Utf8Step::Complete) return cp;
    }
    fail_at(start, "invalid UTF-8 in the grammar text");
  }

  SymbolSpec parse_class() {
    SymbolSpec s;
    ++pos_;  // '['
    if (cur() == '^') {
      s.negated = true;
      ++pos_;
    }
    while (cur() != ']') {
      if (eof()) fail("expected ']' to close the character class");
      const size_t at = pos_;
      uint32_t lo = parse_char(), hi = lo;
      if (cur() == '-' && pos_ + 1 < src_.size() && src_[pos_ + 1] != ']') {
        ++pos_;
        hi = parse_char();
        if (hi < lo) fail_at(at, "character range with its end before its start");
      }
      s.ranges.push_back({lo, hi});
    }
    ++pos_;
    return s;
  }

  void count_symbols(size_t n) {
    symbols_ += n;
    if (symbols_ > options_.max_symbols)
      fail("grammar expands to more than " + std::to_string(options_.max_symbols) + " symbols");
  }

  uint32_t parse_count() {
    uint64_t v = 0;
    if (!(cur() >= '0' && cur() <= '9')) fail("expected a number in the repetition {m,n}");
    while (cur() >= '0' && cur() <= '9') {
      v = v * 10 + uint64_t(cur() - '0');
      if (v > options_.max_repetition)
        fail("repetition count above the limit " + std::to_string(options_.max_repetition));
      ++pos_;
    }
    return uint32_t(v);
  }

  // Replaces the symbol out[last..] with its repetition between min and max times.
  void repeat(uint32_t rule, Sequence& out, size_t last, uint32_t min, uint32_t max, size_t at) {
    const Sequence sym(out.begin() + ptrdiff_t(last), out.end());
    out.resize(last);
    count_symbols(sym.size() * (size_t(min) + (max == kUnbounded ? 1 : max - min)));
    for (uint32_t i = 0; i < min; ++i) out.insert(out.end(), sym.begin(), sym.end());
    auto ref = [](uint32_t id) {
      SymbolSpec s;
      s.is_rule = true;
      s.rule = id;
      return s;
    };
    if (max == kUnbounded) {
      // r ::= sym r | "" (the reference to r is the rule's own id, known once it is added)
      const uint32_t id = generated_rule(rule, at, {});
      Sequence again = sym;
      again.push_back(ref(id));
      rules_[id].alternatives = {again, {}};
      out.push_back(ref(id));
    } else if (max > min) {
      // r1 ::= sym | "";  rk ::= sym r(k-1) | ""
      uint32_t inner = generated_rule(rule, at, {sym, {}});
      for (uint32_t k = 1; k < max - min; ++k) {
        Sequence s = sym;
        s.push_back(ref(inner));
        inner = generated_rule(rule, at, {s, {}});
      }
      out.push_back(ref(inner));
    }
  }

  Sequence parse_sequence(uint32_t rule, bool nested) {
    Sequence out;
    size_t last = std::string::npos;  // where the last symbol starts in `out`
    for (;;) {
      const size_t at = pos_;
      const char c = cur();
      if (c == '"') {
        ++pos_;
        last = out.size();
        while (cur() != '"') {
          if (eof() || cur() == '\n') fail("expected '\"' to close the string literal");
          uint32_t cp = parse_char();
          SymbolSpec s;
          s.ranges.push_back({cp, cp});
          out.push_back(std::move(s));
        }
        ++pos_;
        count_symbols(out.size() - last);
        if (out.size() == last) last = std::string::npos;  // "" is no symbol to repeat
      } else if (c == '[') {
        last = out.size();
        out.push_back(parse_class());
        count_symbols(1);
      } else if (c == '.') {
        ++pos_;
        last = out.size();
        SymbolSpec any;
        any.negated = true;  // outside no range: every code point
        out.push_back(any);
        count_symbols(1);
      } else if (is_name_char(c)) {
        std::string name = parse_name();
        last = out.size();
        SymbolSpec s;
        s.is_rule = true;
        s.rule = rule_id(name, at);
        out.push_back(s);
        count_symbols(1);
      } else if (c == '(') {
        if (++nesting_ > options_.max_nesting)
          fail("groups nested deeper than " + std::to_string(options_.max_nesting));
        ++pos_;
        skip_space(true);
        // The group's rule is numbered before its contents, so names follow the text.
        const uint32_t id = generated_rule(rule, at, {});
        rules_[id].alternatives = parse_alternates(rule, true);
        if (cur() != ')') fail("expected ')' to close the group opened at " + where(at));
        ++pos_;
        --nesting_;
        last = out.size();
        SymbolSpec s;
        s.is_rule = true;
        s.rule = id;
        out.push_back(s);
        count_symbols(1);
      } else if (c == '<' || c == '!') {
        fail_at(at, "token references (<token>, <[id]>, !<...>) are not supported; write the text as a \"literal\"");
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (last == std::string::npos) fail("expected a symbol before the repetition");
        uint32_t min = 0, max = kUnbounded;
        ++pos_;
        if (c == '+') min = 1;
        if (c == '?') max = 1;
        if (c == '{') {
          skip_space(false);
          min = max = parse_count();
          skip_space(false);
          if (cur() == ',') {
            ++pos_;
            skip_space(false);
            max = cur() == '}' ? kUnbounded : parse_count();
            skip_space(false);
          }
          if (cur() != '}') fail("expected '}' to close the repetition {m,n}");
          ++pos_;
          if (max < min) fail_at(at, "repetition {m,n} with n below m");
        }
        repeat(rule, out, last, min, max, at);
        last = std::string::npos;  // x** is not meaningful: refuse a second repetition
      } else {
        break;
      }
      skip_space(nested);
    }
    return out;
  }

  std::string_view src_;
  GbnfOptions options_;
  size_t pos_ = 0;
  size_t symbols_ = 0;
  std::vector<size_t> line_starts_;
  uint32_t nesting_ = 0;
  std::vector<RuleSpec> rules_;
  std::map<std::string, uint32_t> ids_;
  std::map<uint32_t, uint32_t> generated_;  // rule -> generated rules so far
};

}  // namespace

std::shared_ptr<const Grammar> parse_gbnf(std::string_view text, const GbnfOptions& options) {
  return Grammar::compile(Parser(text, options).parse());
}

}  // namespace greta::grammar
