#include "grammar/regex_to_gbnf.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "grammar/grammar.h"

namespace greta::grammar {
namespace {

using Ranges = std::vector<CharRange>;
constexpr uint32_t kMaxCp = 0x10FFFF;

Ranges normalized(Ranges r) {
  std::sort(r.begin(), r.end(), [](const CharRange& a, const CharRange& b) { return a.lo < b.lo; });
  Ranges out;
  for (const CharRange& c : r) {
    if (!out.empty() && c.lo <= out.back().hi + 1) out.back().hi = std::max(out.back().hi, c.hi);
    else out.push_back(c);
  }
  return out;
}

Ranges complement(const Ranges& in) {
  Ranges r = normalized(in), out;
  uint32_t next = 0;
  for (const CharRange& c : r) {
    if (c.lo > next) out.push_back({next, c.lo - 1});
    next = c.hi + 1;
  }
  if (next <= kMaxCp) out.push_back({next, kMaxCp});
  return out;
}

Ranges intersect(const Ranges& a, const Ranges& b) {
  Ranges out;
  for (const CharRange& x : normalized(a))
    for (const CharRange& y : normalized(b)) {
      uint32_t lo = std::max(x.lo, y.lo), hi = std::min(x.hi, y.hi);
      if (lo <= hi) out.push_back({lo, hi});
    }
  return normalized(out);
}

bool contains(const Ranges& r, uint32_t cp) {
  return std::any_of(r.begin(), r.end(), [&](const CharRange& c) { return c.lo <= cp && cp <= c.hi; });
}

// One code point as written inside a GBNF class: escaped unless plain printable ASCII.
std::string class_char(uint32_t cp) {
  char buf[16];
  if (cp >= 0x20 && cp < 0x7F && cp != ']' && cp != '\\' && cp != '-' && cp != '^' && cp != '"')
    return std::string(1, char(cp));
  if (cp < 0x100) std::snprintf(buf, sizeof buf, "\\x%02X", cp);
  else if (cp < 0x10000) std::snprintf(buf, sizeof buf, "\\u%04X", cp);
  else std::snprintf(buf, sizeof buf, "\\U%08X", cp);
  return buf;
}

// The GBNF for one character of `set` as it appears inside a JSON string.
std::string json_char_class(const Ranges& set, std::string_view pattern) {
  // Characters a JSON string holds raw: everything but controls, '"' and '\'.
  const Ranges raw_ok = complement({{0x00, 0x1F}, {'"', '"'}, {'\\', '\\'}, {0x7F, 0x7F}});
  std::vector<std::string> alts;
  Ranges raw = intersect(set, raw_ok);
  if (!raw.empty()) {
    std::string c = "[";
    for (const CharRange& r : raw) c += r.lo == r.hi ? class_char(r.lo) : class_char(r.lo) + "-" + class_char(r.hi);
    alts.push_back(c + "]");
  }
  const std::pair<uint32_t, const char*> escaped[] = {{'"', "\\\""},
                                                      {'\\', "\\\\"},
                                                      {'\n', "\\n"},
                                                      {'\t', "\\t"},
                                                      {'\r', "\\r"}};
  for (const auto& [cp, text] : escaped)
    if (contains(set, cp)) alts.push_back(gbnf_literal(text));
  if (alts.empty())
    throw GrammarError("pattern '" + std::string(pattern) +
                       "': a character class with no character a JSON string can hold");
  if (alts.size() == 1) return alts[0];
  std::string out = "(";
  for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : " ") + alts[i];
  return out + " )";
}

// The GBNF for one character of `set` in plain text.
std::string text_char_class(const Ranges& set, std::string_view pattern) {
  if (set.empty()) throw GrammarError("pattern '" + std::string(pattern) + "': a character class that matches nothing");
  std::string c = "[";
  for (const CharRange& r : normalized(set))
    c += r.lo == r.hi ? class_char(r.lo) : class_char(r.lo) + "-" + class_char(r.hi);
  return c + "]";
}

class RegexParser {
 public:
  // any_char empty: plain text, matched whole; else JSON string contents, unanchored ends
  // filled with any_char.
  RegexParser(std::string_view p, const std::string& any_char) : p_(p), any_char_(any_char) {}

  std::string parse() {
    std::vector<std::string> branches;
    for (;;) {
      bool start = false, end = false;
      if (cur() == '^') {
        start = true;
        ++i_;
      }
      std::string body = parse_concat(true, &end);
      std::string b = body;
      if (!any_char_.empty()) b = (start ? "" : any_char_ + "* ") + body + (end ? "" : " " + any_char_ + "*");
      branches.push_back(b);
      if (eof()) break;
      if (cur() == ')') fail("')' without a matching '('");
      ++i_;  // '|'
    }
    std::string out;
    for (size_t k = 0; k < branches.size(); ++k) out += (k ? " | " : "") + branches[k];
    return branches.size() == 1 ? out : "( " + out + " )";
  }

 private:
  std::string char_class(const Ranges& set) const {
    return any_char_.empty() ? text_char_class(set, p_) : json_char_class(set, p_);
  }

  bool eof() const { return i_ >= p_.size(); }
  char cur() const { return eof() ? '\0' : p_[i_]; }
  [[noreturn]] void fail(const std::string& what) const {
    throw GrammarError("pattern '" + std::string(p_) + "' at offset " + std::to_string(i_) + ": " + what);
  }

  uint32_t next_cp() {
    Utf8Partial st;
    uint32_t cp = 0;
    while (!eof()) {
      Utf8Step s = utf8_feed(st, uint8_t(p_[i_]), cp);
      if (s == Utf8Step::Invalid) break;
      ++i_;
      if (s == Utf8Step::Complete) return cp;
    }
    fail("invalid UTF-8");
  }

  uint32_t hex(size_t digits) {
    uint32_t v = 0;
    for (size_t k = 0; k < digits; ++k, ++i_) {
      char c = cur();
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) fail("expected " + std::to_string(digits) + " hex digits");
      v = v * 16 + uint32_t(d);
    }
    return v;
  }

  // After a backslash: a class escape fills `set` and returns true; otherwise `cp` is the literal.
  bool escape(Ranges& set, uint32_t& cp, bool& ascii_only) {
    if (eof()) fail("a pattern cannot end with a backslash");
    const char e = p_[i_++];
    const Ranges digit = {{'0', '9'}}, word = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}},
                 space = {{'\t', '\r'}, {' ', ' '}};
    // The negated escapes keep to ASCII: Unicode has digits, letters and spaces beyond ASCII
    // that Python's \d \w \s match, so their complements must not reach past ASCII.
    switch (e) {
      case 'd': set = digit; return true;
      case 'w': set = word; return true;
      case 's': set = space; return true;
      case 'D':
        set = intersect(complement(digit), {{0, 0x7F}});
        ascii_only = true;
        return true;
      case 'W':
        set = intersect(complement(word), {{0, 0x7F}});
        ascii_only = true;
        return true;
      case 'S':
        set = intersect(complement(space), {{0, 0x7F}});
        ascii_only = true;
        return true;
      case 'n': cp = '\n'; return false;
      case 'r': cp = '\r'; return false;
      case 't': cp = '\t'; return false;
      case 'f': cp = '\f'; return false;
      case 'v': cp = '\v'; return false;
      case 'x': cp = hex(2); return false;
      case 'u': cp = hex(4); return false;
      case 'b':
      case 'B': fail("word boundaries (\\b, \\B) are not supported");
      case 'A':
      case 'Z':
      case 'z':
      case 'G': fail("anchor \\" + std::string(1, e) + " is not supported");
      default:
        if (e >= '1' && e <= '9') fail("backreferences are not supported");
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))
          fail("escape \\" + std::string(1, e) + " is not supported");
        --i_;
        cp = next_cp();
        return false;
    }
  }

  std::string parse_class() {
    ++i_;  // '['
    bool negated = false, ascii_only = false;
    if (cur() == '^') {
      negated = true;
      ++i_;
    }
    Ranges set;
    bool first = true;
    while (first || cur() != ']') {
      if (eof()) fail("expected ']' to close the character class");
      first = false;
      uint32_t lo;
      if (cur() == '\\') {
        ++i_;
        Ranges sub;
        if (escape(sub, lo, ascii_only)) {
          set.insert(set.end(), sub.begin(), sub.end());
          if (negated) ascii_only = true;
          continue;
        }
      } else {
        lo = next_cp();
      }
      uint32_t hi = lo;
      if (cur() == '-' && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        ++i_;
        if (cur() == '\\') {
          ++i_;
          Ranges sub;
          bool dummy = false;
          if (escape(sub, hi, dummy)) fail("a class escape cannot end a range");
        } else {
          hi = next_cp();
        }
        if (hi < lo) fail("character range with its end before its start");
      }
      set.push_back({lo, hi});
    }
    ++i_;
    Ranges r = negated ? complement(set) : normalized(set);
    if (ascii_only) r = intersect(r, {{0, 0x7F}});
    return char_class(r);
  }

  std::string parse_group() {
    if (++nesting_ > 256) fail("groups nested deeper than 256");
    ++i_;  // '('
    if (cur() == '?') {
      ++i_;
      if (cur() == ':') {
        ++i_;
      } else if (cur() == 'P' || (cur() == '<' && i_ + 1 < p_.size() && p_[i_ + 1] != '=' && p_[i_ + 1] != '!')) {
        if (cur() == 'P') ++i_;
        if (cur() != '<') fail("unsupported group syntax (?P" + std::string(1, cur()) + ")");
        while (!eof() && cur() != '>') ++i_;
        if (eof()) fail("expected '>' to close the group name");
        ++i_;
      } else if (cur() == '=' || cur() == '!' || cur() == '<') {
        fail("lookahead and lookbehind are not supported");
      } else {
        fail("inline flags and (?...) groups other than (?:...) and named groups are not supported");
      }
    }
    std::vector<std::string> alts;
    bool nullable = false;
    for (;;) {
      alts.push_back(parse_concat(false, nullptr));
      nullable = nullable || concat_nullable_;
      if (cur() != '|') break;
      ++i_;
    }
    group_nullable_ = nullable;
    if (cur() != ')') fail("expected ')' to close the group");
    ++i_;
    --nesting_;
    std::string out = "(";
    for (size_t k = 0; k < alts.size(); ++k) out += (k ? " | " : " ") + (alts[k].empty() ? "\"\"" : alts[k]);
    return out + " )";
  }

  uint32_t number() {
    uint32_t v = 0;
    if (!(cur() >= '0' && cur() <= '9')) fail("expected a number in {m,n}");
    while (cur() >= '0' && cur() <= '9') {
      v = v * 10 + uint32_t(cur() - '0');
      if (v > 100000) fail("repetition count too large");
      ++i_;
    }
    return v;
  }

  std::string quantifier() {
    std::string q;
    const char c = cur();
    if (c == '*' || c == '+' || c == '?') {
      q = std::string(1, c);
      ++i_;
    } else if (c == '{') {
      ++i_;
      uint32_t m = cur() == ',' ? 0 : number();
      q = "{";
      q += std::to_string(m);
      if (cur() == ',') {
        ++i_;
        q += ",";
        if (cur() != '}') {
          uint32_t n = number();
          if (n < m) fail("repetition {m,n} with n below m");
          q += std::to_string(n);
        }
      }
      if (cur() != '}') fail("expected '}' to close the repetition");
      ++i_;
      q += "}";
    } else {
      return "";
    }
    if (cur() == '?') ++i_;  // lazy: the same language
    else if (cur() == '+') fail("possessive quantifiers are not supported");
    return q;
  }

  // Sets concat_nullable_: whether the sequence can match the empty string.
  std::string parse_concat(bool top, bool* anchored_end) {
    std::string out;
    bool nullable = true;
    while (!eof() && cur() != '|' && cur() != ')') {
      const char c = cur();
      std::string atom;
      bool atom_nullable = false;
      if (c == '$') {
        ++i_;
        if (top && (eof() || cur() == '|')) {
          *anchored_end = true;
          break;
        }
        fail("anchor $ is supported only at the end of the pattern or of a top-level alternative");
      } else if (c == '^') {
        fail("anchor ^ is supported only at the start of the pattern or of a top-level alternative");
      } else if (c == '(') {
        atom = parse_group();
        atom_nullable = group_nullable_;
      } else if (c == '[') {
        atom = parse_class();
      } else if (c == '.') {
        ++i_;
        atom = char_class(complement({{'\n', '\n'}}));
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        fail("quantifier with nothing to repeat");
      } else {
        uint32_t cp = 0;
        Ranges set;
        bool ascii_only = false;
        if (c == '\\') {
          ++i_;
          if (escape(set, cp, ascii_only)) atom = char_class(set);
          else atom = char_class({{cp, cp}});
        } else {
          cp = next_cp();
          atom = char_class({{cp, cp}});
        }
      }
      const std::string q = quantifier();
      const bool unbounded = q == "*" || q == "+" || q.find(",}") != std::string::npos;
      // The grammar would loop on the empty match (its repetition rule is left-recursive).
      if (atom_nullable && unbounded)
        fail("repeating a group that can match the empty string (like (a*)*) is not supported");
      const bool min_zero = q == "*" || q == "?" || q.rfind("{0", 0) == 0;
      nullable = nullable && (atom_nullable || min_zero);
      if (!q.empty()) atom = "( " + atom + " )" + q;
      out += (out.empty() ? "" : " ") + atom;
    }
    concat_nullable_ = nullable;
    return out;
  }

  std::string_view p_;
  const std::string& any_char_;
  size_t i_ = 0;
  int nesting_ = 0;
  bool concat_nullable_ = false;  // of the last parse_concat
  bool group_nullable_ = false;   // of the last parse_group
};

}  // namespace

std::string gbnf_literal(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += char(c);  // UTF-8 passes through: the GBNF parser reads code points
    }
  }
  return out + "\"";
}

std::string regex_to_gbnf(std::string_view pattern, const std::string& any_char) {
  return RegexParser(pattern, any_char).parse();
}

std::string regex_to_gbnf_grammar(std::string_view pattern) {
  const std::string body = RegexParser(pattern, "").parse();
  return "root ::= " + (body.empty() ? std::string("\"\"") : body) + "\n";
}

}  // namespace greta::grammar
