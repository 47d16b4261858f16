#include "chat/jinja_lexer.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>

#include "chat/jinja_utf8.h"
#include "core/error.h"

namespace greta::jinja {

bool py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

std::string normalize_source(const std::string& source) {
  // jinja2: split on \r\n|\r|\n, drop one final empty line (keep_trailing_newline=False),
  // join with \n.
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    char c = source[i];
    if (c == '\r') {
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      out += '\n';
    } else {
      out += c;
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

namespace {

class Lexer {
 public:
  explicit Lexer(std::string src) : s_(std::move(src)) {}

  std::vector<Token> run() {
    bool line_starting = true;  // did the previous lexer match end with a newline
    while (pos_ < s_.size()) {
      size_t tag = find_tag_start(pos_);
      if (tag == std::string::npos) {
        emit_text(s_.substr(pos_), pos_);
        break;
      }
      std::string text = s_.substr(pos_, tag - pos_);
      char kind = s_[tag + 1];  // '{', '%' or '#'
      char sign = (tag + 2 < s_.size() && (s_[tag + 2] == '-' || s_[tag + 2] == '+')) ? s_[tag + 2] : 0;
      if (sign == '-') {
        text = rstrip_py(text);
      } else if (sign != '+' && kind != '{') {
        size_t lpos = text.rfind('\n');
        lpos = (lpos == std::string::npos) ? 0 : lpos + 1;
        if ((lpos > 0 || line_starting) && lpos < text.size() && all_space(text, lpos)) text.resize(lpos);
      }
      emit_text(text, pos_);
      size_t after = tag + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        pos_ = lex_comment_end(after, tag);
      } else {
        bool var = kind == '{';
        push(var ? Tok::VarBegin : Tok::BlockBegin, var ? "{{" : "{%", tag);
        pos_ = lex_tag(after, var);
      }
      line_starting = pos_ > 0 && s_[pos_ - 1] == '\n';
    }
    push(Tok::Eof, "", s_.size());
    return std::move(out_);
  }

 private:
  std::string s_;
  size_t pos_ = 0;
  std::vector<Token> out_;

  [[noreturn]] void fail(size_t at, const std::string& what) const {
    auto [l, c] = line_col(at);
    throw Error("chat template " + std::to_string(l) + ":" + std::to_string(c) + ": " + what);
  }

  // Positions are asked for mostly in increasing order: resume from the last answer.
  mutable size_t lc_at_ = 0;
  mutable int lc_line_ = 1, lc_col_ = 1;
  std::pair<int, int> line_col(size_t at) const {
    if (at < lc_at_) lc_at_ = 0, lc_line_ = 1, lc_col_ = 1;
    int line = lc_line_, col = lc_col_;
    for (size_t i = lc_at_; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else if ((static_cast<unsigned char>(s_[i]) & 0xc0) != 0x80) {
        ++col;
      }
    }
    lc_at_ = std::min(at, s_.size()), lc_line_ = line, lc_col_ = col;
    return {line, col};
  }

  void push(Tok k, std::string text, size_t at) {
    Token t;
    t.kind = k;
    t.text = std::move(text);
    auto [l, c] = line_col(at);
    t.line = l;
    t.col = c;
    out_.push_back(std::move(t));
  }

  void emit_text(const std::string& text, size_t at) {
    if (!text.empty()) push(Tok::Text, text, at);
  }

  size_t find_tag_start(size_t from) const {
    for (size_t i = s_.find('{', from); i != std::string::npos; i = s_.find('{', i + 1)) {
      if (i + 1 < s_.size() && (s_[i + 1] == '{' || s_[i + 1] == '%' || s_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  static std::string rstrip_py(const std::string& t) {
    size_t end = t.size();
    while (end > 0) {
      size_t start = utf8_prev(t, end);
      if (!py_isspace(utf8_decode_at(t, start))) break;
      end = start;
    }
    return t.substr(0, end);
  }

  static bool all_space(const std::string& t, size_t from) {
    for (size_t i = from; i < t.size();) {
      size_t n;
      uint32_t cp = utf8_decode(t, i, &n);
      if (!py_isspace(cp)) return false;
      i += n;
    }
    return true;
  }

  size_t skip_py_space(size_t i) const {
    while (i < s_.size()) {
      size_t n;
      uint32_t cp = utf8_decode(s_, i, &n);
      if (!py_isspace(cp)) break;
      i += n;
    }
    return i;
  }

  // `-#}` strips following whitespace, `+#}` keeps it, `#}` eats one newline (trim_blocks).
  size_t lex_comment_end(size_t i, size_t begin) {
    for (; i + 1 < s_.size(); ++i) {
      if (s_[i] == '#' && s_[i + 1] == '}') {
        char prev = s_[i - 1];
        size_t end = i + 2;
        if (prev == '-') return skip_py_space(end);
        if (prev == '+') return end;
        return (end < s_.size() && s_[end] == '\n') ? end + 1 : end;
      }
    }
    fail(begin, "missing end of comment tag '#}'");
  }

  // Tokens inside {{ }} or {% %}; returns the position after the closing delimiter.
  size_t lex_tag(size_t i, bool var) {
    const char close = var ? '}' : '%';
    std::vector<char> brackets;
    while (true) {
      while (i < s_.size() &&
             (s_[i] == ' ' || s_[i] == '\t' || s_[i] == '\n' || s_[i] == '\r' || s_[i] == '\f' || s_[i] == '\v'))
        ++i;
      if (i >= s_.size()) fail(i, std::string("unexpected end of template, expected '") + close + "}'");
      // Closing delimiter, recognized only where brackets balance (as jinja2 does).
      if (brackets.empty()) {
        bool minus = s_[i] == '-' && s_.compare(i + 1, 2, std::string(1, close) + "}") == 0;
        bool plus = !var && s_[i] == '+' && s_.compare(i + 1, 2, "%}") == 0;
        if (s_.compare(i, 2, std::string(1, close) + "}") == 0 || minus || plus) {
          push(var ? Tok::VarEnd : Tok::BlockEnd, var ? "}}" : "%}", i);
          size_t end = i + (minus || plus ? 3 : 2);
          if (minus) return skip_py_space(end);
          if (!var && !plus && end < s_.size() && s_[end] == '\n') return end + 1;
          return end;
        }
      }
      char c = s_[i];
      if (std::isdigit(static_cast<unsigned char>(c))) {
        i = lex_number(i);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t j = i;
        while (j < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[j])) || s_[j] == '_')) ++j;
        push(Tok::Name, s_.substr(i, j - i), i);
        i = j;
      } else if (c == '\'' || c == '"') {
        i = lex_string(i);
      } else {
        static const char* const ops[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                          "]",  "(",  ")",  "{",  "}",  ">",  "<", "=", ".", ":", "|", ",", ";"};
        const char* op = nullptr;
        for (const char* o : ops) {
          if (s_.compare(i, std::strlen(o), o) == 0) {
            op = o;
            break;
          }
        }
        if (!op) fail(i, std::string("unexpected character '") + c + "' in tag");
        std::string o(op);
        if (o == "(" || o == "[" || o == "{") {
          brackets.push_back(o == "(" ? ')' : o == "[" ? ']' : '}');
        } else if (o == ")" || o == "]" || o == "}") {
          if (brackets.empty()) fail(i, "unexpected '" + o + "'");
          if (brackets.back() != o[0]) fail(i, "unexpected '" + o + "', expected '" + brackets.back() + "'");
          brackets.pop_back();
        }
        push(Tok::Op, o, i);
        i += o.size();
      }
    }
  }

  size_t lex_number(size_t i) {
    size_t j = i;
    auto digits = [&] {
      while (j < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[j])) || s_[j] == '_')) ++j;
    };
    digits();
    bool is_float = false;
    if (j + 1 < s_.size() && s_[j] == '.' && std::isdigit(static_cast<unsigned char>(s_[j + 1]))) {
      is_float = true;
      ++j;
      digits();
    }
    if (j < s_.size() && (s_[j] == 'e' || s_[j] == 'E')) {
      size_t k = j + 1;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
      if (k < s_.size() && std::isdigit(static_cast<unsigned char>(s_[k]))) {
        is_float = true;
        j = k;
        digits();
      }
    }
    std::string lit;
    for (size_t k = i; k < j; ++k)
      if (s_[k] != '_') lit += s_[k];
    Token t;
    if (is_float) {
      push(Tok::Float, lit, i);
      // strtod, not stod: out-of-range literals are inf or 0.0, as Python's float() makes them.
      out_.back().fval = std::strtod(lit.c_str(), nullptr);
    } else {
      push(Tok::Int, lit, i);
      try {
        out_.back().ival = std::stoll(lit);
      } catch (const std::exception&) {
        fail(i, "integer literal out of range: " + lit);
      }
    }
    return j;
  }

  // Decodes escapes as Python's "unicode-escape" codec does (jinja2 uses it for literals).
  size_t lex_string(size_t i) {
    const char q = s_[i];
    std::string v;
    size_t j = i + 1;
    while (true) {
      if (j >= s_.size()) fail(i, "unterminated string literal");
      char c = s_[j];
      if (c == q) break;
      if (c != '\\') {
        v += c;
        ++j;
        continue;
      }
      if (j + 1 >= s_.size()) fail(i, "unterminated string literal");
      char e = s_[j + 1];
      j += 2;
      auto hex = [&](int n) -> uint32_t {
        uint32_t cp = 0;
        for (int k = 0; k < n; ++k, ++j) {
          if (j >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[j])))
            fail(j, "truncated \\x/\\u escape in string literal");
          char h = s_[j];
          cp = cp * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        return cp;
      };
      switch (e) {
        case '\n': break;  // line continuation
        case '\\': v += '\\'; break;
        case '\'': v += '\''; break;
        case '"': v += '"'; break;
        case 'a': v += '\a'; break;
        case 'b': v += '\b'; break;
        case 'f': v += '\f'; break;
        case 'n': v += '\n'; break;
        case 'r': v += '\r'; break;
        case 't': v += '\t'; break;
        case 'v': v += '\v'; break;
        case 'x': utf8_append(v, hex(2)); break;
        case 'u': utf8_append(v, hex(4)); break;
        case 'U': utf8_append(v, hex(8)); break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && j < s_.size() && s_[j] >= '0' && s_[j] <= '7'; ++k, ++j)
              cp = cp * 8 + (s_[j] - '0');
            utf8_append(v, cp);
          } else {
            v += '\\';  // unknown escapes keep their backslash
            v += e;
          }
      }
    }
    push(Tok::String, v, i);
    return j + 1;
  }
};

}  // namespace

std::vector<Token> tokenize(const std::string& source) { return Lexer(normalize_source(source)).run(); }

}  // namespace greta::jinja
